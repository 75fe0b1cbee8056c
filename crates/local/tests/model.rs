//! The local provider on the real SmolLM2-135M model (fetched into the cache on first use).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures::StreamExt;
use quorate_api::{ChatRequest, ModelRequest};
use quorate_config::Config;
use quorate_providers::{Provider, RequestCtx};
use serde_json::{json, Value};

fn provider(extra: &str) -> Arc<dyn Provider> {
    let config = Config::from_toml(extra, "test").unwrap();
    quorate_local::provider("local", &config.providers["local"], &config).unwrap()
}

fn request(v: Value) -> ModelRequest {
    serde_json::from_value::<ChatRequest>(v).unwrap().into()
}

fn ask(text: &str) -> Value {
    json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 40})
}

async fn streamed_text(p: &dyn Provider, req: ModelRequest) -> String {
    let mut stream = p.stream(&RequestCtx::new("test"), req).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            text.push_str(c.delta.content.as_deref().unwrap_or_default());
        }
    }
    text
}

#[tokio::test]
async fn answers_a_factual_question() {
    let p = provider("");
    let c = p
        .complete(
            &RequestCtx::new("test"),
            request(ask("Which city is the capital of France?")),
        )
        .await
        .unwrap();
    let text = c.choices[0].message.text();
    assert!(text.contains("Paris"), "{text}");
    let usage = c.usage.unwrap();
    assert!(usage.prompt_tokens > 10 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn json_schema_output_parses_and_matches() {
    let p = provider("");
    let mut req = ask("Give the capital city of France and its country as JSON.");
    req["max_tokens"] = json!(80);
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "capital", "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "country", "population"], "additionalProperties": false}}});
    let c = p
        .complete(&RequestCtx::new("test"), request(req))
        .await
        .unwrap();
    let text = c.choices[0].message.text();
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let object = value.as_object().unwrap();
    assert_eq!(object.len(), 3, "{text}");
    assert!(
        object["city"].is_string() && object["country"].is_string(),
        "{text}"
    );
    assert!(
        object["population"].is_i64() || object["population"].is_u64(),
        "{text}"
    );
}

#[tokio::test]
async fn stream_matches_completion_for_the_same_seed() {
    let p = provider("");
    let mut req = ask("Write one sentence about the sea.");
    req["temperature"] = json!(0.9);
    req["seed"] = json!(1234);
    let whole = p
        .complete(&RequestCtx::new("test"), request(req.clone()))
        .await
        .unwrap()
        .choices[0]
        .message
        .text();
    let streamed = streamed_text(p.as_ref(), request(req)).await;
    assert!(!whole.is_empty());
    assert_eq!(streamed, whole);
}

#[tokio::test]
async fn stop_sequences_and_length_cap() {
    let p = provider("");
    let mut req = ask("Count from one to ten in words, separated by commas.");
    req["max_tokens"] = json!(30);
    let free = p
        .complete(&RequestCtx::new("test"), request(req.clone()))
        .await
        .unwrap()
        .choices[0]
        .message
        .text();
    // Stop at the second word the model writes: the answer must be exactly what came before it.
    let word = free
        .split_whitespace()
        .nth(1)
        .expect("at least two words")
        .to_string();
    let cut = free.find(&word).unwrap();
    req["stop"] = json!([word]);
    let c = p
        .complete(&RequestCtx::new("test"), request(req))
        .await
        .unwrap();
    assert_eq!(
        c.choices[0].message.text(),
        free[..cut],
        "stop {word:?} in {free:?}"
    );
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
    let mut req = ask("Tell me a long story about a dragon.");
    req["max_tokens"] = json!(5);
    let c = p
        .complete(&RequestCtx::new("test"), request(req))
        .await
        .unwrap();
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(c.usage.unwrap().completion_tokens, 5);
}

#[tokio::test]
async fn a_dropped_stream_frees_its_slot_and_a_full_queue_is_503() {
    let p = provider("[providers.local]\nkind = \"local\"\nslots = 1\nqueue = 0\n");
    let mut long = ask("Tell me a long story about a dragon.");
    long["max_tokens"] = json!(400);
    let mut first = p
        .stream(&RequestCtx::new("test"), request(long.clone()))
        .await
        .unwrap();
    assert!(first.next().await.is_some());
    let busy = p
        .stream(&RequestCtx::new("test"), request(ask("hi")))
        .await
        .err()
        .expect("the only slot is taken");
    assert_eq!(busy.status(), 503);
    assert!(busy.to_string().contains("busy"));
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Ok(stream) = p
            .stream(
                &RequestCtx::new("test"),
                request(ask("Which city is the capital of France?")),
            )
            .await
        {
            drop(stream);
            freed = true;
            break;
        }
    }
    assert!(freed, "the slot came back after the consumer went away");
}

#[tokio::test]
async fn tools_for_a_template_without_tools_are_a_400() {
    let mut req = ask("Search for rivers.");
    req["tools"] = json!([{"type": "function", "function": {"name": "web_search"}}]);
    let e = provider("")
        .complete(&RequestCtx::new("test"), request(req.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("has no tools"), "{e}");
    req["tool_choice"] = json!("none");
    let c = provider("")
        .complete(&RequestCtx::new("test"), request(req))
        .await
        .unwrap();
    assert!(!c.choices[0].message.text().is_empty());
}

#[tokio::test]
async fn an_over_long_prompt_is_a_400_naming_both_counts() {
    let p = provider("[models.\"local/smollm2-135m\"]\nprovider = \"local\"\ngguf = \"smollm2-135m\"\ncontext_length = 64\n");
    let e = p
        .stream(
            &RequestCtx::new("test"),
            request(ask(&"many words here ".repeat(40))),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status(), 400);
    let m = e.to_string();
    assert!(m.contains("tokens") && m.contains("64"), "{m}");
}
