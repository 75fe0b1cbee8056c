//! Anthropic's Messages API, mapped both ways: OpenAI-style requests become Messages requests
//! (system prompt, content parts, tool calls and results, tool choice), and Messages responses and
//! stream events become chat completions and chunks (stop reasons, usage).

use std::collections::HashMap;

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, Content, Delta, FunctionCall, FunctionDelta,
    Message, Role, ToolCall, ToolCallDelta, Usage,
};
use quorate_config::ProviderConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use crate::http::{upstream_message, Endpoint};
use crate::{sse, ChunkStream, Error, Provider, RequestCtx};

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires an output cap; this is used when neither caller nor config gives one.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Request fields that only make sense to OpenAI-style APIs; Anthropic rejects unknown fields,
/// so these are dropped rather than forwarded. Anything else in `extra` (top_k, metadata,
/// thinking, ...) goes through.
const OPENAI_ONLY: &[&str] = &[
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "parallel_tool_calls",
    "provider",
    "transforms",
    "reasoning",
    "usage",
    "modalities",
    "store",
    "service_tier",
];

/// The fields `count_tokens` takes; it refuses the generation ones (`max_tokens`, `stream`, ...).
const COUNT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

pub struct Anthropic {
    endpoint: Endpoint,
    /// `messages/count_tokens`, with the same key and headers.
    counter: Endpoint,
}

impl Anthropic {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: reqwest::Client,
    ) -> Result<Self, Error> {
        let auth = |key: &str| vec![(HeaderName::from_static("x-api-key"), key.to_string())];
        let mut fixed = HeaderMap::new();
        fixed.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        let endpoint = Endpoint::new(
            name,
            config,
            client.clone(),
            "messages",
            auth,
            fixed.clone(),
        )?;
        let counter = Endpoint::new(name, config, client, "messages/count_tokens", auth, fixed)?;
        Ok(Self { endpoint, counter })
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn complete(&self, ctx: &RequestCtx, req: ChatRequest) -> Result<ChatCompletion, Error> {
        let body = to_messages_request(&req, false)?;
        let value = self.endpoint.post_json(&body, ctx).await?;
        from_messages_response(&value).map_err(|m| {
            Error::InvalidResponse(format!(
                "{}: not a Messages response: {m}",
                self.endpoint.name
            ))
        })
    }

    async fn count_tokens(&self, ctx: &RequestCtx, req: ChatRequest) -> Result<u64, Error> {
        let mut body = to_messages_request(&req, false)?;
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|key, _| COUNT_FIELDS.contains(&key.as_str()));
        }
        let value = self.counter.post_json(&body, ctx).await?;
        value["input_tokens"].as_u64().ok_or_else(|| {
            Error::InvalidResponse(format!(
                "{}: count_tokens answered without input_tokens",
                self.counter.name
            ))
        })
    }

    async fn stream(&self, ctx: &RequestCtx, req: ChatRequest) -> Result<ChunkStream, Error> {
        let body = to_messages_request(&req, true)?;
        let response = self.endpoint.post(&body, ctx).await?;
        let events = sse::events(
            response.bytes_stream(),
            self.endpoint.idle,
            self.endpoint.name.clone(),
        );
        let who = self.endpoint.name.clone();
        Ok(Box::pin(async_stream::stream! {
            let mut events = std::pin::pin!(events);
            let mut state = StreamState::default();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => { yield Err(e); return; }
                };
                let value: Value = match serde_json::from_str(&event.data) {
                    Ok(v) => v,
                    Err(e) => {
                        yield Err(Error::InvalidResponse(format!("{who}: malformed stream event: {e}")));
                        return;
                    }
                };
                match state.on_event(&value) {
                    Ok(Step::Emit(chunk)) => yield Ok(chunk),
                    Ok(Step::Skip) => {}
                    Ok(Step::Done(chunk)) => { yield Ok(chunk); return; }
                    Err(e) => { yield Err(e.context(&who)); return; }
                }
            }
            yield Err(Error::InvalidResponse(format!("{who}: upstream stream ended before message_stop")));
        }))
    }
}

// ---- request: OpenAI → Anthropic ----

pub fn to_messages_request(req: &ChatRequest, stream: bool) -> Result<Value, Error> {
    let mut system = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        let field = |m: String| Error::BadRequest(format!("messages[{i}].{m}"));
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.push(message.text());
                continue;
            }
            Role::User => (
                "user",
                content_blocks(message.content.as_ref()).map_err(field)?,
            ),
            Role::Assistant => ("assistant", assistant_blocks(message).map_err(field)?),
            Role::Tool => ("user", vec![tool_result_block(message)]),
            // A legacy function result has no call id to answer: it is told as text.
            Role::Function => ("user", vec![function_result_block(message)]),
        };
        if blocks.is_empty() {
            continue;
        }
        // Consecutive turns of one role become one turn: every tool result of a turn must sit in
        // the single user message that follows it.
        match messages.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => messages.push((role.to_string(), blocks)),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let max_tokens = req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = req.temperature {
        // OpenAI's range is 0..2, Anthropic's 0..1.
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = &req.stop {
        body.insert("stop_sequences".into(), json!(stop.to_vec()));
    }
    if let Some(tools) = &req.tools {
        body.insert(
            "tools".into(),
            Value::Array(
                tools
                    .iter()
                    .map(tool_definition)
                    .collect::<Result<_, _>>()?,
            ),
        );
    }
    if let Some(choice) = &req.tool_choice {
        if let Some(mapped) = tool_choice(choice)? {
            body.insert("tool_choice".into(), mapped);
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    for (key, value) in &req.extra {
        if !OPENAI_ONLY.contains(&key.as_str()) && !body.contains_key(key) {
            body.insert(key.clone(), value.clone());
        }
    }
    Ok(Value::Object(body))
}

fn content_blocks(content: Option<&Content>) -> Result<Vec<Value>, String> {
    match content {
        None => Ok(vec![]),
        Some(Content::Text(text)) if text.is_empty() => Ok(vec![]),
        Some(Content::Text(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| part_block(p).map_err(|m| format!("content[{i}].{m}")))
            .collect(),
    }
}

fn part_block(part: &Value) -> Result<Value, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(
            json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or_default()}),
        ),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or("image_url.url: required")?;
            Ok(json!({"type": "image", "source": image_source(url)?}))
        }
        Some(other) => Err(format!(
            "type: content part {other:?} is not supported by Anthropic models"
        )),
        None => Err("type: required".into()),
    }
}

fn image_source(url: &str) -> Result<Value, String> {
    let Some(data) = url.strip_prefix("data:") else {
        return Ok(json!({"type": "url", "url": url}));
    };
    let (media_type, payload) = data
        .split_once(";base64,")
        .ok_or("image_url.url: a data URL must be base64")?;
    Ok(json!({"type": "base64", "media_type": media_type, "data": payload}))
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, String> {
    let mut blocks = content_blocks(message.content.as_ref())?;
    for (i, call) in message.tool_calls.iter().flatten().enumerate() {
        let input: Value = if call.function.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.function.arguments)
                .map_err(|e| format!("tool_calls[{i}].function.arguments: not JSON: {e}"))?
        };
        blocks.push(
            json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}),
        );
    }
    Ok(blocks)
}

fn tool_result_block(message: &Message) -> Value {
    json!({
        "type": "tool_result",
        "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
        "content": message.text(),
    })
}

fn function_result_block(message: &Message) -> Value {
    let name = message.name.as_deref().unwrap_or("function");
    json!({"type": "text", "text": format!("{name} returned: {}", message.text())})
}

fn tool_definition(tool: &Value) -> Result<Value, Error> {
    let function = tool
        .get("function")
        .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
        .ok_or_else(|| {
            Error::BadRequest("tools: Anthropic models take only function tools".into())
        })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("tools[].function.name: required".into()))?;
    let mut out = json!({
        "name": name,
        "input_schema": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = function.get("description") {
        out["description"] = description.clone();
    }
    Ok(out)
}

fn tool_choice(choice: &Value) -> Result<Option<Value>, Error> {
    let mapped = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(Error::BadRequest(format!(
                    "tool_choice: unknown value {other:?}"
                )))
            }
        },
        Value::Object(_) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => json!({"type": "tool", "name": name}),
            None => {
                return Err(Error::BadRequest(
                    "tool_choice.function.name: required".into(),
                ))
            }
        },
        Value::Null => return Ok(None),
        _ => {
            return Err(Error::BadRequest(
                "tool_choice: must be a string or an object".into(),
            ))
        }
    };
    Ok(Some(mapped))
}

// ---- response: Anthropic → OpenAI ----

pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

fn usage_from(value: &Value) -> Usage {
    let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    // Cached input is still input: the caller's prompt_tokens count all of it.
    let prompt =
        n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
    Usage::new(prompt, n("output_tokens"))
}

pub fn from_messages_response(value: &Value) -> Result<ChatCompletion, String> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or("content: missing")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") => calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind: "function".into(),
                function: FunctionCall {
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments: block
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                },
                extra: Map::new(),
            }),
            _ => {} // thinking and server-tool blocks have no OpenAI counterpart
        }
    }
    let mut message = Message::new(Role::Assistant, text);
    if !calls.is_empty() {
        message.tool_calls = Some(calls);
    }
    let stop = value
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    Ok(ChatCompletion {
        id: value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        object: "chat.completion".into(),
        created: 0,
        model: value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(stop).to_string()),
            extra: Map::new(),
        }],
        usage: Some(usage_from(value.get("usage").unwrap_or(&Value::Null))),
        extra: Map::new(),
    })
}

enum Step {
    Emit(ChatChunk),
    Skip,
    Done(ChatChunk),
}

/// What a Messages stream has said so far, to turn its events into chunks.
#[derive(Default)]
struct StreamState {
    id: String,
    model: String,
    usage: Usage,
    /// Content block index → tool call index, for `input_json_delta`s.
    tool_index: HashMap<u64, u32>,
}

impl StreamState {
    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk::single(&self.id, &self.model, delta, finish_reason)
    }

    fn on_event(&mut self, event: &Value) -> Result<Step, Error> {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.usage = usage_from(message.get("usage").unwrap_or(&Value::Null));
                Ok(Step::Emit(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        ..Delta::default()
                    },
                    None,
                )))
            }
            "content_block_start" => self.block_start(event),
            "content_block_delta" => Ok(self.block_delta(event)),
            "message_delta" => {
                if let Some(out) = event
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage.completion_tokens = out;
                    self.usage.total_tokens = self.usage.prompt_tokens + out;
                }
                let stop = event.pointer("/delta/stop_reason").and_then(Value::as_str);
                Ok(match stop {
                    Some(s) => {
                        Step::Emit(self.chunk(Delta::default(), Some(finish_reason(s).to_string())))
                    }
                    None => Step::Skip,
                })
            }
            "message_stop" => {
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(self.usage.clone());
                Ok(Step::Done(last))
            }
            "error" => {
                let error_type = event
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let status = match error_type {
                    "invalid_request_error" => 400,
                    "authentication_error" => 401,
                    "permission_error" => 403,
                    "not_found_error" => 404,
                    "request_too_large" => 413,
                    "rate_limit_error" => 429,
                    "overloaded_error" => 529,
                    _ => 500,
                };
                Err(Error::from_upstream_status(
                    status,
                    upstream_message(&event.to_string()),
                    None,
                ))
            }
            _ => Ok(Step::Skip), // ping, content_block_stop, future event types
        }
    }

    fn block_start(&mut self, event: &Value) -> Result<Step, Error> {
        let block = event.get("content_block").unwrap_or(&Value::Null);
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call_index = u32::try_from(self.tool_index.len()).unwrap_or(u32::MAX);
                self.tool_index.insert(index, call_index);
                let call = ToolCallDelta {
                    index: call_index,
                    id: block.get("id").and_then(Value::as_str).map(str::to_string),
                    kind: Some("function".into()),
                    function: Some(FunctionDelta {
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        arguments: Some(String::new()),
                    }),
                };
                Ok(Step::Emit(self.chunk(
                    Delta {
                        tool_calls: Some(vec![call]),
                        ..Delta::default()
                    },
                    None,
                )))
            }
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(if text.is_empty() {
                    Step::Skip
                } else {
                    Step::Emit(self.text_chunk(text))
                })
            }
            _ => Ok(Step::Skip),
        }
    }

    fn block_delta(&self, event: &Value) -> Step {
        let delta = event.get("delta").unwrap_or(&Value::Null);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => self
                .text_chunk(
                    delta
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                )
                .into(),
            Some("input_json_delta") => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(&call_index) = self.tool_index.get(&index) else {
                    return Step::Skip;
                };
                let call = ToolCallDelta {
                    index: call_index,
                    function: Some(FunctionDelta {
                        name: None,
                        arguments: delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    }),
                    ..ToolCallDelta::default()
                };
                Step::Emit(self.chunk(
                    Delta {
                        tool_calls: Some(vec![call]),
                        ..Delta::default()
                    },
                    None,
                ))
            }
            _ => Step::Skip,
        }
    }

    fn text_chunk(&self, text: &str) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text.to_string()),
                ..Delta::default()
            },
            None,
        )
    }
}

impl From<ChatChunk> for Step {
    fn from(chunk: ChatChunk) -> Self {
        Step::Emit(chunk)
    }
}

#[cfg(test)]
mod tests;

/// Property tests (`PROPTEST_CASES=1000000 cargo test -p quorate-providers properties` for the
/// million-case run).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use quorate_api::{FunctionCall, ToolCall};

    fn message() -> impl Strategy<Value = Message> {
        let role = prop::sample::select(vec![
            Role::System,
            Role::Developer,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Function,
        ]);
        (role, "[a-z ]{0,12}", any::<bool>()).prop_map(|(role, text, calls)| {
            let mut message = Message::new(role, text);
            match role {
                Role::Tool => message.tool_call_id = Some("call_1".into()),
                Role::Function => message.name = Some("get_weather".into()),
                Role::Assistant if calls => {
                    message.tool_calls = Some(vec![ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "get_weather".into(),
                            arguments: "{\"city\":\"Oslo\"}".into(),
                        },
                        extra: Default::default(),
                    }]);
                }
                _ => {}
            }
            message
        })
    }

    proptest! {
        /// Any conversation maps to a Messages request whose turns alternate (Anthropic refuses
        /// two turns of one role in a row), with every system text in `system`.
        #[test]
        fn turns_alternate(messages in prop::collection::vec(message(), 1..10)) {
            let mut request: ChatRequest =
                serde_json::from_value(json!({"model": "m", "messages": []})).unwrap();
            request.messages = messages;
            let Ok(body) = to_messages_request(&request, false) else {
                return Ok(());
            };
            let roles: Vec<&str> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
            let has_system = request
                .messages
                .iter()
                .any(|m| matches!(m.role, Role::System | Role::Developer));
            prop_assert_eq!(body.get("system").is_some(), has_system);
        }
    }
}
