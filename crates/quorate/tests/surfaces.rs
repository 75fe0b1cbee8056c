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

/// One error, two dialects: on `/v1` OpenAI's (`code` a name frameworks match on, the status as
/// `status`), on `/api/v1` OpenRouter's (`code` the status); both carry `type` and `param`.
/// In-stream errors follow the same rule.
#[tokio::test]
async fn errors_speak_openai_on_v1_and_openrouter_on_api_v1() {
    let too_long = "This model's maximum context length is 4097 tokens, you asked for 9000";
    let (_sim, addr) = sim(&[
        (
            "long",
            json!({"fault": "status", "status": 400, "reply": too_long}),
        ),
        ("cut", json!({"fault": "cut", "reply": "a b c d e f"})),
    ])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let client = reqwest::Client::new();
    let call = |path: &'static str, body: Value| {
        let request = client.post(gw.url(path)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = call("/v1/chat/completions", common::ask("sim/long", "x")).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 400);
    let error = &body["error"];
    assert_eq!(
        (&error["code"], &error["type"], &error["status"]),
        (
            &json!("context_length_exceeded"),
            &json!("invalid_request_error"),
            &json!(400)
        ),
        "{body}"
    );
    assert!(error["param"].is_null() && error["message"].as_str().unwrap().contains("4097"));

    let (status, body) = call("/api/v1/chat/completions", common::ask("sim/long", "x")).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        (&body["error"]["code"], &body["error"]["type"]),
        (&json!(400), &json!("invalid_request_error")),
        "{body}"
    );
    assert!(body["error"].get("status").is_none());

    // The Responses surface names the same error the same way.
    let (status, body) = call("/v1/responses", json!({"model": "sim/long", "input": "x"})).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("context_length_exceeded")),
        "{body}"
    );

    let mut streamed = common::ask("sim/cut", "x");
    streamed["stream"] = json!(true);
    for (path, code) in [
        ("/v1/chat/completions", json!("invalid_response")),
        ("/api/v1/chat/completions", json!(502)),
    ] {
        let (status, text) = call(path, streamed.clone()).await;
        assert_eq!(status, 200, "{text}");
        let event = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .find(|d| d.starts_with("{\"error\""))
            .unwrap_or_else(|| panic!("{path}: no error event in {text}"));
        let event: Value = serde_json::from_str(event).unwrap();
        assert_eq!(event["error"]["code"], code, "{path}: {event}");
    }

    let (status, body) = call("/v1/nothing/here", json!({})).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &body["error"]["status"]), (404, &json!(404)));
}

async fn count(gw: &common::Gateway, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(gw.url("/v1/messages/count_tokens"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `count_tokens` on an Anthropic model asks the upstream, with only the fields a count takes
/// (the simulator, like Anthropic, refuses `max_tokens`); a model whose API cannot count and a
/// fusion (by its slug or by the plugin) get a 400 in Anthropic's error shape.
#[tokio::test]
async fn count_tokens_asks_an_anthropic_upstream_and_refuses_what_cannot_count() {
    let (sim, addr) = sim(&[]).await;
    let gw = start(&config(addr, ""), &[("SIM_ANTHROPIC_KEY", "k")]).await;
    let body = json!({"model": "simant/c", "system": "be brief",
        "messages": [{"role": "user", "content": "three words here"}]});
    let (status, counted) = count(&gw, body).await;
    assert_eq!((status, &counted), (200, &json!({"input_tokens": 5})));
    let sent = sim.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.body["model"], "c");
    assert!(sent.body.get("max_tokens").is_none(), "{}", sent.body);

    let plugin = json!([{"id": "fusion", "analysis_models": ["sim/a", "sim/b"]}]);
    for (model, plugins) in [
        ("sim/a", None),
        ("quorate/fusion", None),
        ("simant/c", Some(&plugin)),
    ] {
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        if let Some(plugins) = plugins {
            body["plugins"] = plugins.clone();
        }
        let (status, error) = count(&gw, body).await;
        assert_eq!(status, 400, "{model}: {error}");
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(model), "{model}: {message}");
    }
}

/// A local model counts with its own tokenizer and chat template: the same number its answer
/// reports as `prompt_tokens`.
#[tokio::test]
async fn count_tokens_on_a_local_model_matches_its_prompt_tokens() {
    let gw = start("", &[]).await;
    let messages = json!([{"role": "user", "content": "Which city is the capital of France?"}]);
    let (status, counted) = count(
        &gw,
        json!({"model": "local/smollm2-135m", "messages": messages}),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    let answer: Value = gw
        .post(&json!({"model": "local/smollm2-135m", "messages": messages, "max_tokens": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        counted["input_tokens"], answer["usage"]["prompt_tokens"],
        "{answer}"
    );
    assert!(counted["input_tokens"].as_u64().unwrap() > 8);

    // What a generation refuses, a count refuses: an image for a model that reads text only.
    let image = json!({"model": "local/smollm2-135m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]});
    let (status, error) = count(&gw, image).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("reads text only"));

    // A prompt past the model's context is OpenAI's context_length_exceeded.
    let long = json!({"model": "local/smollm2-135m", "max_tokens": 1,
        "messages": [{"role": "user", "content": "word ".repeat(9000)}]});
    let response = gw.post(&long).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
}

/// On every surface, a stream that fails before its first output within one keep-alive
/// interval (0.3 s here) gets the failure's HTTP status; one that fails later has already started
/// (keep-alives flowed while the upstream was silent) and gets the surface's error event.
#[tokio::test]
async fn a_stream_failing_late_has_started_with_keepalives_on_every_surface() {
    let fault = |ttft_ms: u64| json!({"fault": "status", "status": 400, "reply": "bad input", "ttft_ms": ttft_ms});
    let (_sim, addr) = sim(&[("a", fault(0)), ("b", fault(1000))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let client = reqwest::Client::new();
    let user = json!([{"role": "user", "content": "x"}]);
    let surfaces = [
        (
            "/v1/messages",
            json!({"max_tokens": 5, "messages": user}),
            "event: error",
        ),
        ("/v1/responses", json!({"input": "x"}), "response.failed"),
        (
            "/v1/chat/completions",
            json!({"messages": user}),
            "data: {\"error\"",
        ),
    ];
    for (path, body, error_event) in surfaces {
        for (model, late) in [("sim/a", false), ("sim/b", true)] {
            let mut body = body.clone();
            body["model"] = json!(model);
            body["stream"] = json!(true);
            let response = client.post(gw.url(path)).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let raw = response.text().await.unwrap();
            assert!(raw.contains("bad input"), "{path} {model}: {raw}");
            if late {
                assert_eq!(status, 200, "{path} {model}: {raw}");
                assert!(raw.contains(": quorate processing\n\n"), "{path}: {raw}");
                assert!(raw.contains(error_event), "{path}: {raw}");
            } else {
                assert_eq!(status, 400, "{path} {model}: {raw}");
            }
        }
    }
}
