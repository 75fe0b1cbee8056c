//! The surfaces beside chat completions (Anthropic Messages, OpenAI Responses) reach upstreams as
//! the same internal request: what the simulator receives is checked here; the official SDKs
//! drive them in tests/python.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, sim, start};
use serde_json::{json, Value};

async fn post(gw: &common::Gateway, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// `previous_response_id` sends the earlier turns (input and answer, oldest first) before the new
/// input; the earlier instructions are not carried over.
#[tokio::test]
async fn previous_response_id_sends_the_earlier_turns() {
    let (sim, addr) = sim(&[("a", json!({"reply": "noted"}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let first = post(
        &gw,
        "/v1/responses",
        json!({"model": "sim/a", "instructions": "be terse", "input": "my name is Ada"}),
    )
    .await;
    let first_id = first["id"].as_str().unwrap().to_string();
    // At once: a run written a moment ago is waited for.
    let second = post(
        &gw,
        "/v1/responses",
        json!({"model": "sim/a", "input": "what is my name?",
        "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(second["output"][0]["content"][0]["text"], "noted");
    let sent = sim.requests().last().unwrap().body.clone();
    let turns: Vec<(&str, &str)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("user", "my name is Ada"),
            ("assistant", "noted"),
            ("user", "what is my name?")
        ]
    );
    assert!(
        sent.get("previous_response_id").is_none(),
        "never sent upstream"
    );
}

/// A Messages request arrives upstream as the chat request it stands for.
#[tokio::test]
async fn a_messages_request_reaches_the_upstream_as_chat() {
    let (sim, addr) = sim(&[("a", json!({"reply": "hi"}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let message = post(
        &gw,
        "/v1/messages",
        json!({"model": "sim/a", "max_tokens": 20,
        "system": "be kind", "stop_sequences": ["END"], "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]}]}),
    )
    .await;
    assert_eq!(message["content"][0]["text"], "hi");
    let sent = sim.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be kind"})
    );
    assert_eq!(sent["messages"][1]["content"][0]["text"], "hello");
    assert_eq!(
        (&sent["max_tokens"], &sent["stop"]),
        (&json!(20), &json!(["END"]))
    );
}

/// OpenAI still accepts the legacy `function` role (a function's result, named): so does the
/// gateway, and an OpenAI-compatible upstream gets it as sent; without its `name` it is a 400.
#[tokio::test]
async fn legacy_function_messages_are_accepted() {
    let (sim, addr) = sim(&[("a", json!({"reply": "warm"}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let call = json!({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"});
    let mut messages = vec![
        json!({"role": "user", "content": "weather?"}),
        json!({"role": "assistant", "content": null, "function_call": call}),
        json!({"role": "function", "name": "get_weather", "content": "21 C"}),
    ];
    let answer = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "sim/a", "messages": messages}),
    )
    .await;
    assert_eq!(answer["choices"][0]["message"]["content"], "warm");
    let sent = sim.requests().last().unwrap().body.clone();
    assert_eq!(sent["messages"][2], messages[2]);
    assert_eq!(sent["messages"][1]["function_call"], call);

    messages[2].as_object_mut().unwrap().remove("name");
    let refused = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "sim/a", "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages[2].name"),
        "{body}"
    );
}
