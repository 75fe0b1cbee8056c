//! Research tools for panel members and server-side tool calls: web fetch that cannot be turned
//! against the gateway's own network, domain filters that keep benchmark answers out of reach,
//! web search backends, and the toolbox that offers them to models as functions.

pub mod fetch;
pub mod filter;
mod html;
mod net;
pub mod search;
pub mod toolbox;

pub use fetch::{FetchConfig, FetchError, Fetcher, Page};
pub use filter::DomainFilter;
pub use toolbox::{
    clip, Document, Outcome, Session, Source, ToolName, ToolParameters, ToolSpec, Toolbox,
};
