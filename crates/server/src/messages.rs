//! `POST /v1/messages`: Anthropic's Messages API over the same pipeline as chat completions. The
//! body is read into the internal `ModelRequest` (`quorate_api::anthropic`), then routed, run and
//! recorded as a chat completion is: any configured model, fusion (`quorate/fusion`, the plugin)
//! and the research tools work here. Only the answer's shape differs: a message, Anthropic's
//! stream events, Anthropic's error body.

use std::pin::pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{Stream, StreamExt};
use quorate_api::anthropic::{
    self, Block, BlockDelta, CountTokensRequest, ErrorDetail, ErrorResponse, MessageDelta,
    MessageResponse, MessagesRequest, Stop, StreamEvent, TokenCount,
};
use quorate_api::{ModelRequest, ToolCallDelta};
use quorate_providers::{Error, RequestCtx};
use serde_json::json;

use crate::answer::{self, Chunks, Dialect, Refused, Step, Tally};
use crate::chat::accept;
use crate::AppState;

const SURFACE: &str = "messages";

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(mut ctx): Extension<RequestCtx>,
    request: Request,
) -> Response {
    let accepted = accept(&state, &mut ctx, request, SURFACE, parse).await;
    let accepted = match accepted {
        Ok((accepted, ())) => accepted,
        Err(e) => return refuse(&Refused::Plain(e)),
    };
    let dialect = Dialect {
        events,
        body: |completion| axum::Json(anthropic::message(completion)).into_response(),
        refuse,
        progress: false,
    };
    answer::respond(&state, ctx, accepted, dialect).await
}

/// `POST /v1/messages/count_tokens`: the prompt's size as the model reads it, counted by the
/// model's own tokenizer (local models) or by its upstream (Anthropic models). The body is a
/// Messages request without `max_tokens`. A fusion's prompts depend on its members' answers, so it
/// has no single count: a 400 says to count a member.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    request: Request,
) -> Response {
    match count(&state, &ctx, request).await {
        Ok(tokens) => axum::Json(TokenCount {
            input_tokens: tokens,
        })
        .into_response(),
        Err(e) => {
            tracing::info!(status = e.status(), error = %e, "count_tokens refused");
            refuse(&Refused::Plain(e))
        }
    }
}

async fn count(state: &AppState, ctx: &RequestCtx, request: Request) -> Result<u64, Error> {
    let bytes = crate::chat::read_body(state, request.into_body()).await?;
    let request: CountTokensRequest = answer::decode(&bytes)?;
    let request = checked(request.into_request())?;
    if crate::fusion::route(&state.fusion, ctx, &request)?.is_some() {
        return Err(Error::BadRequest(format!(
            "model: {} runs the gateway's fusion or tools, whose prompts depend on other models' \
             answers; count the tokens of one of its models instead",
            request.model
        )));
    }
    // What a generation would refuse (images for a text-only model), a count refuses too.
    crate::chat::servable(state.router.config(), &request, false)?;
    state.router.count_tokens(ctx, request).await
}

/// Strict parsing whose errors name the field, then the checks every surface shares.
fn parse(bytes: &[u8]) -> Result<(ModelRequest, ()), Error> {
    let request: MessagesRequest = answer::decode(bytes)?;
    Ok((checked(request.into_request())?, ()))
}

fn checked(request: Result<ModelRequest, String>) -> Result<ModelRequest, Error> {
    let request = request.map_err(Error::BadRequest)?;
    request.validate().map_err(Error::BadRequest)?;
    Ok(request)
}

fn refuse(refused: &Refused) -> Response {
    let mut response = anthropic_error(refused.status(), &refused.message(), refused.retry_after());
    if refused.retry_cannot_help() {
        crate::error::no_retry(&mut response);
    }
    response
}

/// Anthropic's error body with the status (and `Retry-After` when there is one).
pub fn anthropic_error(
    status: u16,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> Response {
    crate::error::respond_with(status, ErrorResponse::new(status, message), retry_after)
}

/// Anthropic's event sequence: `message_start`, `ping`, each content block's start, deltas and
/// stop, `message_delta` with the stop reason and usage (and the `fusion` object), `message_stop`;
/// `error` when the run fails midway.
fn events(chunks: Chunks, id: String, model: String) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        yield event(StreamEvent::MessageStart { message: MessageResponse::new(id, model) });
        yield event(StreamEvent::Ping);
        let mut blocks = Blocks::default();
        let mut steps = pin!(answer::steps(chunks));
        while let Some(step) = steps.next().await {
            let (frames, tally) = match step {
                Step::Text(text) => (blocks.text(&text), None),
                Step::Call(call) => (blocks.tool(call), None),
                Step::Failed(failure) => {
                    let (status, message) = (failure.error.code, failure.error.message);
                    for frame in blocks.close() {
                        yield frame;
                    }
                    yield event(StreamEvent::Error { error: ErrorDetail::new(status, message) });
                    return;
                }
                Step::Done(tally) => (blocks.close(), Some(tally)),
            };
            for frame in frames {
                yield frame;
            }
            if let Some(tally) = tally {
                yield event(message_delta(tally));
            }
        }
        yield event(StreamEvent::MessageStop);
    }
}

/// The stop reason, the usage and the run's `fusion` (or `research`) object.
fn message_delta(tally: Tally) -> StreamEvent {
    StreamEvent::MessageDelta(MessageDelta {
        delta: Stop {
            stop_reason: Some(anthropic::stop_reason(tally.finish.as_deref())),
            stop_sequence: None,
        },
        usage: tally
            .usage
            .as_ref()
            .map(anthropic::usage)
            .unwrap_or_default(),
        extra: tally.extensions,
    })
}

fn event(event: StreamEvent) -> Bytes {
    Bytes::from(event.sse())
}

/// The content blocks of a streamed message: text and tool calls, each opened when its first
/// piece arrives and stopped when the next begins.
#[derive(Default)]
struct Blocks {
    /// The index of the open block, or of the next one.
    index: usize,
    open: Option<Open>,
}

#[derive(PartialEq)]
enum Open {
    Text,
    /// A tool call, by its index in the chat deltas.
    Tool(u32),
}

impl Blocks {
    fn text(&mut self, text: &str) -> Vec<Bytes> {
        let mut frames = Vec::new();
        if self.open != Some(Open::Text) {
            frames.extend(self.close());
            frames.push(self.start(Block::text("")));
            self.open = Some(Open::Text);
        }
        frames.push(self.delta(BlockDelta::TextDelta {
            text: text.to_string(),
        }));
        frames
    }

    fn tool(&mut self, call: ToolCallDelta) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let function = call.function.unwrap_or_default();
        if self.open != Some(Open::Tool(call.index)) {
            frames.extend(self.close());
            frames.push(self.start(Block::ToolUse {
                id: call.id.unwrap_or_default(),
                name: function.name.unwrap_or_default(),
                input: json!({}),
            }));
            self.open = Some(Open::Tool(call.index));
        }
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            frames.push(self.delta(BlockDelta::InputJsonDelta {
                partial_json: arguments,
            }));
        }
        frames
    }

    fn start(&self, block: Block) -> Bytes {
        event(StreamEvent::ContentBlockStart {
            index: self.index,
            content_block: block,
        })
    }

    fn delta(&self, delta: BlockDelta) -> Bytes {
        event(StreamEvent::ContentBlockDelta {
            index: self.index,
            delta,
        })
    }

    fn close(&mut self) -> Vec<Bytes> {
        if self.open.take().is_none() {
            return Vec::new();
        }
        let frame = event(StreamEvent::ContentBlockStop { index: self.index });
        self.index += 1;
        vec![frame]
    }
}
