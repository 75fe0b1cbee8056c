//! Research tools for panel members and server-side tool calls: web fetch that cannot be turned
//! against the gateway's own network, domain filters that keep benchmark answers out of reach,
//! and web search backends.

pub mod fetch;
pub mod filter;
mod html;
mod net;
pub mod search;

pub use fetch::{FetchConfig, FetchError, Fetcher, Page};
pub use filter::DomainFilter;
