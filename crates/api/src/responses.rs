//! OpenAI's Responses API as a surface: its request read into the internal `ModelRequest`, a
//! completion written back as a response object. Only the edge speaks this dialect.

use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{
    ChatCompletion, Content, FunctionCall, JsonSchema, Message, ResponseFormat, Role, ToolCall,
    Usage,
};
use crate::request::ModelRequest;

/// `POST /v1/responses` body. Fields Quorate does not read go upstream as they came.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Input,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub text: Option<TextOptions>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// The earlier response this one continues (read from the run store).
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Accepted; every run is kept in the run store when it is on.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub plugins: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextOptions {
    #[serde(default)]
    pub format: Option<Format>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Format {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        #[serde(default)]
        schema: Option<Value>,
        #[serde(default)]
        strict: Option<bool>,
        #[serde(default)]
        description: Option<String>,
    },
}

impl ResponsesRequest {
    /// The internal request: `history` (an earlier response's turns) first, then the
    /// instructions and this input. Errors name the field.
    pub fn into_request(self, history: Vec<Message>) -> Result<ModelRequest, String> {
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions {
            messages.push(Message::new(Role::System, instructions));
        }
        messages.extend(history);
        messages.extend(input_messages(self.input)?);
        let mut request = ModelRequest::new(self.model, messages);
        request.max_tokens = self.max_output_tokens;
        request.temperature = self.temperature;
        request.top_p = self.top_p;
        request.stream = self.stream == Some(true);
        request.tools = self.tools.into_iter().flatten().map(chat_tool).collect();
        request.tool_choice = self.tool_choice.map(chat_tool_choice);
        request.response_format = self.text.and_then(|t| t.format).map(response_format);
        request.plugins = self.plugins.unwrap_or_default();
        request.extra = self.extra;
        if let Some(parallel) = self.parallel_tool_calls {
            request
                .extra
                .insert("parallel_tool_calls".into(), json!(parallel));
        }
        Ok(request)
    }
}

/// The input as chat messages: a string is one user message; items are messages, function calls
/// (an assistant turn) and their outputs (tool messages).
pub fn input_messages(input: Input) -> Result<Vec<Message>, String> {
    let items = match input {
        Input::Text(text) => return Ok(vec![Message::new(Role::User, text)]),
        Input::Items(items) => items,
    };
    let mut messages: Vec<Message> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => messages.push(item_message(item, &field)?),
            "function_call" => {
                let call = function_call(item, &field)?;
                // Calls made together are one assistant turn.
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant && last.tool_calls.is_some() => {
                        last.tool_calls.get_or_insert_with(Vec::new).push(call);
                    }
                    _ => {
                        let mut turn = Message::new(Role::Assistant, String::new());
                        turn.content = None;
                        turn.tool_calls = Some(vec![call]);
                        messages.push(turn);
                    }
                }
            }
            "function_call_output" => {
                let call_id = string(item, "call_id", &field)?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => return Err(format!("{field}.output: required")),
                };
                let mut message = Message::new(Role::Tool, output);
                message.tool_call_id = Some(call_id);
                messages.push(message);
            }
            other => return Err(format!("{field}.type: {other:?} is not served (message, function_call, function_call_output)")),
        }
    }
    Ok(messages)
}

fn string(item: &Value, key: &str, field: &str) -> Result<String, String> {
    item.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{field}.{key}: required, a string"))
}

fn item_message(item: &Value, field: &str) -> Result<Message, String> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        other => {
            return Err(format!(
                "{field}.role: {other:?} is not a role (user, assistant, system, developer)"
            ))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => Content::Text(text.clone()),
        Some(Value::Array(parts)) => Content::Parts(
            parts
                .iter()
                .enumerate()
                .map(|(j, part)| chat_part(part, &format!("{field}.content[{j}]")))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(format!("{field}.content: a string or a list of parts")),
    };
    let mut message = Message::new(role, String::new());
    message.content = Some(content);
    Ok(message)
}

/// `input_text` / `output_text` as text parts, `input_image` as an image part.
fn chat_part(part: &Value, field: &str) -> Result<Value, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": string(part, "text", field)?}))
        }
        Some("input_image") => {
            let url = string(part, "image_url", field)?;
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        other => Err(format!(
            "{field}.type: {other:?} is not served (input_text, output_text, input_image)"
        )),
    }
}

fn function_call(item: &Value, field: &str) -> Result<ToolCall, String> {
    Ok(ToolCall {
        id: string(item, "call_id", field)?,
        kind: "function".into(),
        function: FunctionCall {
            name: string(item, "name", field)?,
            arguments: item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}")
                .to_string(),
        },
        extra: Map::new(),
    })
}

/// `{"type": "function", "name", "parameters", ...}` as a chat tool; server tools
/// (`quorate:fusion`, `quorate:web_search`, ...) as they are.
fn chat_tool(tool: Value) -> Value {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return tool;
    }
    let mut function = Map::new();
    for key in ["name", "description", "parameters", "strict"] {
        if let Some(value) = tool.get(key) {
            function.insert(key.into(), value.clone());
        }
    }
    json!({"type": "function", "function": function})
}

fn chat_tool_choice(choice: Value) -> Value {
    match (
        choice.get("type").and_then(Value::as_str),
        choice.get("name"),
    ) {
        (Some("function"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
        _ => choice,
    }
}

fn response_format(format: Format) -> ResponseFormat {
    match format {
        Format::Text => ResponseFormat::Text,
        Format::JsonObject => ResponseFormat::JsonObject,
        Format::JsonSchema {
            name,
            schema,
            strict,
            description,
        } => {
            let mut extra = Map::new();
            if let Some(description) = description {
                extra.insert("description".into(), json!(description));
            }
            ResponseFormat::JsonSchema {
                json_schema: JsonSchema {
                    name,
                    schema,
                    strict,
                    extra,
                },
            }
        }
    }
}

/// The response's `usage`.
pub fn usage(usage: Option<&Usage>) -> Value {
    let usage = usage.cloned().unwrap_or_default();
    json!({
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
        "cost": usage.cost.and_then(|c| c.to_f64()),
    })
}

/// A message output item.
pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

/// A function call output item.
pub fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": call.id,
           "name": call.function.name, "arguments": call.function.arguments, "status": status})
}

/// The response object around `output`; the completion's extensions (`fusion`, `research`)
/// ride along as top-level fields.
pub fn response(id: &str, model: &str, created: u64, status: &str, output: Vec<Value>) -> Value {
    json!({"id": id, "object": "response", "created_at": created, "status": status,
           "model": model, "output": output, "error": null, "incomplete_details": null,
           "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "metadata": {}})
}

/// A whole completion as a response.
pub fn from_completion(completion: &ChatCompletion) -> Value {
    let mut output = Vec::new();
    if let Some(message) = completion.choices.first().map(|c| &c.message) {
        let text = message.text();
        if !text.is_empty() {
            output.push(message_item(&completion.id, &text, "completed"));
        }
        for (i, call) in message.tool_calls.iter().flatten().enumerate() {
            output.push(call_item(
                &format!("{}_{i}", completion.id),
                call,
                "completed",
            ));
        }
    }
    let mut body = response(
        &completion.id,
        &completion.model,
        completion.created,
        "completed",
        output,
    );
    body["usage"] = usage(completion.usage.as_ref());
    if let Some(object) = body.as_object_mut() {
        for (key, value) in &completion.extra {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_chat_turns() {
        let request: ResponsesRequest = serde_json::from_value(json!({
        "model": "m", "instructions": "be brief", "max_output_tokens": 9,
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}},
                  {"type": "quorate:fusion"}],
        "tool_choice": {"type": "function", "name": "w"},
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"}
        ]}))
        .unwrap();
        let chat = request.into_request(Vec::new()).unwrap();
        let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::Tool]
        );
        assert_eq!(chat.messages[2].tool_calls.as_ref().unwrap().len(), 2);
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(chat.max_tokens, Some(9));
        let tools = chat.tools;
        assert_eq!(tools[0]["function"]["name"], "w");
        assert_eq!(tools[1]["type"], "quorate:fusion");
        assert_eq!(chat.tool_choice.unwrap()["function"]["name"], "w");
        assert!(matches!(
            chat.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
    }

    #[test]
    fn unknown_items_are_named() {
        let request: ResponsesRequest = serde_json::from_value(
            json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}),
        )
        .unwrap();
        let error = request.into_request(Vec::new()).unwrap_err();
        assert!(error.starts_with("input[0].type"), "{error}");
    }
}
