//! The gateway's `/v1/messages` surface: a Messages request read into the internal
//! `ModelRequest`, a completion written back as a message.

use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Map, Value};

use super::{
    Block, Content as InContent, CountTokensRequest, ImageSource, MessageResponse, MessageUsage,
    MessagesRequest, StopReason, System, Tool, ToolChoice, TurnRole,
};
use crate::chat::{ChatCompletion, Content, FunctionCall, Message, Role, ToolCall, Usage};
use crate::request::ModelRequest;

impl MessagesRequest {
    /// The internal request. Errors name the field, as Anthropic's do.
    pub fn into_request(self) -> Result<ModelRequest, String> {
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
                TurnRole::User => user_messages(message.content, &field, &mut messages)?,
                TurnRole::Assistant => messages.push(assistant_message(message.content, &field)?),
            }
        }
        let mut request = ModelRequest::new(self.model, messages);
        request.max_tokens = Some(self.max_tokens);
        request.stream = self.stream == Some(true);
        request.temperature = self.temperature;
        request.top_p = self.top_p;
        request.stop = self.stop_sequences.unwrap_or_default();
        request.tools = self
            .tools
            .into_iter()
            .flatten()
            .map(function_tool)
            .collect();
        request.tool_choice = self.tool_choice.map(openai_tool_choice);
        request.plugins = self.plugins.unwrap_or_default();
        request.extra = self.extra;
        if let Some(top_k) = self.top_k {
            request.extra.insert("top_k".into(), json!(top_k));
        }
        Ok(request)
    }
}

impl CountTokensRequest {
    /// The internal request whose prompt is counted: no output cap, as no output is made.
    pub fn into_request(self) -> Result<ModelRequest, String> {
        let mut extra = Map::new();
        if let Some(thinking) = self.thinking {
            extra.insert("thinking".into(), thinking);
        }
        let request = MessagesRequest {
            model: self.model,
            messages: self.messages,
            system: self.system,
            tools: self.tools,
            tool_choice: self.tool_choice,
            plugins: self.plugins,
            extra,
            ..MessagesRequest::default()
        };
        let mut counted = request.into_request()?;
        counted.max_tokens = None;
        Ok(counted)
    }
}

/// The text of text blocks; another kind of block is an error naming where it is.
fn texts(blocks: &[Block], field: &str) -> Result<String, String> {
    blocks
        .iter()
        .enumerate()
        .map(|(j, block)| match block {
            Block::Text { text } => Ok(text.as_str()),
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
            Block::Text { text } => parts.push(json!({"type": "text", "text": text})),
            Block::Image { source } => parts.push(image_part(source)),
            Block::ToolResult {
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
            Block::ToolUse { .. } => {
                return Err(format!(
                    "{field}.content[{j}]: tool_use blocks belong in assistant turns"
                ))
            }
            Block::Other => {
                return Err(format!(
                    "{field}.content[{j}]: only text, image and tool_result blocks are supported \
                     in user turns"
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
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => calls.push(ToolCall {
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

/// The message a completion answers with; the completion's extensions (`fusion`, `research`)
/// ride along as top-level fields.
pub fn message(completion: &ChatCompletion) -> MessageResponse {
    let choice = completion.choices.first();
    let mut answer = MessageResponse::new(&completion.id, &completion.model);
    if let Some(message) = choice.map(|c| &c.message) {
        let text = message.text();
        if !text.is_empty() {
            answer.content.push(Block::text(text));
        }
        for call in message.tool_calls.iter().flatten() {
            answer.content.push(tool_use_block(call));
        }
    }
    answer.stop_reason = Some(stop_reason(choice.and_then(|c| c.finish_reason.as_deref())));
    answer.usage = completion.usage.as_ref().map(usage).unwrap_or_default();
    answer.extra = completion.extra.clone();
    answer
}

/// A message's usage: tokens, and the exact cost as Quorate adds it.
pub fn usage(usage: &Usage) -> MessageUsage {
    MessageUsage {
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        cost: usage.cost.and_then(|c| c.to_f64()),
        ..MessageUsage::default()
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> StopReason {
    match finish_reason {
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::Refusal,
        _ => StopReason::EndTurn,
    }
}

/// A `tool_use` block for a whole call; arguments that are not JSON are kept as a string.
fn tool_use_block(call: &ToolCall) -> Block {
    let input = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or_else(|_| json!({"arguments": call.function.arguments}));
    Block::ToolUse {
        id: call.id.clone(),
        name: call.function.name.clone(),
        input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ModelRequest {
        serde_json::from_value::<MessagesRequest>(body)
            .unwrap()
            .into_request()
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
        assert_eq!(chat.tools[0]["function"]["parameters"]["type"], "object");
    }

    #[test]
    fn misplaced_blocks_are_named() {
        let error = serde_json::from_value::<MessagesRequest>(json!({
            "model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "n"}]}]}))
        .unwrap()
        .into_request()
        .unwrap_err();
        assert!(error.starts_with("messages[0].content[0]"), "{error}");
    }

    #[test]
    fn stop_reasons_use_anthropics_names() {
        assert_eq!(stop_reason(Some("tool_calls")), StopReason::ToolUse);
        assert_eq!(stop_reason(Some("length")), StopReason::MaxTokens);
        assert_eq!(stop_reason(None), StopReason::EndTurn);
        assert_eq!(
            serde_json::to_value(StopReason::MaxTokens).unwrap(),
            "max_tokens"
        );
    }
}
