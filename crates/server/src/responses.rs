//! `POST /v1/responses`: OpenAI's Responses API over the same pipeline as chat completions. The
//! body is read into the internal `ModelRequest` (`quorate_api::responses`), routed, run and
//! recorded as a chat completion is (any model, fusion, the `quorate:fusion` tool, research);
//! the answer is a response object or the Responses stream events. `previous_response_id` is read
//! back from the run store.

use std::pin::pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{Stream, StreamExt};
use quorate_api::responses::{self, ResponsesRequest};
use quorate_api::{FunctionCall, Message, ModelRequest, Role, ToolCall, ToolCallDelta};
use quorate_providers::{Error, RequestCtx};
use quorate_store::{Run, Store};
use serde_json::{json, Map, Value};

use crate::answer::{self, Chunks, Dialect, Refused, Step};
use crate::chat::{accept, unix_millis};
use crate::AppState;

const SURFACE: &str = "responses";

/// The field naming the earlier response a request continues.
const PREVIOUS: &str = "previous_response_id";

/// How far back a chain of `previous_response_id` is followed.
const MAX_HISTORY: usize = 64;

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(mut ctx): Extension<RequestCtx>,
    request: Request,
) -> Response {
    let accepted = accept(&state, &mut ctx, request, SURFACE, parse).await;
    let (mut accepted, previous) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => return Refused::Plain(e).response(),
    };
    if let Some(previous) = previous {
        match history(&state, &previous).await {
            Ok(earlier) => {
                // After this request's instructions, before its input.
                let messages = &mut accepted.request.messages;
                let at = messages
                    .iter()
                    .take_while(|m| m.role == Role::System)
                    .count();
                messages.splice(at..at, earlier);
            }
            Err(e) => {
                accepted.recorder.failed(&e, false);
                return Refused::Plain(e).response();
            }
        }
    }
    let dialect = Dialect {
        events,
        body: |completion| axum::Json(responses::from_completion(completion)).into_response(),
        refuse: Refused::response,
        progress: false,
    };
    answer::respond(&state, ctx, accepted, dialect).await
}

/// The internal request, and the earlier response it continues (read by the handler from the
/// run store; never sent upstream).
fn parse(bytes: &[u8]) -> Result<(ModelRequest, Option<String>), Error> {
    let request: ResponsesRequest = answer::decode(bytes)?;
    let previous = request.previous_response_id.clone();
    let request = request
        .into_request(Vec::new())
        .map_err(Error::BadRequest)?;
    request.validate().map_err(Error::BadRequest)?;
    Ok((request, previous))
}

/// The turns before this one: each earlier response's input and answer, oldest first (its
/// instructions are not carried over, as OpenAI does).
async fn history(state: &AppState, id: &str) -> Result<Vec<Message>, Error> {
    let store = state.store.as_ref().ok_or_else(|| {
        Error::BadRequest(format!(
            "{PREVIOUS}: the run store is off ([store] enabled = false), so no response is kept"
        ))
    })?;
    let mut turns = Vec::new();
    let mut next = Some(id.to_string());
    while let Some(id) = next.take() {
        if turns.len() >= MAX_HISTORY {
            return Err(Error::BadRequest(format!(
                "{PREVIOUS}: the chain is longer than {MAX_HISTORY} responses"
            )));
        }
        let run = kept(store, &id).await?;
        let earlier = run
            .detail
            .request
            .and_then(|r| serde_json::from_value::<ResponsesRequest>(r).ok())
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "{PREVIOUS}: {id:?} is not a kept Responses request (or the store keeps no \
                     text)"
                ))
            })?;
        let mut turn = responses::input_messages(earlier.input).map_err(Error::BadRequest)?;
        if let Some(answer) = run.detail.answer.filter(|a| !a.is_empty()) {
            turn.push(Message::new(Role::Assistant, answer));
        }
        turns.push(turn);
        next = earlier.previous_response_id;
    }
    Ok(turns.into_iter().rev().flatten().collect())
}

/// A response kept in the run store (one written a moment ago is waited for: see `runs::fetch`).
async fn kept(store: &Store, id: &str) -> Result<Run, Error> {
    match crate::runs::fetch(store, id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(Error::BadRequest(format!(
            "{PREVIOUS}: no response {id:?} in the run store"
        ))),
        Err(e) => Err(Error::Unavailable(format!("{PREVIOUS}: {e}"))),
    }
}

/// The Responses event sequence: `response.created`, `response.in_progress`, per output item
/// `response.output_item.added` .. `done` (text through `response.content_part.*` and
/// `response.output_text.delta` / `done`; calls through `response.function_call_arguments.*`),
/// then `response.completed` with the usage (and the `fusion` object), or `response.failed`.
fn events(chunks: Chunks, id: String, model: String) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        let created = unix_millis() / 1000;
        let mut out = Output::new(id.clone());
        let shell = responses::response(&id, &model, created, "in_progress", Vec::new());
        yield out.event("response.created", json!({"response": shell}));
        yield out.event("response.in_progress", json!({"response": shell}));
        let mut steps = pin!(answer::steps(chunks));
        while let Some(step) = steps.next().await {
            let (frames, tally) = match step {
                Step::Text(text) => (out.text(&text), None),
                Step::Call(call) => (out.call(call), None),
                Step::Failed(failure) => {
                    // OpenAI's Responses errors name the failure (`server_error`, ...).
                    let (code, message) = (failure.error.name, failure.error.message);
                    let mut failed = responses::response(&id, &model, created, "failed", out.items());
                    failed["error"] = json!({"code": code, "message": message});
                    yield out.event("response.failed", json!({"response": failed}));
                    return;
                }
                Step::Done(tally) => (out.close(), Some(tally)),
            };
            for frame in frames {
                yield frame;
            }
            if let Some(tally) = tally {
                let mut done = responses::response(&id, &model, created, "completed", out.items());
                done["usage"] = responses::usage(tally.usage.as_ref());
                if let Some(object) = done.as_object_mut() {
                    object.extend(tally.extensions);
                }
                yield out.event("response.completed", json!({"response": done}));
            }
        }
    }
}

/// The output items of a streamed response as they are built, and the events' sequence numbers.
struct Output {
    id: String,
    sequence: u64,
    done: Vec<Value>,
    open: Option<Open>,
}

enum Open {
    Text(String),
    /// A call, by its index in the chat deltas.
    Call(u32, ToolCall),
}

impl Output {
    fn new(id: String) -> Self {
        Self {
            id,
            sequence: 0,
            done: Vec::new(),
            open: None,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Bytes {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    }

    /// The items so far: the finished ones, then the open one as it stands.
    fn items(&self) -> Vec<Value> {
        let mut items = self.done.clone();
        if let Some(open) = &self.open {
            items.push(self.item(open, "in_progress"));
        }
        items
    }

    fn item(&self, open: &Open, status: &str) -> Value {
        let index = self.done.len();
        match open {
            Open::Text(text) => {
                responses::message_item(&format!("{}_{index}", self.id), text, status)
            }
            Open::Call(_, call) => {
                responses::call_item(&format!("{}_{index}", self.id), call, status)
            }
        }
    }

    fn item_id(&self) -> String {
        let index = self.done.len();
        match &self.open {
            Some(Open::Call(..)) => format!("fc_{}_{index}", self.id),
            _ => format!("msg_{}_{index}", self.id),
        }
    }

    fn text(&mut self, delta: &str) -> Vec<Bytes> {
        let mut frames = Vec::new();
        if !matches!(self.open, Some(Open::Text(_))) {
            frames.extend(self.close());
            self.open = Some(Open::Text(String::new()));
            let mut item = self.item(&Open::Text(String::new()), "in_progress");
            item["content"] = json!([]);
            frames.push(self.added(item));
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            frames.push(self.part_event("response.content_part.added", part));
        }
        if let Some(Open::Text(text)) = self.open.as_mut() {
            text.push_str(delta);
        }
        let (item_id, output_index) = (self.item_id(), self.done.len());
        frames.push(self.event(
            "response.output_text.delta",
            json!({"item_id": item_id,
            "output_index": output_index, "content_index": 0, "delta": delta}),
        ));
        frames
    }

    fn call(&mut self, delta: ToolCallDelta) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let function = delta.function.unwrap_or_default();
        if !matches!(&self.open, Some(Open::Call(index, _)) if *index == delta.index) {
            frames.extend(self.close());
            let call = ToolCall {
                id: delta.id.unwrap_or_default(),
                kind: "function".into(),
                function: FunctionCall {
                    name: function.name.unwrap_or_default(),
                    arguments: String::new(),
                },
                extra: Map::new(),
            };
            let item = self.item(&Open::Call(delta.index, call.clone()), "in_progress");
            self.open = Some(Open::Call(delta.index, call));
            frames.push(self.added(item));
        }
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            if let Some(Open::Call(_, call)) = self.open.as_mut() {
                call.function.arguments.push_str(&arguments);
            }
            let (item_id, output_index) = (self.item_id(), self.done.len());
            frames.push(self.event(
                "response.function_call_arguments.delta",
                json!({
                "item_id": item_id, "output_index": output_index, "delta": arguments}),
            ));
        }
        frames
    }

    fn added(&mut self, item: Value) -> Bytes {
        let output_index = self.done.len();
        self.event(
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        )
    }

    fn part_event(&mut self, kind: &str, part: Value) -> Bytes {
        let (item_id, output_index) = (self.item_id(), self.done.len());
        self.event(
            kind,
            json!({"item_id": item_id, "output_index": output_index,
            "content_index": 0, "part": part}),
        )
    }

    /// Finishes the open item: its `done` events, and it joins the finished items.
    fn close(&mut self) -> Vec<Bytes> {
        let Some(open) = self.open.take() else {
            return Vec::new();
        };
        let (item_id, output_index) = match &open {
            Open::Text(_) => (
                format!("msg_{}_{}", self.id, self.done.len()),
                self.done.len(),
            ),
            Open::Call(..) => (
                format!("fc_{}_{}", self.id, self.done.len()),
                self.done.len(),
            ),
        };
        let item = self.item(&open, "completed");
        let mut frames = Vec::new();
        match &open {
            Open::Text(text) => {
                frames.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": item_id,
                    "output_index": output_index, "content_index": 0, "text": text}),
                ));
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                frames.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": item_id,
                    "output_index": output_index, "content_index": 0, "part": part}),
                ));
            }
            Open::Call(_, call) => {
                frames.push(self.event(
                    "response.function_call_arguments.done",
                    json!({
                    "item_id": item_id, "output_index": output_index,
                    "arguments": call.function.arguments}),
                ));
            }
        }
        frames.push(self.event(
            "response.output_item.done",
            json!({"output_index": output_index,
            "item": item}),
        ));
        self.done.push(item);
        frames
    }
}
