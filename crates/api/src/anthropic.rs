//! Anthropic's Messages API on the wire, both ways: the request, the message, the stream events
//! and the error body. The gateway's `/v1/messages` surface reads requests and writes messages
//! (`surface`), the Anthropic provider writes requests and reads messages, and the simulator
//! plays the upstream: one dialect, one set of types. Routing, fusion, the store and metrics see
//! only the internal `ModelRequest`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod surface;

pub use surface::{message, stop_reason, usage};

/// `POST /v1/messages` body. Fields no one here reads pass through in `extra`, as on chat
/// completions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<Turn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// `user_id` and the like: the surface accepts it and does not forward it; the provider
    /// sends what a chat request's caller gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Quorate's `fusion` plugin, read by the surface; never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/messages/count_tokens` body: a request without what only a generation takes (the
/// upstream refuses `max_tokens`, `stream`, sampling).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<Turn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Extended thinking changes the count, so it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    /// Quorate's `fusion` plugin (a fusion has no single count); never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<Value>>,
}

impl From<MessagesRequest> for CountTokensRequest {
    fn from(request: MessagesRequest) -> Self {
        Self {
            model: request.model,
            messages: request.messages,
            system: request.system,
            tools: request.tools,
            tool_choice: request.tool_choice,
            thinking: request.extra.get("thinking").cloned(),
            plugins: request.plugins,
        }
    }
}

/// `{"input_tokens": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    pub input_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<Block>),
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: TurnRole,
    pub content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block, in requests and in messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Thinking, documents, server tools' blocks: read past by the provider, refused by the
    /// surface (neither has a chat counterpart).
    #[serde(other)]
    Other,
}

impl Block {
    pub fn text(text: impl Into<String>) -> Self {
        Block::Text { text: text.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    Any,
    None,
    Tool { name: String },
}

/// A whole answer; also the `message` of `message_start`, with no content yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    /// Always `assistant`.
    #[serde(default = "assistant")]
    pub role: String,
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: MessageUsage,
    /// Quorate's extensions (`fusion`, `research`) at the top level, as on chat completions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn message_type() -> String {
    "message".into()
}

fn assistant() -> String {
    "assistant".into()
}

impl MessageResponse {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: message_type(),
            role: assistant(),
            model: model.into(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: MessageUsage::default(),
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    ModelContextWindowExceeded,
    /// A reason newer than this code: read as an ordinary end.
    #[serde(other)]
    Other,
}

/// Tokens (and Quorate's exact cost). In a `message_delta` only the output count may be there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl MessageUsage {
    /// The whole prompt: cached input is still input.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }
}

/// A stream's events, each sent as `event: <type>` with its JSON as `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessageResponse,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta(MessageDelta),
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    /// An event type newer than this code.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signatures, citations: nothing a chat chunk carries.
    #[serde(other)]
    Other,
}

/// The message's end: why it stopped and the output's size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDelta {
    pub delta: Stop,
    #[serde(default)]
    pub usage: MessageUsage,
    /// Quorate's extensions (`fusion`, `research`), as on the whole message.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

impl StreamEvent {
    /// The event's name: its `type`.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta(_) => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Other => "other",
        }
    }

    /// The server-sent event: `event: <type>` and the JSON.
    pub fn sse(&self) -> String {
        // Strings, numbers and maps with string keys: serializing cannot fail.
        let data = serde_json::to_string(self).unwrap_or_default();
        format!("event: {}\ndata: {data}\n\n", self.name())
    }
}

/// `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

impl ErrorDetail {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            kind: error_type(status).into(),
            message: message.into(),
        }
    }

    /// The HTTP status an error of this type comes with (for errors inside a stream).
    pub fn status(&self) -> u16 {
        match self.kind.as_str() {
            "invalid_request_error" => 400,
            "authentication_error" => 401,
            "billing_error" => 402,
            "permission_error" => 403,
            "not_found_error" => 404,
            "request_too_large" => 413,
            "rate_limit_error" => 429,
            "timeout_error" => 504,
            "overloaded_error" => 529,
            _ => 500,
        }
    }
}

impl ErrorResponse {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            kind: "error".into(),
            error: ErrorDetail::new(status, message),
        }
    }
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_events_read_and_write_anthropics_json() {
        let delta: StreamEvent = serde_json::from_value(json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 7}, "fusion": {"panel": []}}))
        .unwrap();
        let StreamEvent::MessageDelta(delta) = &delta else {
            panic!("{delta:?}")
        };
        assert_eq!(delta.delta.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(delta.usage.output_tokens, 7);
        assert_eq!(delta.extra.keys().collect::<Vec<_>>(), ["fusion"]);
        let written = StreamEvent::MessageDelta(delta.clone()).sse();
        assert!(
            written.starts_with("event: message_delta\ndata: {"),
            "{written}"
        );
        assert!(written.contains(r#""type":"message_delta""#), "{written}");
        assert!(written.contains(r#""fusion":{"panel":[]}"#), "{written}");
        let newer: StreamEvent =
            serde_json::from_value(json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "thinking_delta", "thinking": "hm"}}))
            .unwrap();
        assert_eq!(
            newer,
            StreamEvent::ContentBlockDelta {
                index: 1,
                delta: BlockDelta::Other
            }
        );
        let unknown: StreamEvent = serde_json::from_value(json!({"type": "later"})).unwrap();
        assert_eq!(unknown, StreamEvent::Other);
    }

    #[test]
    fn a_message_reads_unknown_blocks_and_reasons_as_other() {
        let message: MessageResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "hi", "citations": []}],
            "stop_reason": "something_new",
            "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 10}}))
        .unwrap();
        assert_eq!(message.content, [Block::Other, Block::text("hi")]);
        assert_eq!(message.stop_reason, Some(StopReason::Other));
        assert_eq!(message.usage.prompt_tokens(), 13);
    }

    #[test]
    fn errors_use_anthropics_names_both_ways() {
        let body = serde_json::to_value(ErrorResponse::new(404, "no")).unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "no"}})
        );
        assert_eq!(error_type(529), "overloaded_error");
        for status in [400, 401, 402, 403, 404, 413, 429, 504, 529, 500] {
            assert_eq!(ErrorDetail::new(status, "m").status(), status);
        }
    }

    #[test]
    fn a_count_keeps_only_what_count_tokens_takes() {
        let request: MessagesRequest = serde_json::from_value(json!({
            "model": "c", "max_tokens": 9, "stream": true, "temperature": 0.5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        let count = serde_json::to_value(CountTokensRequest::from(request)).unwrap();
        assert_eq!(
            count,
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
                   "thinking": {"type": "enabled", "budget_tokens": 1024}})
        );
    }
}
