//! Anthropic's Messages API as a surface: its request read into the internal `ChatRequest`, a
//! completion written back as a message, its errors and its stream events. Only the edge speaks
//! this dialect; routing, fusion, the store and metrics see the one internal request.

use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::chat::{
    ChatCompletion, ChatRequest, Content, FunctionCall, Message, Role, Stop, ToolCall, Usage,
};

/// `POST /v1/messages` body. Fields Quorate does not read go upstream as they came, as on chat
/// completions.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub system: Option<System>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// `user_id` and the like: accepted, not forwarded.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Quorate's `fusion` plugin works here as on chat completions.
    #[serde(default)]
    pub plugins: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<InBlock>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    pub role: InRole,
    pub content: InContent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InContent {
    Text(String),
    Blocks(Vec<InBlock>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InBlock {
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
        #[serde(default)]
        content: Option<InContent>,
        #[serde(default)]
        is_error: Option<bool>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    Any,
    None,
    Tool { name: String },
}

impl MessagesRequest {
    /// The internal request. Errors name the field, as Anthropic's do.
    pub fn into_chat(self) -> Result<ChatRequest, String> {
        let mut messages = Vec::new();
        if let Some(system) = self.system {
            let text = match system {
                System::Text(text) => text,
                System::Blocks(blocks) => texts(&blocks, "system")?,
            };
            messages.push(Message::new(Role::System, text));
        }
        for (i, message) in self.messages.into_iter().enumerate() {
            let field = format!("messages[{i}]");
            match message.role {
                InRole::User => user_messages(message.content, &field, &mut messages)?,
                InRole::Assistant => messages.push(assistant_message(message.content, &field)?),
            }
        }
        let mut extra = self.extra;
        if let Some(top_k) = self.top_k {
            extra.insert("top_k".into(), json!(top_k));
        }
        let mut request: ChatRequest = serde_json::from_value(json!({
            "model": self.model,
            "messages": [],
        }))
        .map_err(|e| e.to_string())?;
        request.messages = messages;
        request.max_tokens = Some(self.max_tokens);
        request.stream = self.stream;
        request.temperature = self.temperature;
        request.top_p = self.top_p;
        request.stop = self.stop_sequences.map(Stop::Many);
        request.tools = self
            .tools
            .map(|tools| tools.into_iter().map(function_tool).collect());
        request.tool_choice = self.tool_choice.map(openai_tool_choice);
        request.plugins = self.plugins;
        request.extra = extra;
        Ok(request)
    }
}

/// The text of text blocks; another kind of block is an error naming where it is.
fn texts(blocks: &[InBlock], field: &str) -> Result<String, String> {
    blocks
        .iter()
        .enumerate()
        .map(|(j, block)| match block {
            InBlock::Text { text } => Ok(text.as_str()),
            _ => Err(format!("{field}[{j}]: only text blocks are allowed here")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|parts| parts.join("\n\n"))
}

/// A user turn: its tool results become `tool` messages (first, as they answer the previous
/// turn's calls), the rest one user message.
fn user_messages(content: InContent, field: &str, out: &mut Vec<Message>) -> Result<(), String> {
    let blocks = match content {
        InContent::Text(text) => {
            out.push(Message::new(Role::User, text));
            return Ok(());
        }
        InContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        match block {
            InBlock::Text { text } => parts.push(json!({"type": "text", "text": text})),
            InBlock::Image { source } => parts.push(image_part(source)),
            InBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let text = match content {
                    None => String::new(),
                    Some(InContent::Text(text)) => text,
                    Some(InContent::Blocks(blocks)) => {
                        texts(&blocks, &format!("{field}.content[{j}].content"))?
                    }
                };
                let text = if is_error == Some(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                let mut message = Message::new(Role::Tool, text);
                message.tool_call_id = Some(tool_use_id);
                out.push(message);
            }
            InBlock::ToolUse { .. } => {
                return Err(format!(
                    "{field}.content[{j}]: tool_use blocks belong in assistant turns"
                ))
            }
        }
    }
    if !parts.is_empty() {
        let mut message = Message::new(Role::User, String::new());
        message.content = Some(Content::Parts(parts));
        out.push(message);
    }
    Ok(())
}

fn image_part(source: ImageSource) -> Value {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url,
    };
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn assistant_message(content: InContent, field: &str) -> Result<Message, String> {
    let blocks = match content {
        InContent::Text(text) => return Ok(Message::new(Role::Assistant, text)),
        InContent::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        match block {
            InBlock::Text { text: t } => text.push_str(&t),
            InBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
                extra: Map::new(),
            }),
            _ => {
                return Err(format!(
                    "{field}.content[{j}]: assistant turns hold text and tool_use blocks"
                ))
            }
        }
    }
    let mut message = Message::new(Role::Assistant, text);
    if !calls.is_empty() {
        message.tool_calls = Some(calls);
    }
    Ok(message)
}

fn function_tool(tool: Tool) -> Value {
    let parameters = tool
        .input_schema
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut function = json!({"name": tool.name, "parameters": parameters});
    if let Some(description) = tool.description {
        function["description"] = json!(description);
    }
    json!({"type": "function", "function": function})
}

fn openai_tool_choice(choice: ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::Any => json!("required"),
        ToolChoice::None => json!("none"),
        ToolChoice::Tool { name } => json!({"type": "function", "function": {"name": name}}),
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A message's usage: tokens, and the exact cost as Quorate adds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MessageUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl From<&Usage> for MessageUsage {
    fn from(usage: &Usage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cost: usage.cost.and_then(|c| c.to_f64()),
        }
    }
}

/// The message a completion answers with; the completion's extensions (`fusion`, `research`)
/// ride along as top-level fields.
pub fn message(completion: &ChatCompletion) -> Value {
    let choice = completion.choices.first();
    let mut content = Vec::new();
    if let Some(message) = choice.map(|c| &c.message) {
        let text = message.text();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in message.tool_calls.iter().flatten() {
            content.push(tool_use_block(call));
        }
    }
    let usage = completion
        .usage
        .as_ref()
        .map(MessageUsage::from)
        .unwrap_or_default();
    let mut body = json!({
        "id": completion.id,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": usage,
    });
    if let Some(object) = body.as_object_mut() {
        for (key, value) in &completion.extra {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    body
}

/// A `tool_use` block for a whole call; arguments that are not JSON are kept as a string.
pub fn tool_use_block(call: &ToolCall) -> Value {
    let input = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or_else(|_| json!({"arguments": call.function.arguments}));
    json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input})
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

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value::<MessagesRequest>(body)
            .unwrap()
            .into_chat()
            .unwrap()
    }

    #[test]
    fn a_conversation_with_tools_becomes_the_internal_request() {
        let chat = request(json!({
        "model": "m", "max_tokens": 50, "system": "be brief", "stop_sequences": ["END"],
        "top_k": 5, "tool_choice": {"type": "tool", "name": "weather"},
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "tu1", "content": "rain"},
                {"type": "text", "text": "thanks"}]}
        ]}));
        let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        let call = &chat.messages[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.arguments.as_str()),
            ("tu1", r#"{"city":"Oslo"}"#)
        );
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("tu1"));
        assert_eq!(chat.messages[3].text(), "rain");
        assert_eq!(chat.max_tokens, Some(50));
        assert_eq!(chat.extra["top_k"], 5);
        assert_eq!(
            chat.tool_choice,
            Some(json!({"type": "function", "function": {"name": "weather"}}))
        );
        assert_eq!(
            chat.tools.unwrap()[0]["function"]["parameters"]["type"],
            "object"
        );
    }

    #[test]
    fn misplaced_blocks_are_named() {
        let error = serde_json::from_value::<MessagesRequest>(json!({
            "model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "n"}]}]}))
        .unwrap()
        .into_chat()
        .unwrap_err();
        assert!(error.starts_with("messages[0].content[0]"), "{error}");
    }

    #[test]
    fn errors_and_stop_reasons_use_anthropics_names() {
        assert_eq!(error_body(404, "no")["error"]["type"], "not_found_error");
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(stop_reason(Some("tool_calls")), "tool_use");
        assert_eq!(stop_reason(Some("length")), "max_tokens");
        assert_eq!(stop_reason(None), "end_turn");
    }
}
