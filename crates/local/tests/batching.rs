//! The scheduler on the real SmolLM2-135M model: sequences batched together give the answers
//! they give alone, share the prompt prefixes they have in common, reuse a finished sequence's
//! cache, and end independently.

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

fn ask(text: &str, max_tokens: u32) -> ModelRequest {
    request(json!({"model": "smollm2-135m",
        "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": max_tokens}))
}

fn request(v: Value) -> ModelRequest {
    serde_json::from_value::<ChatRequest>(v).unwrap().into()
}

async fn complete(p: &dyn Provider, req: ModelRequest) -> ChatCompletion {
    p.complete(&RequestCtx::new("test"), req).await.unwrap()
}

fn cached(c: &ChatCompletion) -> u64 {
    let usage = c.usage.as_ref().unwrap();
    usage
        .extra
        .get("prompt_tokens_details")
        .map_or(0, |d| d["cached_tokens"].as_u64().unwrap())
}

const QUESTION: &str = "Name three rivers of Europe and say one thing about each.";

#[tokio::test]
async fn batched_sequences_answer_as_alone_and_share_their_prompt() {
    let p = provider();
    let alone = complete(p.as_ref(), ask(QUESTION, 48)).await;
    let other = provider();
    // Three at once, as a fusion panel sends them: same prompt, same moment.
    let together =
        futures::future::join_all((0..3).map(|_| complete(other.as_ref(), ask(QUESTION, 48))))
            .await;
    for c in &together {
        assert_eq!(
            c.choices[0].message.text(),
            alone.choices[0].message.text(),
            "greedy output does not depend on what else is in the batch"
        );
    }
    let prompt = alone.usage.as_ref().unwrap().prompt_tokens;
    let shared: Vec<u64> = together.iter().map(cached).collect();
    assert_eq!(
        shared.iter().filter(|&&n| n == prompt - 1).count(),
        2,
        "two of three copy the prompt the first one decoded: {shared:?} of {prompt}"
    );
}

#[tokio::test]
async fn a_follow_up_turn_reuses_the_finished_sequence() {
    let p = provider();
    let first = complete(p.as_ref(), ask(QUESTION, 24)).await;
    assert_eq!(cached(&first), 0);
    let answer = first.choices[0].message.text();
    let follow_up = request(json!({"model": "smollm2-135m", "temperature": 0,
        "max_tokens": 8, "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Which of them is the longest?"}]}));
    let second = complete(p.as_ref(), follow_up).await;
    let prompt = first.usage.as_ref().unwrap().prompt_tokens;
    assert!(
        cached(&second) >= prompt,
        "the first turn's {prompt} prompt tokens are not decoded again: {}",
        cached(&second)
    );
}

#[tokio::test]
async fn a_cancelled_sequence_leaves_the_others_untouched() {
    let p = provider();
    let alone = complete(p.as_ref(), ask(QUESTION, 40)).await;
    let p = provider();
    let mut doomed = p
        .stream(
            &RequestCtx::new("test"),
            ask("Tell me a long story about a dragon.", 400),
        )
        .await
        .unwrap();
    assert!(doomed.next().await.is_some());
    let kept = tokio::spawn({
        let p = p.clone();
        async move { complete(p.as_ref(), ask(QUESTION, 40)).await }
    });
    // Let both run batched for a while, then hang up on the story.
    for _ in 0..5 {
        doomed.next().await;
    }
    drop(doomed);
    let kept = kept.await.unwrap();
    assert_eq!(
        kept.choices[0].message.text(),
        alone.choices[0].message.text()
    );
}

#[tokio::test]
async fn penalties_curb_repetition_and_bad_values_name_the_field() {
    let p = provider();
    // A small model at temperature 0 repeats itself (asked for a JSON list it says one item
    // again and again): the share of words that repeat an earlier word.
    let repeats = |c: &ChatCompletion| {
        let text = c.choices[0].message.text().to_lowercase();
        let words: Vec<&str> = text
            .split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let distinct: std::collections::HashSet<&str> = words.iter().copied().collect();
        (words.len() - distinct.len()) as f64 / words.len().max(1) as f64
    };
    let prompt = "List the famous landmarks of Paris.";
    let listed = |penalties: Option<Value>| {
        let mut req = ask(prompt, 80);
        req.response_format =
            serde_json::from_value(json!({"type": "json_schema", "json_schema": {
            "name": "landmarks", "schema": {"type": "object", "required": ["landmarks"],
            "properties": {"landmarks": {"type": "array", "items": {"type": "string"}}}}}}))
            .unwrap();
        if let Some(Value::Object(p)) = penalties {
            req.extra.extend(p);
        }
        req
    };
    let free = complete(p.as_ref(), listed(None)).await;
    let penalised = complete(
        p.as_ref(),
        listed(Some(
            json!({"frequency_penalty": 1.0, "repetition_penalty": 1.3}),
        )),
    )
    .await;
    assert!(
        repeats(&penalised) < repeats(&free),
        "{:.2} vs {:.2} of words repeated: {:?} vs {:?}",
        repeats(&penalised),
        repeats(&free),
        penalised.choices[0].message.text(),
        free.choices[0].message.text()
    );
    let mut bad = ask(prompt, 5);
    bad.extra.insert("presence_penalty".into(), Value::from(9));
    let e = p.complete(&RequestCtx::new("test"), bad).await.unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().starts_with("presence_penalty"), "{e}");
}
