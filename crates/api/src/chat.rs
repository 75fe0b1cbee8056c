//! Chat completions: request, response and stream chunk.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::request::{CapName, ModelRequest};

/// `POST /v1/chat/completions` body. Fields Quorate reads are typed; everything else stays in
/// `extra` and is forwarded upstream as it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// May be left out when `models` is given (OpenRouter): see `into_request`.
    #[serde(default)]
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// OpenRouter fallback list: tried in order after `model`. Never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Sampling seed: where the model allows, the same seed and request give the same answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// OpenRouter plugins (`{"id": "fusion", ...}`): fusion reads its own; others go upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The output format a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

/// `response_format.json_schema`: the schema and what the caller says of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseFormat {
    /// A `json_schema` format named `name`, strictly enforced.
    pub fn json_schema(name: &str, schema: Value) -> Self {
        Self::JsonSchema {
            json_schema: JsonSchema {
                name: name.to_string(),
                schema: Some(schema),
                strict: Some(true),
                extra: Map::new(),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The header on inner calls of a fusion run, so that a Quorate behind Quorate refuses to recurse.
pub const FUSION_DEPTH_HEADER: &str = "x-quorate-fusion-depth";

/// The gateway's id of a request: on its response, and on every upstream call it makes.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl ChatRequest {
    /// The internal request, checked. OpenRouter takes `models` alone: the first is the model,
    /// the rest its fallbacks. Errors name the field as the caller sent it.
    pub fn into_request(mut self) -> Result<ModelRequest, String> {
        if self.model.is_empty() {
            if let Some(models) = self.models.as_mut().filter(|m| !m.is_empty()) {
                self.model = models.remove(0);
            }
        }
        // Both wire caps: with both sent the internal request keeps `max_completion_tokens`
        // only, and a zero `max_tokens` beside it would pass unseen.
        for (name, value) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if value == Some(0) {
                return Err(format!("{name}: must be at least 1"));
            }
        }
        let request = ModelRequest::from(self);
        request.validate()?;
        Ok(request)
    }
}

impl From<ChatRequest> for ModelRequest {
    fn from(wire: ChatRequest) -> Self {
        let cap_name = match wire.max_completion_tokens {
            Some(_) => CapName::MaxCompletionTokens,
            None => CapName::MaxTokens,
        };
        Self {
            model: wire.model,
            fallbacks: wire.models,
            messages: wire.messages,
            stream: wire.stream == Some(true),
            temperature: wire.temperature,
            top_p: wire.top_p,
            max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
            cap_name,
            stop: wire.stop.map(Stop::into_vec).unwrap_or_default(),
            seed: wire.seed,
            response_format: wire.response_format,
            tools: wire.tools.unwrap_or_default(),
            tool_choice: wire.tool_choice,
            plugins: wire.plugins.unwrap_or_default(),
            extra: wire.extra,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// The legacy form of a tool result (`name` says which function), still accepted by OpenAI.
    Function,
}

impl Role {
    const NAMES: &'static [&'static str] = &[
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "function",
    ];
}

/// Read as a string rather than derived: serde_json answers a derived enum given a number or a
/// bool with a syntax error ("expected value"), which loses the field's path; a string visitor
/// turns it into a type error that names `messages[i].role`.
impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Role;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "one of {}", Role::NAMES.join(", "))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Role, E> {
                match s {
                    "system" => Ok(Role::System),
                    "developer" => Ok(Role::Developer),
                    "user" => Ok(Role::User),
                    "assistant" => Ok(Role::Assistant),
                    "tool" => Ok(Role::Tool),
                    "function" => Ok(Role::Function),
                    _ => Err(E::unknown_variant(s, Role::NAMES)),
                }
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// A string, an array of content parts, or null (assistant turns that only call tools).
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// The message's text: the string, or its text parts joined.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.role == Role::Tool && self.tool_call_id.is_none() {
            return Err("tool_call_id: required on a tool message".into());
        }
        if self.role == Role::Function && self.name.is_none() {
            return Err("name: required on a function message (the function's name)".into());
        }
        if let Some(Content::Parts(parts)) = &self.content {
            for (i, part) in parts.iter().enumerate() {
                if part.get("type").and_then(Value::as_str).is_none() {
                    return Err(format!(
                        "content[{i}].type: every content part needs a type"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn function_type() -> String {
    "function".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the OpenAI API carries it.
    #[serde(default)]
    pub arguments: String,
}

/// A `chat.completion` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_string()
}

impl ChatCompletion {
    /// A completion with one assistant message; id and timestamp are the server's to set.
    pub fn assistant(
        model: impl Into<String>,
        text: String,
        finish_reason: Option<String>,
    ) -> Self {
        Self {
            id: String::new(),
            object: completion_object(),
            created: 0,
            model: model.into(),
            choices: vec![Choice {
                index: 0,
                message: Message::new(Role::Assistant, text),
                finish_reason,
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts and cost. `cost` is USD, computed in exact decimals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(
        default,
        with = "rust_decimal::serde::float_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cost: Option<Decimal>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Self::default()
        }
    }
}

/// A `chat.completion.chunk` stream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

impl ChatChunk {
    /// A chunk of one choice: `delta`, and the finish reason on the last one.
    pub fn single(
        id: impl Into<String>,
        model: impl Into<String>,
        delta: Delta,
        finish_reason: Option<String>,
    ) -> Self {
        Self {
            id: id.into(),
            object: chunk_object(),
            created: 0,
            model: model.into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        }
    }

    /// A chunk with no choices (usage, progress and report chunks); id and timestamp are the
    /// server's to set.
    pub fn empty(model: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            object: chunk_object(),
            created: 0,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            extra: Map::new(),
        }
    }

    /// True once the chunk carries anything the caller would see as output.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_deref().is_some_and(|s| !s.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_round_trip() {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}],
            "response_format": {"type": "json_object"},
            "seed": 7,
            "provider": {"order": ["a"]}
        });
        let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.seed, Some(7));
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(req.extra["provider"], json!({"order": ["a"]}));
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
        let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true,
            "schema": {"type": "object"}, "description": "kept"}});
        let format: ResponseFormat = serde_json::from_value(schema.clone()).unwrap();
        assert_eq!(serde_json::to_value(format).unwrap(), schema);
    }

    #[test]
    fn validation_names_the_field() {
        let mut req: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3.5
        }))
        .unwrap();
        let error = |r: &ChatRequest| r.clone().into_request().unwrap_err();
        assert!(error(&req).starts_with("temperature:"));
        req.temperature = None;
        req.max_completion_tokens = Some(0);
        assert_eq!(error(&req), "max_completion_tokens: must be at least 1");
        req.max_completion_tokens = None;
        req.messages.push(Message::new(Role::Tool, "result"));
        assert_eq!(
            error(&req),
            "messages[1].tool_call_id: required on a tool message"
        );
    }

    #[test]
    fn the_internal_request_settles_the_wire_details() {
        let req: ChatRequest = serde_json::from_value(json!({
            "models": ["a", "b"], "messages": [{"role": "user", "content": "x"}],
            "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 9, "max_completion_tokens": 7, "stop": "END", "top_k": 3
        }))
        .unwrap();
        let internal = req.into_request().unwrap();
        assert_eq!(internal.model, "a");
        assert_eq!(internal.fallbacks, Some(vec!["b".to_string()]));
        assert!(internal.stream);
        assert_eq!(
            (internal.max_tokens, internal.cap_name),
            (Some(7), CapName::MaxCompletionTokens)
        );
        assert_eq!(internal.stop, ["END"]);
        assert_eq!(internal.extra["top_k"], 3);
    }

    #[test]
    fn a_role_of_the_wrong_type_is_a_type_error() {
        let e = serde_json::from_str::<Message>(r#"{"role": 1, "content": "x"}"#).unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(e.to_string().contains("expected one of system"), "{e}");
        let m: Message = serde_json::from_value(json!({"role": "tool", "x": 1})).unwrap();
        assert_eq!((m.role, &m.extra["x"]), (Role::Tool, &json!(1)));
    }

    #[test]
    fn content_text_joins_text_parts() {
        let m: Message = serde_json::from_value(json!({"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "b"}
        ]}))
        .unwrap();
        assert_eq!(m.text(), "a\nb");
    }

    #[test]
    fn usage_cost_is_a_json_number() {
        let mut u = Usage::new(3, 4);
        u.cost = Some(Decimal::new(15, 6));
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["cost"], json!(0.000015));
        assert_eq!(v["total_tokens"], json!(7));
    }
}

/// Property tests (`PROPTEST_CASES=1000000 cargo test -p quorate-api properties` for the
/// million-case run): requests shaped like real ones, with wrong types and unknown fields mixed in.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-10.0f64..10.0).prop_map(Value::from),
            "[a-z ]{0,12}".prop_map(Value::from),
        ]
    }

    fn part() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z ]{0,12}".prop_map(|t| json!({"type": "text", "text": t})),
            "[a-z]{1,8}".prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
            scalar().prop_map(|v| json!({"type": v})),
            scalar(),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        let role = prop_oneof![
            prop::sample::select(vec![
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
                "function"
            ])
            .prop_map(Value::from),
            scalar(),
        ];
        let content = prop_oneof![
            "[a-z ]{0,16}".prop_map(Value::from),
            prop::collection::vec(part(), 0..3).prop_map(Value::from),
            scalar(),
        ];
        (
            role,
            content,
            prop::option::of("[a-z]{1,6}"),
            prop::option::of("[a-z0-9]{1,6}"),
        )
            .prop_map(|(role, content, name, call)| {
                let mut m = json!({"role": role, "content": content});
                if let Some(name) = name {
                    m["name"] = json!(name);
                }
                if let Some(call) = call {
                    m["tool_call_id"] = json!(call);
                }
                m
            })
    }

    fn request() -> impl Strategy<Value = Value> {
        (
            prop_oneof!["[a-z]{1,6}/[a-z]{1,6}".prop_map(Value::from), scalar()],
            prop::collection::vec(message(), 0..4),
            prop::option::of(scalar()),
            prop::option::of(prop::collection::vec(
                "[a-z]{1,6}".prop_map(Value::from),
                0..3,
            )),
            prop::option::of(scalar()),
        )
            .prop_map(|(model, messages, temperature, models, extra)| {
                let mut r = json!({"model": model, "messages": messages});
                if let Some(t) = temperature {
                    r["temperature"] = t;
                }
                if let Some(m) = models {
                    r["models"] = Value::from(m);
                }
                if let Some(x) = extra {
                    r["vendor_field"] = x;
                }
                r
            })
    }

    /// Found by `valid_requests_round_trip`: without serde_json's exact float parsing, a
    /// temperature read and written back changed in its last digit.
    #[test]
    fn floats_round_trip_exactly() {
        let body = r#"{"model": "a/a", "messages": [], "temperature": 0.030155163670241618}"#;
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        let again: ChatRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(again.temperature, request.temperature);
    }

    proptest! {
        /// A request that parses and validates comes back the same after writing it out: what
        /// is forwarded is what was sent, unknown fields included.
        #[test]
        fn valid_requests_round_trip(body in request()) {
            let Ok(request) = serde_json::from_value::<ChatRequest>(body) else {
                return Ok(());
            };
            if request.clone().into_request().is_ok() {
                let text = serde_json::to_string(&request).unwrap();
                let again: ChatRequest = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(again, request);
            }
        }

        /// Any bytes: an error or a request, never a panic.
        #[test]
        fn any_bytes_parse(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(request) = serde_json::from_slice::<ChatRequest>(&bytes) {
                let _ = request.into_request();
            }
        }
    }
}
