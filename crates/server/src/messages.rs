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
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use quorate_api::anthropic::{self, MessageUsage, MessagesRequest};
use quorate_api::{ChatChunk, ChatRequest, ToolCallDelta};
use quorate_fusion::{final_chunk, FusionError, FusionStream, Item, RunOutcome};
use quorate_providers::{Error, RequestCtx, RoutedStream};
use serde_json::{json, Map, Value};

use crate::chat::{accept, sse_response, unix_millis, with_keepalive, Accepted};
use crate::fusion::{answer_chunk, next_output, Route};
use crate::record::Recorder;
use crate::AppState;

const SURFACE: &str = "messages";

/// A failure in the middle of a stream: its status and message.
type Failure = (u16, String);

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(mut ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let accepted = accept(&state, &mut ctx, &headers, request, SURFACE, parse).await;
    let Accepted {
        request,
        route,
        mut recorder,
    } = match accepted {
        Ok(accepted) => accepted,
        Err(e) => return refuse(&e),
    };
    if request.stream == Some(true) {
        return stream(&state, ctx, route, request, recorder).await;
    }
    let model = request.model.clone();
    let completion = match route {
        Some(route) => {
            let (items, _) = crate::fusion::run(&state, &ctx, route, request);
            let outcome = RunOutcome::read_with(items, |item| recorder.item(item)).await;
            match outcome.and_then(|o| o.into_completion(model)) {
                Ok(completion) => completion,
                Err(e) => {
                    recorder.fusion_failed(&e, false);
                    return refuse_fusion(&e);
                }
            }
        }
        None => match state.router.complete(&ctx, request).await {
            Ok(completion) => completion,
            Err(e) => {
                recorder.failed(&e, false);
                return refuse(&e);
            }
        },
    };
    let mut completion = completion;
    completion.id = ctx.id.clone();
    completion.created = unix_millis() / 1000;
    let response = axum::Json(anthropic::message(&completion)).into_response();
    recorder.completed_later(completion);
    response
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

fn refuse(error: &Error) -> Response {
    anthropic_error(error.status(), &error.to_string(), error.retry_after())
}

/// A failed run: each retry would be the whole panel again (unless an upstream asked for one).
fn refuse_fusion(error: &FusionError) -> Response {
    let retry_after = error.error.retry_after();
    let mut response = anthropic_error(error.status(), &error.to_string(), retry_after);
    if retry_after.is_none() {
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

/// The stream opens like a chat completion stream: an early failure keeps its HTTP status.
async fn stream(
    state: &AppState,
    ctx: RequestCtx,
    route: Option<Route>,
    request: ChatRequest,
    mut recorder: Recorder,
) -> Response {
    let model = request.model.clone();
    let id = ctx.id.clone();
    let chunks: BoxStream<'static, Result<ChatChunk, Failure>> = match route {
        Some(route) => {
            let (mut items, _) = crate::fusion::run(state, &ctx, route, request);
            let first = next_output(&mut items, &mut recorder);
            let first = match tokio::time::timeout(state.keepalive, first).await {
                Ok(Some(Err(e))) => {
                    recorder.fusion_failed(&e, false);
                    return refuse_fusion(&e);
                }
                Ok(item) => item,
                Err(_) => None,
            };
            fusion_chunks(first, items, model.clone(), recorder).boxed()
        }
        None => match state.router.stream(&ctx, request).await {
            Ok(opened) => plain_chunks(opened, recorder).boxed(),
            Err(e) => {
                recorder.failed(&e, false);
                return refuse(&e);
            }
        },
    };
    sse_response(with_keepalive(events(chunks, id, model), state.keepalive))
}

fn plain_chunks(
    mut opened: RoutedStream,
    recorder: Recorder,
) -> impl Stream<Item = Result<ChatChunk, Failure>> + Send + 'static {
    async_stream::stream! {
        // Dropped unfinished, it records a client that went away.
        let mut recorder = Some(recorder);
        while let Some(item) = opened.next().await {
            match item {
                Ok(chunk) => {
                    if let Some(recorder) = recorder.as_mut() {
                        recorder.chunk(&chunk);
                    }
                    yield Ok(chunk);
                }
                Err(e) => {
                    if let Some(recorder) = recorder.take() {
                        recorder.failed(&e, true);
                    }
                    yield Err((e.status(), e.to_string()));
                    return;
                }
            }
        }
        if let Some(recorder) = recorder.take() {
            recorder.streamed(None);
        }
    }
}

/// A fusion run's answer as chunks: the answer's own, then one with the usage and the `fusion`
/// (or `research`) object.
fn fusion_chunks(
    first: Option<Result<Item, FusionError>>,
    mut items: FusionStream,
    model: String,
    recorder: Recorder,
) -> impl Stream<Item = Result<ChatChunk, Failure>> + Send + 'static {
    async_stream::stream! {
        let mut recorder = Some(recorder);
        let mut outcome = RunOutcome::default();
        let mut pending = first;
        loop {
            let item = match pending.take() {
                Some(item) => Some(item),
                None => items.next().await,
            };
            let item = match item {
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    if let Some(recorder) = recorder.take() {
                        recorder.fusion_failed(&e, true);
                    }
                    yield Err((e.status(), e.to_string()));
                    return;
                }
                None => break,
            };
            outcome.record(&item);
            if let Some(recorder) = recorder.as_mut() {
                recorder.item(&item);
            }
            match item {
                Item::Chunk(chunk) => yield Ok(*chunk),
                Item::Answer(completion) => yield Ok(answer_chunk(&completion)),
                Item::Done(report) => {
                    if let Some(recorder) = recorder.take() {
                        recorder.streamed(Some(&report));
                    }
                    yield Ok(final_chunk(&model, &report));
                    return;
                }
                Item::Event(_) | Item::Annotations(_) => {}
            }
        }
        // A whole answer with no report: research, or the fusion tool not called.
        let Some(answer) = outcome.answer else {
            let e = Error::InvalidResponse("the fusion run ended without a result".into());
            if let Some(recorder) = recorder.take() {
                recorder.failed(&e, true);
            }
            yield Err((e.status(), e.to_string()));
            return;
        };
        if let Some(recorder) = recorder.take() {
            recorder.completed(&answer);
        }
        let mut last = ChatChunk::empty(model);
        last.usage = answer.usage.clone();
        if let Some(research) = answer.extra.get("research") {
            last.extra.insert("research".into(), research.clone());
        }
        yield Ok(last);
    }
}

/// Anthropic's event sequence: `message_start`, `ping`, each content block's start, deltas and
/// stop, `message_delta` with the stop reason and usage (and the `fusion` object), `message_stop`;
/// `error` when the run fails midway.
fn events(
    chunks: BoxStream<'static, Result<ChatChunk, Failure>>,
    id: String,
    model: String,
) -> impl Stream<Item = Bytes> + Send + 'static {
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
