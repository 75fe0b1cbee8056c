//! `POST /v1/messages`: Anthropic's Messages API over the same pipeline as chat completions. The
//! body is read into the internal `ChatRequest` (`quorate_api::anthropic`), then routed, run and
//! recorded as a chat completion is: any configured model, fusion (`quorate/fusion`, the plugin)
//! and the research tools work here. Only the answer's shape differs: a message, Anthropic's
//! stream events, Anthropic's error body.

use std::pin::pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{Stream, StreamExt};
use quorate_api::anthropic::{self, MessageUsage, MessagesRequest};
use quorate_api::{ChatRequest, ToolCallDelta};
use quorate_providers::{Error, RequestCtx};
use serde_json::{json, Map, Value};

use crate::answer::{self, Chunks, Refused};
use crate::chat::{accept, sse_response, with_keepalive};
use crate::AppState;

const SURFACE: &str = "messages";

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(mut ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let accepted = accept(&state, &mut ctx, &headers, request, SURFACE, parse).await;
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(e) => return refuse(&Refused::Plain(e)),
    };
    let (id, model) = (ctx.id.clone(), accepted.request.model.clone());
    if accepted.request.stream == Some(true) {
        return match answer::chunks(&state, ctx, accepted).await {
            Ok(chunks) => sse_response(with_keepalive(events(chunks, id, model), state.keepalive)),
            Err(refused) => refuse(&refused),
        };
    }
    match answer::complete(&state, &ctx, accepted).await {
        Ok(completion) => axum::Json(anthropic::message(&completion)).into_response(),
        Err(refused) => refuse(&refused),
    }
}

/// Strict parsing whose errors name the field, then the checks every surface shares.
fn parse(bytes: &[u8]) -> Result<ChatRequest, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let request: MessagesRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || path == "." {
                Error::BadRequest(format!("invalid request: {inner}"))
            } else {
                Error::BadRequest(format!("{path}: {inner}"))
            }
        })?;
    let request = request.into_chat().map_err(Error::BadRequest)?;
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
    crate::error::respond_with(status, anthropic::error_body(status, message), retry_after)
}

/// Anthropic's event sequence: `message_start`, `ping`, each content block's start, deltas and
/// stop, `message_delta` with the stop reason and usage (and the `fusion` object), `message_stop`;
/// `error` when the run fails midway.
fn events(chunks: Chunks, id: String, model: String) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        yield event("message_start", &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}));
        yield event("ping", &json!({"type": "ping"}));
        let mut blocks = Blocks::default();
        let mut finish = None;
        let mut usage = None;
        let mut extensions = Map::new();
        let mut chunks = pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err((status, message)) => {
                    for frame in blocks.close() {
                        yield frame;
                    }
                    yield event("error", &anthropic::error_body(status, &message));
                    return;
                }
            };
            for key in ["fusion", "research"] {
                if let Some(value) = chunk.extra.get(key) {
                    extensions.insert(key.into(), value.clone());
                }
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    for frame in blocks.text(&text) {
                        yield frame;
                    }
                }
                for call in choice.delta.tool_calls.into_iter().flatten() {
                    for frame in blocks.tool(call) {
                        yield frame;
                    }
                }
                finish = choice.finish_reason.or(finish);
            }
        }
        for frame in blocks.close() {
            yield frame;
        }
        let usage = usage.as_ref().map(MessageUsage::from).unwrap_or_default();
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": anthropic::stop_reason(finish.as_deref()), "stop_sequence": null},
            "usage": usage});
        if let Some(object) = delta.as_object_mut() {
            object.extend(extensions);
        }
        yield event("message_delta", &delta);
        yield event("message_stop", &json!({"type": "message_stop"}));
    }
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
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
            frames.push(self.start(json!({"type": "text", "text": ""})));
            self.open = Some(Open::Text);
        }
        frames.push(self.delta(json!({"type": "text_delta", "text": text})));
        frames
    }

    fn tool(&mut self, call: ToolCallDelta) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let function = call.function.unwrap_or_default();
        if self.open != Some(Open::Tool(call.index)) {
            frames.extend(self.close());
            frames.push(self.start(
                json!({"type": "tool_use", "id": call.id.unwrap_or_default(),
                "name": function.name.unwrap_or_default(), "input": {}}),
            ));
            self.open = Some(Open::Tool(call.index));
        }
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            frames.push(self.delta(json!({"type": "input_json_delta", "partial_json": arguments})));
        }
        frames
    }

    fn start(&self, block: Value) -> Bytes {
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        )
    }

    fn delta(&self, delta: Value) -> Bytes {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        )
    }

    fn close(&mut self) -> Vec<Bytes> {
        if self.open.take().is_none() {
            return Vec::new();
        }
        let frame = event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.index}),
        );
        self.index += 1;
        vec![frame]
    }
}
