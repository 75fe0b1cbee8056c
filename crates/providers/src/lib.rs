//! Providers: one `Provider` trait and one module per backend, plus the `Router` that maps model
//! ids to providers and owns retries, fallbacks, timeouts and cost, once for every backend.

pub mod anthropic;
mod cost;
mod ctx;
mod error;
mod http;
pub mod openai;
mod router;
mod scrub;
pub mod sse;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use quorate_api::{ChatChunk, ChatCompletion, ModelRequest};

pub use cost::price;
pub use ctx::{in_span, RequestCtx, WaitGuard};
pub use error::{Attempt, Error};
pub use router::{RoutedStream, Router};

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// A backend that serves chat completions. `req.model` is already the upstream model name and
/// `req.fallbacks` is empty; the router has done the routing.
#[async_trait]
pub trait Provider: Send + Sync {
    async fn complete(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChatCompletion, Error>;

    /// Resolves once the upstream has accepted the request (its status is known); the stream then
    /// yields chunks, ending with an error if the upstream breaks off.
    async fn stream(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChunkStream, Error>;

    /// The prompt's size in tokens as the model reads it (Anthropic's `count_tokens`). Only
    /// providers that know the model's tokenizer can answer; OpenAI-style APIs have no count.
    async fn count_tokens(&self, _ctx: &RequestCtx, req: ModelRequest) -> Result<u64, Error> {
        Err(Error::BadRequest(format!(
            "model: {} cannot count tokens (its API has no count); local and Anthropic models can",
            req.model
        )))
    }
}
