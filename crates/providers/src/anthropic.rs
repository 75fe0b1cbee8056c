//! Anthropic's Messages API, mapped both ways: OpenAI-style requests become Messages requests
//! (system prompt, content parts, tool calls and results, tool choice), and Messages responses and
//! stream events become chat completions and chunks (stop reasons, usage).

use std::collections::HashMap;

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::anthropic::{
    self as wire, Block, BlockDelta, CountTokensRequest, ImageSource, MessageResponse,
    MessageUsage, MessagesRequest, StopReason, StreamEvent, System, TokenCount, Tool, ToolChoice,
    Turn, TurnRole,
};
use quorate_api::{
    ChatChunk, ChatCompletion, Choice, Content, Delta, FunctionCall, FunctionDelta, Message,
    ModelRequest, Role, ToolCall, ToolCallDelta, Usage,
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

/// Extras that are fields of the wire request: read into them, never sent twice.
const TYPED: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "metadata",
    "plugins",
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
    async fn complete(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChatCompletion, Error> {
        let body = to_messages_request(&req, false)?;
        let message: MessageResponse = self.endpoint.post_json(&body, ctx).await?;
        Ok(from_message(message))
    }

    async fn count_tokens(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<u64, Error> {
        let body = CountTokensRequest::from(to_messages_request(&req, false)?);
        let count: TokenCount = self.counter.post_json(&body, ctx).await?;
        Ok(count.input_tokens)
    }

    async fn stream(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChunkStream, Error> {
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
                let event: StreamEvent = match serde_json::from_str(&event.data) {
                    Ok(v) => v,
                    Err(e) => {
                        yield Err(Error::InvalidResponse(format!("{who}: malformed stream event: {e}")));
                        return;
                    }
                };
                match state.on_event(event) {
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

/// The wire request for an internal one.
pub fn to_messages_request(req: &ModelRequest, stream: bool) -> Result<MessagesRequest, Error> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        let field = |m: String| Error::BadRequest(format!("messages[{i}].{m}"));
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.push(message.text());
                continue;
            }
            Role::User => (
                TurnRole::User,
                content_blocks(message.content.as_ref()).map_err(field)?,
            ),
            Role::Assistant => (
                TurnRole::Assistant,
                assistant_blocks(message).map_err(field)?,
            ),
            Role::Tool => (TurnRole::User, vec![tool_result_block(message)]),
            // A legacy function result has no call id to answer: it is told as text.
            Role::Function => (TurnRole::User, vec![function_result_block(message)]),
        };
        if blocks.is_empty() {
            continue;
        }
        // Consecutive turns of one role become one turn: every tool result of a turn must sit in
        // the single user message that follows it.
        match turns.last_mut() {
            Some(Turn {
                role: last,
                content: wire::Content::Blocks(existing),
            }) if *last == role => existing.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: wire::Content::Blocks(blocks),
            }),
        }
    }
    Ok(MessagesRequest {
        model: req.model.clone(),
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        messages: turns,
        system: (!system.is_empty()).then(|| System::Text(system.join("\n\n"))),
        stop_sequences: (!req.stop.is_empty()).then(|| req.stop.clone()),
        stream: stream.then_some(true),
        // OpenAI's range is 0..2, Anthropic's 0..1.
        temperature: req.temperature.map(|t| t.min(1.0)),
        top_p: req.top_p,
        top_k: top_k(&req.extra)?,
        tools: (!req.tools.is_empty())
            .then(|| req.tools.iter().map(tool_definition).collect())
            .transpose()?,
        tool_choice: req
            .tool_choice
            .as_ref()
            .map(tool_choice)
            .transpose()?
            .flatten(),
        metadata: req.extra.get("metadata").cloned(),
        plugins: None,
        extra: passthrough(&req.extra),
    })
}

/// `top_k` from the caller's extras: Anthropic's own sampling field (an ill-typed one is the
/// caller's error, named).
fn top_k(extra: &Map<String, Value>) -> Result<Option<u32>, Error> {
    extra
        .get("top_k")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| Error::BadRequest(format!("top_k: {e}")))
}

/// The caller's other extras that Anthropic takes (thinking, ...), as they came: OpenAI-only
/// ones dropped, the request's own fields never sent twice.
fn passthrough(extra: &Map<String, Value>) -> Map<String, Value> {
    extra
        .iter()
        .filter(|(key, _)| !OPENAI_ONLY.contains(&key.as_str()) && !TYPED.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn content_blocks(content: Option<&Content>) -> Result<Vec<Block>, String> {
    match content {
        None => Ok(vec![]),
        Some(Content::Text(text)) if text.is_empty() => Ok(vec![]),
        Some(Content::Text(text)) => Ok(vec![Block::text(text.as_str())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| part_block(p).map_err(|m| format!("content[{i}].{m}")))
            .collect(),
    }
}

fn part_block(part: &Value) -> Result<Block, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Block::text(
            part.get("text").and_then(Value::as_str).unwrap_or_default(),
        )),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or("image_url.url: required")?;
            Ok(Block::Image {
                source: image_source(url)?,
            })
        }
        Some(other) => Err(format!(
            "type: content part {other:?} is not supported by Anthropic models"
        )),
        None => Err("type: required".into()),
    }
}

fn image_source(url: &str) -> Result<ImageSource, String> {
    let Some(data) = url.strip_prefix("data:") else {
        return Ok(ImageSource::Url { url: url.into() });
    };
    let (media_type, payload) = data
        .split_once(";base64,")
        .ok_or("image_url.url: a data URL must be base64")?;
    Ok(ImageSource::Base64 {
        media_type: media_type.into(),
        data: payload.into(),
    })
}

fn assistant_blocks(message: &Message) -> Result<Vec<Block>, String> {
    let mut blocks = content_blocks(message.content.as_ref())?;
    for (i, call) in message.tool_calls.iter().flatten().enumerate() {
        let input: Value = if call.function.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.function.arguments)
                .map_err(|e| format!("tool_calls[{i}].function.arguments: not JSON: {e}"))?
        };
        blocks.push(Block::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
        });
    }
    Ok(blocks)
}

fn tool_result_block(message: &Message) -> Block {
    Block::ToolResult {
        tool_use_id: message.tool_call_id.clone().unwrap_or_default(),
        content: Some(wire::Content::Text(message.text())),
        is_error: None,
    }
}

fn function_result_block(message: &Message) -> Block {
    let name = message.name.as_deref().unwrap_or("function");
    Block::text(format!("{name} returned: {}", message.text()))
}

fn tool_definition(tool: &Value) -> Result<Tool, Error> {
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
    Ok(Tool {
        name: name.into(),
        description: function
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        input_schema: Some(
            function
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        ),
    })
}

fn tool_choice(choice: &Value) -> Result<Option<ToolChoice>, Error> {
    let mapped = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Any,
            "none" => ToolChoice::None,
            other => {
                return Err(Error::BadRequest(format!(
                    "tool_choice: unknown value {other:?}"
                )))
            }
        },
        Value::Object(_) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Tool { name: name.into() },
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

pub fn finish_reason(stop_reason: StopReason) -> &'static str {
    match stop_reason {
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
        StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
        StopReason::Other => "stop",
    }
}

fn usage_from(usage: &MessageUsage) -> Usage {
    // Cached input is still input: the caller's prompt_tokens count all of it.
    Usage::new(usage.prompt_tokens(), usage.output_tokens)
}

/// The chat completion a whole message answers.
pub fn from_message(message: MessageResponse) -> ChatCompletion {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message.content {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => calls.push(tool_call(id, name, &input)),
            // Thinking and server-tool blocks have no chat counterpart.
            _ => {}
        }
    }
    let mut answer = Message::new(Role::Assistant, text);
    if !calls.is_empty() {
        answer.tool_calls = Some(calls);
    }
    let stop = message.stop_reason.unwrap_or(StopReason::EndTurn);
    ChatCompletion {
        id: message.id,
        object: "chat.completion".into(),
        created: 0,
        model: message.model,
        choices: vec![Choice {
            index: 0,
            message: answer,
            finish_reason: Some(finish_reason(stop).to_string()),
            extra: Map::new(),
        }],
        usage: Some(usage_from(&message.usage)),
        extra: Map::new(),
    }
}

fn tool_call(id: String, name: String, input: &Value) -> ToolCall {
    let arguments = if input.is_null() {
        "{}".into()
    } else {
        input.to_string()
    };
    ToolCall {
        id,
        kind: "function".into(),
        function: FunctionCall { name, arguments },
        extra: Map::new(),
    }
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
    tool_index: HashMap<usize, u32>,
}

impl StreamState {
    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk::single(&self.id, &self.model, delta, finish_reason)
    }

    fn on_event(&mut self, event: StreamEvent) -> Result<Step, Error> {
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage = usage_from(&message.usage);
                Ok(Step::Emit(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        ..Delta::default()
                    },
                    None,
                )))
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => Ok(self.block_start(index, content_block)),
            StreamEvent::ContentBlockDelta { index, delta } => Ok(self.block_delta(index, delta)),
            StreamEvent::MessageDelta(end) => {
                // Zero is "not said": a message_delta may carry only part of the usage.
                if end.usage.output_tokens > 0 {
                    self.usage.completion_tokens = end.usage.output_tokens;
                    self.usage.total_tokens = self.usage.prompt_tokens + end.usage.output_tokens;
                }
                Ok(match end.delta.stop_reason {
                    Some(s) => {
                        Step::Emit(self.chunk(Delta::default(), Some(finish_reason(s).to_string())))
                    }
                    None => Step::Skip,
                })
            }
            StreamEvent::MessageStop => {
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(self.usage.clone());
                Ok(Step::Done(last))
            }
            StreamEvent::Error { error } => Err(Error::from_upstream_status(
                error.status(),
                upstream_message(&error.message),
                None,
            )),
            // ping, content_block_stop, future event types
            StreamEvent::Ping | StreamEvent::ContentBlockStop { .. } | StreamEvent::Other => {
                Ok(Step::Skip)
            }
        }
    }

    fn block_start(&mut self, index: usize, block: Block) -> Step {
        match block {
            Block::ToolUse { id, name, .. } => {
                let call_index = u32::try_from(self.tool_index.len()).unwrap_or(u32::MAX);
                self.tool_index.insert(index, call_index);
                let call = ToolCallDelta {
                    index: call_index,
                    id: Some(id),
                    kind: Some("function".into()),
                    function: Some(FunctionDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    }),
                };
                Step::Emit(self.chunk(
                    Delta {
                        tool_calls: Some(vec![call]),
                        ..Delta::default()
                    },
                    None,
                ))
            }
            Block::Text { text } if !text.is_empty() => Step::Emit(self.text_chunk(text)),
            _ => Step::Skip,
        }
    }

    fn block_delta(&self, index: usize, delta: BlockDelta) -> Step {
        match delta {
            BlockDelta::TextDelta { text } => Step::Emit(self.text_chunk(text)),
            BlockDelta::InputJsonDelta { partial_json } => {
                let Some(&call_index) = self.tool_index.get(&index) else {
                    return Step::Skip;
                };
                let call = ToolCallDelta {
                    index: call_index,
                    function: Some(FunctionDelta {
                        name: None,
                        arguments: Some(partial_json),
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
            BlockDelta::Other => Step::Skip,
        }
    }

    fn text_chunk(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        )
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
            let request = ModelRequest::new("m", messages);
            let Ok(body) = to_messages_request(&request, false) else {
                return Ok(());
            };
            let body = serde_json::to_value(body).unwrap();
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
