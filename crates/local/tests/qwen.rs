//! The default embedded model (the `local` preset's, Qwen2.5-Coder 1.5B Instruct), on the real
//! GGUF (fetched into the cache on first use): it answers the README's question, keeps to a JSON
//! schema, and calls tools in OpenAI's shape, streamed or not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures::StreamExt;
use quorate_api::{ChatCompletion, ChatRequest, ModelRequest};
use quorate_config::Config;
use quorate_providers::{Provider, RequestCtx};
use serde_json::{json, Value};

fn provider() -> Arc<dyn Provider> {
    let config = Config::from_toml("", "test").unwrap();
    quorate_local::provider("local", &config.providers["local"], &config).unwrap()
}

/// The default's name as the `local` provider knows it, so these tests follow the default.
fn default_model() -> String {
    let config = Config::from_toml("", "test").unwrap();
    let id = &config.presets["local"].synthesizer;
    id.strip_prefix("local/").unwrap().to_string()
}

fn ask(text: &str, max_tokens: u32) -> Value {
    json!({"model": default_model(), "messages": [{"role": "user", "content": text}],
        "temperature": 0, "max_tokens": max_tokens})
}

async fn complete(p: &dyn Provider, req: Value) -> ChatCompletion {
    let req: ModelRequest = serde_json::from_value::<ChatRequest>(req).unwrap().into();
    p.complete(&RequestCtx::new("test"), req).await.unwrap()
}

fn search_tool() -> Value {
    json!([{"type": "function", "function": {"name": "web_search",
        "description": "Search the web and return the top results.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
            "required": ["query"]}}}])
}

#[tokio::test]
async fn answers_the_readme_question() {
    let c = complete(
        provider().as_ref(),
        ask("Which city is the capital of France?", 40),
    )
    .await;
    let text = c.choices[0].message.text();
    assert!(text.contains("Paris"), "{text}");
}

#[tokio::test]
async fn json_schema_output_is_valid() {
    let mut req = ask(
        "Give the capital city of France, its country and population.",
        80,
    );
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "capital", "schema": {
        "type": "object", "additionalProperties": false,
        "properties": {"city": {"type": "string"}, "country": {"type": "string"},
            "population": {"type": "integer"}},
        "required": ["city", "country", "population"]}}});
    let c = complete(provider().as_ref(), req).await;
    let text = c.choices[0].message.text();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(value["city"], "Paris", "{text}");
    assert!(value["population"].is_u64(), "{text}");
}

#[tokio::test]
async fn a_tool_call_is_parsed_streamed_and_not() {
    let p = provider();
    let mut req = ask(
        "Search the web for the height of the Eiffel Tower. Use the web_search tool.",
        80,
    );
    req["tools"] = search_tool();
    let c = complete(p.as_ref(), req.clone()).await;
    assert_eq!(
        c.choices[0].finish_reason.as_deref(),
        Some("tool_calls"),
        "{:?}",
        c.choices[0].message
    );
    let calls = c.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].function.name, "web_search");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert!(args["query"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("eiffel"));
    // The same call streamed: one delta with the whole call, and the finish reason.
    let streamed: ModelRequest = serde_json::from_value::<ChatRequest>(req).unwrap().into();
    let mut stream = p.stream(&RequestCtx::new("test"), streamed).await.unwrap();
    let (mut deltas, mut finish) = (Vec::new(), None);
    while let Some(chunk) = stream.next().await {
        for choice in chunk.unwrap().choices {
            deltas.extend(choice.delta.tool_calls.unwrap_or_default());
            finish = choice.finish_reason.or(finish);
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let function = deltas[0].function.clone().unwrap();
    assert_eq!(function.name.as_deref(), Some("web_search"));
    assert_eq!(function.arguments.unwrap(), calls[0].function.arguments);
}

#[tokio::test]
async fn tool_choice_forces_a_named_call_and_none_keeps_to_text() {
    let p = provider();
    let mut req = ask("Hello! How are you today?", 60);
    req["tools"] = search_tool();
    req["tool_choice"] = json!({"type": "function", "function": {"name": "web_search"}});
    let c = complete(p.as_ref(), req.clone()).await;
    let calls = c.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].function.name, "web_search");
    serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap();
    req["tool_choice"] = json!("none");
    let c = complete(p.as_ref(), req.clone()).await;
    assert!(c.choices[0].message.tool_calls.is_none());
    assert!(!c.choices[0].message.text().is_empty());
    req["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    let req: ModelRequest = serde_json::from_value::<ChatRequest>(req).unwrap().into();
    let e = p.complete(&RequestCtx::new("test"), req).await.unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(
        e.to_string().starts_with("tool_choice.function.name"),
        "{e}"
    );
}
