//! Wire types of Quorate's surfaces (OpenAI-compatible chat completions, Anthropic's Messages API,
//! OpenAI's Responses API), and the one internal request, `ModelRequest`, that each is read into.
//!
//! Every object keeps the fields Quorate does not interpret in an `extra` map, so requests and
//! responses pass through the gateway untouched (tools, `response_format`, provider extras, ...).

pub mod anthropic;
pub mod chat;
pub mod error;
pub mod models;
pub mod request;
pub mod responses;
pub mod text;
pub mod time;

pub use chat::*;
pub use error::{ErrorBody, ErrorDetail, OpenAiErrorBody};
pub use models::{Architecture, ModelInfo, ModelList, Pricing, TopProvider};
pub use request::{CapName, ModelRequest};
