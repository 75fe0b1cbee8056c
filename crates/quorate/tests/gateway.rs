//! Black-box tests: the real `quorate serve` on a random port against `quorate-sim`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ask, config, content, eventually, sim, sse, start, Gateway};
use serde_json::{json, Value};

#[tokio::test]
async fn completion_carries_usage_and_exact_cost() {
    let (sim, addr) = sim(&[]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let response = gw.post(&ask("sim/a", "hello world")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sim/a");
    assert!(body["id"].as_str().unwrap().starts_with("gen-"));
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello world"
    );
    let usage = &body["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(2), Some(3))
    );
    assert_eq!(usage["total_tokens"], 5);
    // 2 tokens at $1/Mtok + 3 at $2/Mtok
    assert_eq!(usage["cost"].as_f64(), Some(0.000008));
    assert_eq!(
        sim.requests()[0].body["model"],
        "a",
        "the upstream name goes upstream"
    );
}

#[tokio::test]
async fn upstream_reported_cost_wins_and_paths_alias() {
    let (_sim, addr) = sim(&[("b", json!({"cost": 0.0123}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let response = reqwest::Client::new()
        .post(gw.url("/api/v1/chat/completions"))
        .json(&ask("sim/b", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["cost"].as_f64(), Some(0.0123));
}

#[tokio::test]
async fn models_and_health() {
    let (_sim, addr) = sim(&[]).await;
    let gw = start(&config(addr, ""), &[]).await;
    for path in ["/v1/models", "/api/v1/models"] {
        let list: Value = gw.get_json(path).await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .filter(|id| !id.starts_with("quorate/fusion"))
            .collect();
        assert_eq!(
            ids,
            [
                "local/qwen2.5-coder-0.5b",
                "local/qwen2.5-coder-1.5b",
                "local/smollm2-135m",
                "sim/a",
                "sim/b",
                "simant/c"
            ]
        );
        let a = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "sim/a")
            .unwrap();
        assert_eq!(
            a["pricing"],
            json!({"prompt": "0.000001", "completion": "0.000002"})
        );
        assert_eq!(a["context_length"], 4096);
        assert!(a["supported_parameters"]
            .as_array()
            .unwrap()
            .contains(&json!("tools")));
    }
    let health: Value = gw.get_json("/health").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn stream_reassembles_and_ends_with_usage_then_done() {
    let (_sim, addr) = sim(&[("a", json!({"reply": "one two three four", "token_ms": 5}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let mut body = ask("sim/a", "count");
    body["stream"] = json!(true);

    // As OpenAI does: no usage chunk unless asked for, so every chunk has a choice.
    let (data, _) = sse(gw.post(&body).await).await;
    assert_eq!(content(&data), "one two three four");
    assert_eq!(data.last().unwrap(), "[DONE]");
    for chunk in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert!(
            chunk["choices"][0].is_object() && chunk.get("usage").is_none(),
            "{chunk}"
        );
    }

    body["stream_options"] = json!({"include_usage": true});
    let response = gw.post(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (data, _) = sse(response).await;
    assert_eq!(content(&data), "one two three four");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert_eq!(
        last["usage"]["cost"].as_f64(),
        Some(0.000009),
        "1 prompt token at $1 + 4 at $2 per Mtok"
    );
    let ids: std::collections::HashSet<String> = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every chunk carries the gateway's one id");
}

#[tokio::test]
async fn client_errors_have_status_and_json_body() {
    let (sim, addr) = sim(&[]).await;
    let gw = start(
        config(addr, "")
            .replace("[server]\n", "[server]\nmax_body_bytes = 2000\n")
            .as_str(),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let post_raw = |body: String| {
        client
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = post_raw("{\"model\": \"sim/a\", \"messages\": [".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["x-should-retry"],
        "false",
        "SDKs must not resend it"
    );
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["status"], 400);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));

    let r = post_raw(
        json!({"model": "sim/a", "messages": [{"role": "user", "content": "x"}], "top_p": 7})
            .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("top_p"),
        "{e}"
    );

    let r = gw.post(&ask("no-such-model", "x")).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/models"));

    let r = gw.post(&ask("sim/a", &"word ".repeat(1000))).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["status"], 413);
    assert_eq!(e["error"]["code"], "request_too_large");

    let r = client
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["status"], 405);
    let r = client.get(gw.url("/v1/embeddings")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let message = r.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().starts_with("not implemented: "),
        "{message}"
    );

    assert!(
        sim.requests().is_empty(),
        "no bad request reached the upstream"
    );
}

#[tokio::test]
async fn upstream_failures_map_to_statuses() {
    let (sim, addr) = sim(&[
        ("fail", json!({"fault": "status", "status": 500})),
        (
            "limited",
            json!({"fault": "status", "status": 429, "retry_after": 7}),
        ),
        ("hang", json!({"fault": "hang"})),
        ("garbage", json!({"fault": "malformed"})),
        (
            "refused",
            json!({"fault": "status", "status": 400, "reply": "bad param"}),
        ),
    ])
    .await;
    let extra = r#"
[models."sim/fail"]
provider = "sim"
[models."sim/limited"]
provider = "sim"
[models."sim/hang"]
provider = "sim"
[models."sim/garbage"]
provider = "sim"
[models."sim/refused"]
provider = "sim"
[models."nokey/x"]
provider = "nokey"
upstream = "x"
[providers.nokey]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "QUORATE_TEST_UNSET_KEY"
"#;
    let gw = start(&config(addr, extra), &[]).await;

    let r = gw.post(&ask("sim/fail", "x")).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["metadata"]["upstream_status"], 500);
    assert_eq!(sim.stats().requests["fail"], 3, "one try and two retries");

    // A Retry-After beyond max_retry_after_s is not waited for; the caller gets it.
    let r = gw.post(&ask("sim/limited", "x")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(
        r.headers().get("x-should-retry").is_none(),
        "a later try may pass"
    );
    assert_eq!(sim.stats().requests["limited"], 1);

    let r = gw.post(&ask("sim/hang", "x")).await;
    assert_eq!(r.status(), 408);

    let r = gw.post(&ask("sim/garbage", "x")).await;
    assert_eq!(r.status(), 502);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));

    let r = gw.post(&ask("sim/refused", "x")).await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad param"));
    assert_eq!(
        sim.stats().requests["refused"],
        1,
        "a rejected request is not retried"
    );

    let r = gw.post(&ask("nokey/x", "x")).await;
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("QUORATE_TEST_UNSET_KEY"));
}

#[tokio::test]
async fn retries_recover_from_transient_failures() {
    let (sim, addr) = sim(&[
        (
            "a",
            json!({"fault": "status", "status": 503, "fail_first": 2}),
        ),
        (
            "b",
            json!({"fault": "status", "status": 429, "retry_after": 1, "fail_first": 1}),
        ),
        (
            "busy",
            json!({"fault": "status", "status": 503, "retry_after": 1, "fail_first": 1}),
        ),
        (
            "down",
            json!({"fault": "status", "status": 503, "retry_after": 1}),
        ),
    ])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let r = gw.post(&ask("sim/a", "x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.stats().requests["a"], 3);
    let started = std::time::Instant::now();
    let r = gw.post(&ask("sim/b", "x")).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was honoured"
    );
    assert_eq!(sim.stats().requests["b"], 2);

    // A 503's Retry-After is honoured as a 429's is, and passed on when retries run out.
    let started = std::time::Instant::now();
    let r = gw.post(&ask("sim/busy", "x")).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited before retrying"
    );
    let r = gw.post(&ask("sim/down", "x")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
}

#[tokio::test]
async fn fallbacks_from_request_and_config() {
    let (sim, addr) = sim(&[
        ("a", json!({"fault": "status", "status": 500})),
        ("b", json!({"reply": "from b"})),
    ])
    .await;
    let extra = r#"
[models."sim/a2"]
provider = "sim"
upstream = "a"
fallbacks = ["sim/b"]
"#;
    let gw = start(&config(addr, extra), &[]).await;
    let mut body = ask("sim/a", "x");
    body["models"] = json!(["sim/b"]);
    let r: Value = gw.post(&body).await.json().await.unwrap();
    assert_eq!(r["model"], "sim/b");
    assert_eq!(r["choices"][0]["message"]["content"], "from b");
    assert!(
        sim.requests()
            .iter()
            .all(|q| q.body.get("models").is_none()),
        "the fallback list stays in the gateway"
    );

    let r: Value = gw.post(&ask("sim/a2", "x")).await.json().await.unwrap();
    assert_eq!(r["model"], "sim/b");

    // OpenRouter takes `models` alone: the first is the model.
    let alone =
        json!({"models": ["sim/a", "sim/b"], "messages": [{"role": "user", "content": "x"}]});
    let r: Value = gw.post(&alone).await.json().await.unwrap();
    assert_eq!(r["model"], "sim/b", "{r}");
    let neither = json!({"messages": [{"role": "user", "content": "x"}]});
    let r = gw.post(&neither).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("model: required"),
        "{e}"
    );

    let mut body = ask("sim/a", "x");
    body["stream"] = json!(true);
    body["models"] = json!(["sim/b"]);
    let r = gw.post(&body).await;
    assert_eq!(r.status(), 200);
    let (data, _) = sse(r).await;
    assert_eq!(content(&data), "from b");
}

/// Every way a request can be answered (JSON, SSE, fusion SSE, an error, an unknown route) names
/// the request in `x-request-id` and says what the gateway itself spent in `Server-Timing`; the
/// id reaches the upstream.
#[tokio::test]
async fn every_response_path_carries_the_request_id_and_server_timing() {
    let (sim, addr) = sim(&[("a", json!({"reply": "Paris."}))]).await;
    let extra = "[presets.t]\npanel = [\"sim/a\", \"sim/a\"]\nsynthesizer = \"sim/a\"\n";
    let gw = start(&config(addr, extra), &[]).await;
    let mut streamed = ask("sim/a", "x");
    streamed["stream"] = json!(true);
    let mut fused = ask("quorate/fusion:t", "x");
    fused["stream"] = json!(true);
    let plain = gw.post(&ask("sim/a", "x")).await;
    let id = plain.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["id"], id, "the request id is the completion's id");
    assert_eq!(
        sim.requests()[0].headers["x-request-id"],
        id,
        "and goes upstream"
    );
    let responses = [
        gw.post(&streamed).await,
        gw.post(&fused).await,
        gw.post(&ask("ghost", "x")).await,
        reqwest::get(format!("{}/nowhere", gw.base)).await.unwrap(),
    ];
    for response in responses {
        let headers = response.headers();
        if response.url().path().ends_with("/chat/completions") {
            assert_eq!(
                headers["x-quorate-run-id"], headers["x-request-id"],
                "the run is kept under the request id"
            );
        }
        assert!(
            headers["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("gen-"),
            "{}",
            response.url()
        );
        let timing = headers["server-timing"].to_str().unwrap();
        assert!(
            timing.starts_with("upstream;dur="),
            "{}: {timing}",
            response.url()
        );
    }
}

/// A stream that breaks before its first token is an attempt too: named, with its own time.
#[tokio::test]
async fn a_stream_broken_before_content_is_listed_as_an_attempt() {
    let (_sim, addr) = sim(&[
        ("early", json!({"fault": "malformed"})),
        ("down", json!({"fault": "status", "status": 400})),
    ])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let mut body = ask("sim/early", "x");
    body["stream"] = json!(true);
    body["models"] = json!(["sim/down"]);
    let (data, _) = sse(gw.post(&body).await).await;
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let attempts = error["error"]["metadata"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{error}");
    assert_eq!(attempts[0]["model"], "sim/early");
    assert_eq!(attempts[0]["retry"], 0);
    assert!(
        attempts[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("sim/early"),
        "{error}"
    );
    assert_eq!(attempts[1]["model"], "sim/down");
}

/// A chain that fails everywhere answers with the last attempt's kind and lists every try:
/// the retries of the first model, then the fallback.
#[tokio::test]
async fn a_failed_fallback_chain_lists_every_attempt() {
    let (_sim, addr) = sim(&[
        ("a", json!({"fault": "status", "status": 500})),
        (
            "b",
            json!({"fault": "status", "status": 429, "retry_after": 60}),
        ),
    ])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let mut body = ask("sim/a", "x");
    body["models"] = json!(["sim/b"]);
    let r = gw.post(&body).await;
    assert_eq!(r.status(), 429, "the last attempt decides");
    assert_eq!(r.headers()["retry-after"], "60");
    let error: Value = r.json().await.unwrap();
    let attempts = error["error"]["metadata"]["attempts"].as_array().unwrap();
    let tried: Vec<(&str, u64, u64, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["model"].as_str().unwrap(),
                a["retry"].as_u64().unwrap(),
                a["status"].as_u64().unwrap(),
                a["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            ("sim/a", 0, 502, "upstream_error"),
            ("sim/a", 1, 502, "upstream_error"),
            ("sim/a", 2, 502, "upstream_error"),
            ("sim/b", 0, 429, "rate_limited"),
        ]
    );
    assert!(attempts.iter().all(|a| a["provider"] == "sim"));
}

#[tokio::test]
async fn stream_falls_back_before_content_but_not_after() {
    let (sim, addr) = sim(&[
        ("early", json!({"fault": "malformed"})),
        (
            "late",
            json!({"fault": "error_event", "reply": "a b c d", "cut_after": 2}),
        ),
        (
            "cut",
            json!({"fault": "cut", "reply": "a b c d", "cut_after": 2}),
        ),
        ("b", json!({"reply": "backup"})),
    ])
    .await;
    let extra = r#"
[models."sim/early"]
provider = "sim"
fallbacks = ["sim/b"]
[models."sim/late"]
provider = "sim"
fallbacks = ["sim/b"]
[models."sim/cut"]
provider = "sim"
fallbacks = ["sim/b"]
"#;
    let gw = start(&config(addr, extra), &[]).await;
    let streaming = |model: &str| {
        let mut body = ask(model, "x");
        body["stream"] = json!(true);
        body
    };
    let (data, _) = sse(gw.post(&streaming("sim/early")).await).await;
    assert_eq!(content(&data), "backup");
    assert_eq!(data.last().unwrap(), "[DONE]");

    for model in ["sim/late", "sim/cut"] {
        let r = gw.post(&streaming(model)).await;
        assert_eq!(r.status(), 200);
        let (data, _) = sse(r).await;
        assert_eq!(
            content(&data),
            "a b ",
            "{model}: content before the failure arrives"
        );
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(
            last["error"]["status"], 502,
            "{model}: error reported in-stream: {last}"
        );
        assert!(!data.contains(&"[DONE]".to_string()));
    }
    assert_eq!(
        sim.stats().requests["b"],
        1,
        "no fallback once content was sent"
    );
}

#[tokio::test]
async fn slow_drip_stream_is_reassembled() {
    let (_sim, addr) = sim(&[(
        "a",
        json!({"fault": "drip", "reply": "split into single bytes", "drip_ms": 0}),
    )])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let mut body = ask("sim/a", "x");
    body["stream"] = json!(true);
    let (data, _) = sse(gw.post(&body).await).await;
    assert_eq!(content(&data), "split into single bytes");
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn keepalives_flow_while_upstream_thinks() {
    let (_sim, addr) = sim(&[("a", json!({"reply": "done", "ttft_ms": 1200}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let mut body = ask("sim/a", "x");
    body["stream"] = json!(true);
    let (data, raw) = sse(gw.post(&body).await).await;
    assert!(
        raw.matches(": quorate processing\n\n").count() >= 2,
        "{raw}"
    );
    assert_eq!(content(&data), "done");
}

#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let (sim, addr) = sim(&[
        ("a", json!({"reply": "slow", "ttft_ms": 5000})),
        ("b", json!({"reply": "a b c d e f g h", "token_ms": 400})),
    ])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let result = client
        .post(gw.url("/v1/chat/completions"))
        .json(&ask("sim/a", "x"))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    assert!(
        eventually(|| sim.stats().cancelled == 1).await,
        "non-streaming upstream call dropped: {:?}",
        sim.stats()
    );

    let mut body = ask("sim/b", "x");
    body["stream"] = json!(true);
    let mut response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap();
    assert!(first.is_some());
    drop(response);
    assert!(
        eventually(|| sim.stats().cancelled == 2).await,
        "streaming upstream call dropped: {:?}",
        sim.stats()
    );
    assert_eq!(sim.stats().completed, 0);
}

#[tokio::test]
async fn unknown_fields_and_tool_calls_round_trip() {
    let (sim, addr) = sim(&[(
        "a",
        json!({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
    )])
    .await;
    let gw = start(&config(addr, ""), &[]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({
        "model": "sim/a",
        "messages": [{"role": "user", "content": "weather in Oslo?"}],
        "tools": tools, "tool_choice": "auto", "seed": 42, "response_format": {"type": "text"},
        "logprobs": false, "stop": ["\n\n"], "provider": {"order": ["x"]}, "custom_extra": {"nested": [1, 2]}
    });
    let r: Value = gw.post(&body).await.json().await.unwrap();
    let call = &r["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
    let sent = &sim.requests()[0].body;
    for key in [
        "tools",
        "tool_choice",
        "seed",
        "response_format",
        "logprobs",
        "stop",
        "provider",
        "custom_extra",
    ] {
        assert_eq!(sent[key], body[key], "{key} forwarded unchanged");
    }

    let follow_up = json!({
        "model": "sim/a",
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": -3}"}
        ],
        "sim": {"reply": "It is -3 in Oslo."}
    });
    let r: Value = gw.post(&follow_up).await.json().await.unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "It is -3 in Oslo.");
    let sent = &sim.requests()[1].body;
    assert_eq!(
        sent["messages"], follow_up["messages"],
        "tool call and tool message round-trip"
    );

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (data, _) = sse(gw.post(&streaming).await).await;
    let args: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Oslo"})
    );
}

#[tokio::test]
async fn gateway_keys_are_required_when_configured() {
    let (_sim, addr) = sim(&[]).await;
    let cfg = config(addr, "").replace(
        "[server]\n",
        "[server]\napi_keys_env = \"QUORATE_TEST_KEYS\"\n",
    );
    let gw = start(&cfg, &[("QUORATE_TEST_KEYS", "k-one, k-two")]).await;
    let client = reqwest::Client::new();
    let send = |key: Option<&str>| {
        let mut r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&ask("sim/a", "x"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = send(None).await.unwrap();
    assert_eq!(r.status(), 401);
    let e = r.json::<Value>().await.unwrap();
    assert_eq!(e["error"]["status"], 401);
    assert_eq!(
        (&e["error"]["type"], &e["error"]["code"]),
        (&json!("authentication_error"), &json!("invalid_api_key"))
    );
    assert_eq!(send(Some("k-three")).await.unwrap().status(), 401);
    assert_eq!(send(Some("k-two")).await.unwrap().status(), 200);
    assert_eq!(
        client
            .get(gw.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client.get(gw.url("/health")).send().await.unwrap().status(),
        200
    );
    // The Anthropic surface's token count, keyless: refused in Anthropic's shape.
    let r = client
        .post(gw.url("/v1/messages/count_tokens"))
        .json(&json!({"model": "sim/a", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e = r.json::<Value>().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error", "{e}");
}

#[tokio::test]
async fn gateway_refuses_to_start_with_an_empty_key_list() {
    let (_sim, addr) = sim(&[]).await;
    let cfg = config(addr, "").replace(
        "[server]\n",
        "[server]\napi_keys_env = \"QUORATE_TEST_NO_KEYS\"\n",
    );
    let path =
        std::env::temp_dir().join(format!("quorate-test-nokeys-{}.toml", std::process::id()));
    std::fs::write(&path, cfg).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("QUORATE_TEST_NO_KEYS"));
}

#[tokio::test]
async fn anthropic_provider_round_trips() {
    let (sim, addr) = sim(&[("c", json!({"reply": "bonjour le monde"}))]).await;
    let gw = start(
        &config(addr, ""),
        &[("SIM_ANTHROPIC_KEY", "ant-secret-key")],
    )
    .await;
    let body = json!({"model": "simant/c", "messages": [
        {"role": "system", "content": "speak French"}, {"role": "user", "content": "hello"}], "seed": 1});
    let r: Value = gw.post(&body).await.json().await.unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "bonjour le monde");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    // 3 prompt tokens at $3/Mtok + 3 completion at $15/Mtok
    assert_eq!(r["usage"]["cost"].as_f64(), Some(0.000054));
    let sent = &sim.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "ant-secret-key");
    assert_eq!(sent.body["system"], "speak French");
    assert!(sent.body.get("seed").is_none());

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (data, _) = sse(gw.post(&streaming).await).await;
    assert_eq!(content(&data), "bonjour le monde");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn api_keys_never_reach_errors_or_logs() {
    let secret = "sk-test-do-not-leak-123456";
    let (sim, addr) = sim(&[("a", json!({"fault": "status", "status": 401, "reply": format!("Incorrect API key provided: {secret}")}))]).await;
    let cfg = config(addr, "").replace(
        "timeout_s = 2\nmax_retries = 2",
        "timeout_s = 2\nmax_retries = 2\napi_key_env = \"SIM_OPENAI_KEY\"",
    );
    let mut gw = start(&cfg, &[("SIM_OPENAI_KEY", secret)]).await;
    let r = gw.post(&ask("sim/a", "x")).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("credentials"));
    assert_eq!(
        sim.requests()[0].headers["authorization"],
        format!("Bearer {secret}"),
        "the key went upstream"
    );
    gw.child.start_kill().unwrap();
    let _ = gw.child.wait().await;
    let logs = (&mut gw.stderr).await.unwrap();
    assert!(
        logs.contains("completion failed"),
        "the failure is logged: {logs}"
    );
    assert!(!logs.contains(secret));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (_sim, addr) = sim(&[("a", json!({"reply": "finished", "ttft_ms": 800}))]).await;
    let mut gw = start(&config(addr, ""), &[]).await;
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&ask("sim/a", "x"))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = gw.child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&ask("sim/a", "x"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "finished");
    let status = tokio::time::timeout(Duration::from_secs(5), gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn embedded_local_model_serves_with_no_configuration() {
    let gw = start("", &[]).await;
    let mut body = ask("local/smollm2-135m", "Which city is the capital of France?");
    body["temperature"] = json!(0);
    body["max_tokens"] = json!(30);
    let r: Value = gw.post(&body).await.json().await.unwrap();
    assert!(
        r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{r}"
    );
    assert_eq!(r["usage"]["cost"].as_f64(), Some(0.0));
    body["stream"] = json!(true);
    let (data, _) = sse(gw.post(&body).await).await;
    assert!(content(&data).contains("Paris"));
    let list: Value = gw.get_json("/v1/models").await;
    let local = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "local/smollm2-135m")
        .unwrap();
    assert_eq!(local["pricing"], json!({"prompt": "0", "completion": "0"}));
}

#[tokio::test]
async fn ask_answers_from_the_embedded_model() {
    let dir = std::env::temp_dir();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args([
            "ask",
            "--model",
            "local/smollm2-135m",
            "--temperature",
            "0",
            "--usage",
            "Which city is the capital of France?",
        ])
        .current_dir(&dir)
        .env_remove("QUORATE_CONFIG")
        .env_remove("QUORATE_MODEL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Paris"), "{stdout}");
    assert!(stderr.contains("cost $0"), "{stderr}");
}

/// `quorate ask ARGS` with the built-in config (the embedded default).
async fn run_ask(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("ask")
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("QUORATE_CONFIG")
        .env_remove("QUORATE_MODEL")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .await
        .unwrap()
}

/// `quorate ask --json ARGS` with the built-in config: the completion.
async fn ask_json(args: &[&str]) -> Value {
    let out = run_ask(&[&["--json"], args].concat()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fuse` keeps the answer's format: a question asking for one letter gets one letter back from
/// the embedded model's panel, judge and synthesis, not a sentence about it.
#[tokio::test]
async fn fuse_answers_a_one_letter_question_with_one_letter() {
    let question = "Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\n\
                    D. Saturn\nAnswer with the letter of the right option only.";
    let body = ask_json(&["--strategy", "fuse", question]).await;
    assert_eq!(body["fusion"]["strategy"], "fuse");
    assert!(
        body["fusion"]["analysis"].is_object(),
        "the judge ran: {body}"
    );
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    let letter = answer
        .trim()
        .trim_end_matches('.')
        .trim_matches(['(', ')', '*']);
    assert!(
        ["A", "B", "C", "D"].contains(&letter),
        "one letter asked, got {answer:?}\n{}",
        body["fusion"]
    );
}

/// `quorate ask --strategy auto --exit-quorum 3` on the embedded model: the run exits early only
/// when all three members agree (then nothing is cancelled and no judge runs), else it fuses;
/// a quorum below a strict majority is refused before any model loads.
#[tokio::test]
async fn ask_takes_an_exit_quorum_for_auto() {
    let body = ask_json(&[
        "--strategy",
        "auto",
        "--exit-quorum",
        "3",
        "Which city is the capital of France? Answer in one word.",
    ])
    .await;
    let fusion = &body["fusion"];
    let agreement = &fusion["agreement"];
    assert_eq!(agreement["quorum"], 3, "{fusion}");
    if agreement["agreed"] == true {
        assert_eq!(agreement["group"].as_array().map(Vec::len), Some(3));
        assert!(fusion["analysis"].is_null() && fusion["early_exit"].is_null());
    } else {
        assert!(
            fusion["analysis"].is_object(),
            "a split panel fuses: {fusion}"
        );
    }

    let out = run_ask(&["--strategy", "auto", "--exit-quorum", "1", "Hi"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("exit_quorum: must be from 2 (a strict majority of the panel) to 3"),
        "{stderr}"
    );
}

/// The README's main command: fusion on the `local` preset, the embedded model fused with itself.
#[tokio::test]
async fn ask_fuses_the_embedded_model_with_itself() {
    let body = ask_json(&["Which city is the capital of France?"]).await;
    let fusion = &body["fusion"];
    // The default model answers the README's question right through fusion.
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}\n{fusion}");
    assert_eq!(fusion["preset"], "local");
    let panel = fusion["panel"].as_array().unwrap();
    assert_eq!(panel.len(), 3);
    assert!(panel
        .iter()
        .all(|m| m["model"] == "local/qwen2.5-coder-1.5b"));
    assert!(panel.iter().any(|m| m["status"] == "ok"), "{fusion}");
    // The grammar-enforced analysis parses as the schema.
    let analysis = quorate_fusion::Analysis::parse(&fusion["analysis"].to_string());
    assert!(analysis.is_ok(), "{analysis:?} in {fusion}");
    assert_eq!(fusion["failure_reason"], Value::Null);
    // Usage is the sum of every inner call: members, judge, synthesis.
    let key = |u: &Value, k: &str| u[k].as_u64().unwrap();
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        let members: u64 = panel.iter().map(|m| key(&m["usage"], k)).sum();
        assert_eq!(members, key(&fusion["usage"]["panel"], k));
        let stages =
            members + key(&fusion["usage"]["judge"], k) + key(&fusion["usage"]["synthesis"], k);
        assert_eq!(key(&body["usage"], k), stages, "{k}");
        assert!(key(&fusion["usage"]["judge"], k) > 0 && key(&fusion["usage"]["synthesis"], k) > 0);
    }
    assert_eq!(body["usage"]["cost"].as_f64(), Some(0.0));
}

/// `(upstream, total)` milliseconds from a `Server-Timing` header.
fn server_timing(response: &reqwest::Response) -> (f64, f64) {
    let header = response.headers()["server-timing"].to_str().unwrap();
    let dur = |name: &str| -> f64 {
        let metric = header
            .split(',')
            .map(str::trim)
            .find(|m| m.starts_with(&format!("{name};")))
            .unwrap_or_else(|| panic!("no {name} in {header}"));
        let value = metric.split(';').find_map(|p| p.strip_prefix("dur="));
        value.unwrap().parse().unwrap()
    };
    (dur("upstream"), dur("total"))
}

#[tokio::test]
async fn server_timing_tells_the_upstream_wait_from_the_gateways_own_time() {
    let (_sim, addr) = sim(&[("b", json!({"reply": "late", "ttft_ms": 300}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let response = gw.post(&ask("sim/b", "x")).await;
    assert_eq!(response.status(), 200);
    let (upstream, total) = server_timing(&response);
    assert!(
        upstream >= 300.0,
        "the scripted wait is upstream time: {upstream}"
    );
    assert!(total >= upstream, "{total} < {upstream}");
    assert!(
        total - upstream < 150.0,
        "the 300 ms wait is not counted as the gateway's: {upstream} of {total}"
    );
    // Failed attempts count as upstream time too.
    let (_sim, addr) = sim(&[("b", json!({"fault": "status", "status": 500}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let response = gw.post(&ask("sim/b", "x")).await;
    assert_eq!(response.status(), 502);
    let (upstream, total) = server_timing(&response);
    assert!(upstream > 0.0 && total >= upstream, "{upstream} / {total}");
}

/// Browsers may call the API only from the origins `[server] cors_origins` lists: a preflight
/// from one is answered before any key is asked for; another origin, or no list, gets no CORS
/// headers, so the browser keeps the answer from the page.
#[tokio::test]
async fn cors_allows_only_the_listed_origins() {
    let (_sim, addr) = sim(&[]).await;
    let client = reqwest::Client::new();
    let preflight = |gw: &Gateway, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let listed = config(addr, "")
        .replace(
            "[server]\n",
            "[server]\ncors_origins = [\"http://app.test\"]\napi_keys_env = \"QUORATE_TEST_CORS_KEYS\"\n",
        );
    let gw = start(&listed, &[("QUORATE_TEST_CORS_KEYS", "sk-cors")]).await;
    let r = preflight(&gw, "http://app.test").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(allowed.contains("authorization"), "{allowed}");
    let r = preflight(&gw, "http://evil.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client
        .get(gw.url("/v1/models"))
        .header("origin", "http://app.test")
        .bearer_auth("sk-cors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));

    let off = start(&config(addr, ""), &[]).await;
    let r = preflight(&off, "http://app.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// What an answer would silently drop is refused by name: several choices where one comes back,
/// an image for a model that reads text only. An OpenAI-compatible upstream gets `n` as sent.
#[tokio::test]
async fn requests_a_model_cannot_serve_are_refused_by_field() {
    let (sim, addr) = sim(&[("a", json!({"reply": "one"}))]).await;
    let extra = "[presets.t]\npanel = [\"sim/a\", \"sim/a\"]\nsynthesizer = \"sim/a\"\n";
    let gw = start(&config(addr, extra), &[]).await;
    let refused = |body: Value| {
        let gw = &gw;
        async move {
            let r = gw.post(&body).await;
            assert_eq!(r.status(), 400, "{body}");
            r.json::<Value>().await.unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut fused = ask("quorate/fusion:t", "x");
    fused["n"] = json!(2);
    assert!(refused(fused)
        .await
        .starts_with("n: quorate/fusion:t answers with one choice"));
    let mut local = ask("local/smollm2-135m", "x");
    local["n"] = json!(3);
    assert!(refused(local).await.starts_with("n: "));
    let image = json!({"model": "local/smollm2-135m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    let message = refused(image).await;
    assert!(
        message.starts_with("messages[0].content[1]: local/smollm2-135m reads text only"),
        "{message}"
    );

    let mut passed = ask("sim/a", "x");
    passed["n"] = json!(2);
    assert_eq!(gw.post(&passed).await.status(), 200);
    assert_eq!(
        sim.requests().last().unwrap().body["n"],
        2,
        "forwarded as sent"
    );
}

/// The binary restarts itself with a short OpenMP spin count (llama.cpp's threads would
/// otherwise spin for milliseconds at every barrier and collapse on a busy machine), and keeps
/// what the caller chose.
#[tokio::test]
async fn the_process_runs_with_a_short_openmp_spin() {
    let (_sim, addr) = sim(&[]).await;
    for (env, expected, absent) in [
        (vec![], "GOMP_SPINCOUNT=1000", "OMP_WAIT_POLICY="),
        (
            vec![("OMP_WAIT_POLICY", "passive")],
            "OMP_WAIT_POLICY=passive",
            "GOMP_SPINCOUNT=",
        ),
        (
            vec![("GOMP_SPINCOUNT", "50000")],
            "GOMP_SPINCOUNT=50000",
            "OMP_WAIT_POLICY=",
        ),
    ] {
        let gw = start(&config(addr, ""), &env).await;
        let pid = gw.child.id().unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let text = String::from_utf8_lossy(&environ);
        assert!(vars.contains(&expected.as_bytes()), "{text}");
        assert!(
            !vars.iter().any(|v| v.starts_with(absent.as_bytes())),
            "{text}"
        );
        // Still serving, under the pid that was started.
        assert_eq!(gw.post(&ask("sim/a", "x")).await.status(), 200);
    }
}
