//! The fusion pipeline end to end: the real `quorate serve` in front of `quorate-sim`, whose
//! scripted models play the panel, the judge and the synthesizer.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, content, eventually, sim, sse, start, Gateway};
use quorate_sim::Sim;
use serde_json::{json, Value};

const SYNTHESIS: &str = "The capital of France is Paris, on the Seine.";

fn analysis() -> Value {
    json!({
        "consensus": ["Paris is the capital of France"],
        "contradictions": [],
        "partial_coverage": [{"point": "the Seine", "models": ["#3"]}],
        "unique_insights": [{"insight": "Paris lies on the Seine", "model": "#3"}],
        "blind_spots": ["population figures"]
    })
}

const OUTER_ANSWER: &str = "Paris, as the panel agrees.";

/// An outer model that calls the fusion tool, then answers from its result.
fn outer() -> Value {
    json!({"sequence": [
        {"tool_call": {"name": "fusion", "arguments": {}}, "cost": 0.01},
        {"reply": OUTER_ANSWER, "cost": 0.01, "token_ms": 2}
    ]})
}

/// Panel `p1..p3`, judge, synthesizer, each reporting its own cost (sums are exact decimals).
fn scripts() -> Vec<(&'static str, Value)> {
    vec![
        (
            "p1",
            json!({"reply": "Paris is the capital.", "cost": 0.001}),
        ),
        ("p2", json!({"reply": "It is Paris.", "cost": 0.002})),
        (
            "p3",
            json!({"reply": "Paris, on the Seine.", "cost": 0.004}),
        ),
        ("judge", json!({"json": analysis(), "cost": 0.0005})),
        (
            "synth",
            json!({"reply": SYNTHESIS, "cost": 0.00025, "token_ms": 5}),
        ),
        (
            "r429",
            json!({"fault": "status", "status": 429, "retry_after": 60}),
        ),
        ("r500", json!({"fault": "status", "status": 500})),
        ("hang", json!({"fault": "hang"})),
        ("slow", json!({"ttft_ms": 5000})),
        (
            "notjson",
            json!({"reply": "Sure! The answers mostly agree."}),
        ),
        (
            "flaky",
            json!({"sequence": [{"reply": "{\"consensus\": "}, {"json": analysis()}]}),
        ),
        ("outer", outer()),
        ("outer_stream", outer()),
        (
            "outer_weather",
            json!({"sequence": [
                {"tool_call": {"name": "fusion", "arguments": {}}},
                {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
            ]}),
        ),
        ("plain", json!({"reply": "No panel needed.", "cost": 0.01})),
        (
            "weather",
            json!({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
        ),
    ]
}

/// A `[presets.<name>]` block; `fields` are further `key = value` lines.
fn preset(name: &str, panel: &[&str], judge: &str, synthesizer: &str, fields: &str) -> String {
    format!("[presets.{name}]\npanel = {panel:?}\njudge = {judge:?}\nsynthesizer = {synthesizer:?}\n{fields}\n")
}

/// Preset `t` (the default) over the sim, research off unless `extra` turns it on; `extra` is
/// appended to the config.
fn fusion_config(addr: std::net::SocketAddr, extra: &str) -> String {
    let presets = r#"
[fusion]
default_preset = "t"

[tools.web_search]
backend = "off"

[tools.web_fetch]
enabled = false

[presets.t]
panel = ["sim/p1", "sim/p2", "sim/p3"]
judge = "sim/judge"
synthesizer = "sim/synth"
member_timeout_s = 1
total_timeout_s = 10
"#;
    config(addr, &format!("{presets}\n{extra}"))
}

async fn setup(extra: &str) -> (Sim, Gateway) {
    let (sim, addr) = sim(&scripts()).await;
    let gw = start(&fusion_config(addr, extra), &[]).await;
    (sim, gw)
}

fn question() -> Value {
    json!([{"role": "system", "content": "Answer briefly."},
           {"role": "user", "content": "Which city is the capital of France?"}])
}

fn with_plugin(plugin: Value) -> Value {
    json!({"model": "quorate/fusion", "messages": question(), "plugins": [plugin]})
}

async fn ok_json(gw: &Gateway, body: &Value) -> Value {
    let response = gw.post(body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Recorded upstream requests for one sim model name.
fn requests_for(sim: &Sim, model: &str) -> Vec<quorate_sim::Recorded> {
    sim.requests()
        .into_iter()
        .filter(|r| r.body["model"] == model)
        .collect()
}

fn member(body: &Value, slot: usize) -> &Value {
    &body["fusion"]["panel"][slot]
}

#[tokio::test]
async fn fusion_slug_runs_panel_judge_and_synthesis_with_exact_usage() {
    let (sim, gw) = setup("").await;
    let body = ok_json(
        &gw,
        &json!({"model": "quorate/fusion", "messages": question()}),
    )
    .await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "quorate/fusion");
    assert_eq!(body["choices"][0]["message"]["content"], SYNTHESIS);
    let fusion = &body["fusion"];
    assert_eq!(fusion["preset"], "t");
    assert_eq!(
        (fusion["judge"].as_str(), fusion["synthesizer"].as_str()),
        (Some("sim/judge"), Some("sim/synth"))
    );
    assert_eq!(fusion["analysis"], analysis());
    assert_eq!(fusion["failure_reason"], Value::Null);
    assert_eq!(fusion["degraded"], false);
    let panel = fusion["panel"].as_array().unwrap();
    assert_eq!(panel.len(), 3);
    for (slot, (model, reply)) in [
        ("sim/p1", "Paris is the capital."),
        ("sim/p2", "It is Paris."),
        ("sim/p3", "Paris, on the Seine."),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(panel[slot]["model"], *model);
        assert_eq!(panel[slot]["status"], "ok");
        assert_eq!(panel[slot]["content"], *reply);
    }

    // Usage is the exact sum of every inner call, with the cost split by stage.
    let usage = &body["usage"];
    let stages = &fusion["usage"];
    let mut tokens = [0u64; 3];
    let stage_usages = [&stages["panel"], &stages["judge"], &stages["synthesis"]];
    for u in stage_usages {
        for (i, key) in ["prompt_tokens", "completion_tokens", "total_tokens"]
            .iter()
            .enumerate()
        {
            tokens[i] += u[key].as_u64().unwrap();
        }
    }
    let member_tokens: u64 = panel
        .iter()
        .map(|m| m["usage"]["completion_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(
        member_tokens,
        stages["panel"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(tokens[0] > 0 && tokens[1] > 0);
    assert_eq!(
        [
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
            usage["total_tokens"].as_u64().unwrap()
        ],
        tokens
    );
    assert_eq!(
        usage["cost"].as_f64(),
        Some(0.00775),
        "0.001 + 0.002 + 0.004 + 0.0005 + 0.00025"
    );
    assert_eq!(
        usage["cost_details"],
        json!({"panel": 0.007, "judge": 0.0005, "synthesis": 0.00025})
    );

    // What the stages were sent.
    let judge = &requests_for(&sim, "judge")[0];
    assert_eq!(
        judge.body["temperature"], 0.0,
        "the judge runs at temperature 0"
    );
    assert_eq!(judge.body["response_format"]["type"], "json_schema");
    let prompt = judge.body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Which city is the capital of France?")
            && prompt.contains("### Answer #2 (sim/p2)\nIt is Paris."),
        "{prompt}"
    );
    let synth = &requests_for(&sim, "synth")[0];
    let messages = synth.body["messages"].as_array().unwrap();
    assert_eq!(
        messages[0]["content"], "Answer briefly.",
        "the caller's system prompt reaches the synthesizer"
    );
    let last = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(
        last.contains("Paris is the capital of France") && last.contains("population figures"),
        "{last}"
    );
    assert!(synth.body.get("tools").is_none() && synth.body.get("temperature").is_none());
    let p1 = &requests_for(&sim, "p1")[0];
    assert_eq!(
        p1.body["messages"],
        question(),
        "members get the whole conversation"
    );
    let note = body["fusion"]["tools_note"].as_str().unwrap();
    assert!(
        note.contains("web_search is off") && note.contains("web_fetch is off"),
        "{note}"
    );
    for r in sim.requests() {
        assert_eq!(
            r.headers.get("x-quorate-fusion-depth").map(String::as_str),
            Some("1"),
            "inner calls are marked"
        );
        assert!(r.body.get("plugins").is_none());
    }
}

#[tokio::test]
async fn plugin_picks_panel_and_self_fusion_slots_get_their_own_seeds() {
    let (sim, gw) = setup("").await;
    let body = ok_json(
        &gw,
        &json!({"model": "openrouter/fusion", "messages": question(), "temperature": 0.2,
                "plugins": [{"id": "fusion", "analysis_models": ["sim/p2", "sim/p2", "sim/p2"],
                             "model": "sim/synth", "judge": "sim/judge", "temperature": 0.9,
                             "max_completion_tokens": 77}]}),
    )
    .await;
    assert_eq!(body["fusion"]["panel"].as_array().unwrap().len(), 3);
    let members = requests_for(&sim, "p2");
    assert_eq!(members.len(), 3);
    let mut seeds: Vec<u64> = members
        .iter()
        .map(|r| r.body["seed"].as_u64().unwrap())
        .collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 3, "each slot samples with its own seed");
    for m in &members {
        assert_eq!(
            m.body["temperature"], 0.9,
            "the plugin's temperature goes to the panel"
        );
        assert_eq!(m.body["max_completion_tokens"], 77);
    }
    assert_eq!(requests_for(&sim, "judge")[0].body["temperature"], 0.0);
    assert_eq!(
        requests_for(&sim, "synth")[0].body["max_completion_tokens"],
        77
    );
    // A plain `fusion` slug and a caller seed give reproducible slot seeds.
    let body = ok_json(
        &gw,
        &json!({"model": "fusion", "messages": question(), "seed": 100}),
    )
    .await;
    let seeds: Vec<u64> = (0..3)
        .map(|i| member(&body, i)["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [100, 101, 102]);
}

#[tokio::test]
async fn failed_members_are_typed_and_the_run_goes_on_with_quorum() {
    let (sim, gw) = setup("").await;
    let body = ok_json(
        &gw,
        &with_plugin(
            json!({"id": "fusion", "analysis_models": ["sim/p1", "sim/r429", "sim/hang"]}),
        ),
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], SYNTHESIS);
    assert_eq!(member(&body, 0)["status"], "ok");
    assert_eq!(member(&body, 1)["status"], "failed");
    assert_eq!(member(&body, 1)["error"]["reason"], "rate_limited");
    assert_eq!(member(&body, 1)["error"]["status"], 429);
    assert_eq!(member(&body, 2)["status"], "timeout");
    assert_eq!(member(&body, 2)["error"]["reason"], "timeout");
    assert!(
        member(&body, 2)["latency_ms"].as_u64().unwrap() < 2000,
        "the member deadline (1 s) cut it"
    );
    assert_eq!(body["fusion"]["degraded"], true);
    assert_eq!(
        body["fusion"]["failed_models"],
        json!(["sim/r429", "sim/hang"])
    );
    let judge = requests_for(&sim, "judge");
    let prompt = judge[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Answer #1") && !prompt.contains("Answer #2"),
        "only answers reach the judge"
    );
    let synth = requests_for(&sim, "synth");
    let last = synth[0].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("the panel was degraded: 2 of 3 members failed"),
        "{last}"
    );
}

#[tokio::test]
async fn quorum_not_met_and_all_failing_are_502_with_a_reason() {
    let extra = preset(
        "strict",
        &["sim/p1", "sim/r500", "sim/r429"],
        "sim/judge",
        "sim/synth",
        "quorum = 2\nmember_timeout_s = 1\ntotal_timeout_s = 10",
    );
    let (_sim, gw) = setup(&extra).await;
    let cases = [
        (
            json!({"model": "quorate/fusion:strict", "messages": question()}),
            "all_panels_failed",
        ),
        (
            with_plugin(json!({"id": "fusion", "analysis_models": ["sim/r429", "sim/r429"]})),
            "rate_limited",
        ),
        (
            with_plugin(json!({"id": "fusion", "analysis_models": ["sim/r500", "sim/r429"]})),
            "all_panels_failed",
        ),
    ];
    for (mut request, reason) in cases {
        for stream in [false, true] {
            request["stream"] = json!(stream);
            let response = gw.post(&request).await;
            assert_eq!(response.status(), 502, "{request}");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "an early failure keeps its status when streaming"
            );
            if reason == "all_panels_failed" {
                // SDKs would run the whole panel again on their own.
                assert_eq!(response.headers()["x-should-retry"], "false");
            }
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["status"], 502);
            assert_eq!(body["error"]["type"], "server_error");
            assert_eq!(
                body["error"]["metadata"]["failure_reason"], reason,
                "{body}"
            );
            let panel = body["error"]["metadata"]["fusion"]["panel"]
                .as_array()
                .unwrap();
            assert!(panel.iter().any(|m| m["status"] == "failed"));
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("panel members answered"));
        }
    }
}

#[tokio::test]
async fn judge_repairs_invalid_json_then_falls_back_then_fails_softly() {
    let extra = preset(
        "chain",
        &["sim/p1", "sim/p2"],
        "sim/notjson",
        "sim/synth",
        "judge_fallbacks = [\"sim/judge\"]",
    );
    let (sim, gw) = setup(&extra).await;
    // Invalid JSON, then valid after the repair prompt.
    let body = ok_json(
        &gw,
        &with_plugin(json!({"id": "fusion", "judge": "sim/flaky"})),
    )
    .await;
    let fusion = &body["fusion"];
    assert_eq!(fusion["analysis"], analysis());
    assert_eq!(fusion["failure_reason"], Value::Null);
    let attempts = fusion["judge_attempts"].as_array().unwrap();
    assert_eq!(
        (
            attempts[0]["ok"].as_bool(),
            attempts[1]["ok"].as_bool(),
            attempts[1]["repair"].as_bool()
        ),
        (Some(false), Some(true), Some(true))
    );
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let repair = &requests_for(&sim, "flaky")[1];
    let messages = repair.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        3,
        "prompt, the bad reply, the repair request"
    );
    assert!(messages[2]["content"]
        .as_str()
        .unwrap()
        .contains("cannot be used"));

    // Invalid twice: the next judge of the chain.
    let body = ok_json(
        &gw,
        &json!({"model": "quorate/fusion:chain", "messages": question()}),
    )
    .await;
    assert_eq!(body["fusion"]["judge"], "sim/judge");
    assert_eq!(body["fusion"]["analysis"], analysis());
    assert_eq!(
        body["fusion"]["judge_attempts"].as_array().unwrap().len(),
        3
    );
    assert_eq!(requests_for(&sim, "notjson").len(), 2);

    // Every judge fails: still a synthesis from the raw answers, with the reason.
    for (judge, reason) in [
        ("sim/notjson", "judge_not_valid_json"),
        ("sim/r500", "judge_upstream_error"),
        ("sim/p1", "judge_not_valid_json"),
    ] {
        let body = ok_json(&gw, &with_plugin(json!({"id": "fusion", "judge": judge}))).await;
        assert_eq!(body["choices"][0]["message"]["content"], SYNTHESIS);
        assert_eq!(body["fusion"]["analysis"], Value::Null);
        assert_eq!(body["fusion"]["failure_reason"], reason, "{judge}");
        assert!(body["fusion"]["failed_models"]
            .as_array()
            .unwrap()
            .contains(&json!(judge)));
    }
    let synth = requests_for(&sim, "synth");
    let last = synth.last().unwrap().body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("No analysis is available (judge_not_valid_json)"),
        "{last}"
    );
}

#[tokio::test]
async fn wrong_shaped_and_empty_judge_replies_are_typed() {
    let (sim, addr) = sim(&[
        ("p1", json!({"reply": "Paris."})),
        ("shape", json!({"json": {"consensus": "Paris"}})),
        ("empty", json!({"reply": ""})),
        ("synth", json!({"reply": SYNTHESIS})),
    ])
    .await;
    let gw = start(&fusion_config(addr, ""), &[]).await;
    for (judge, reason) in [
        ("sim/shape", "judge_schema_mismatch"),
        ("sim/empty", "judge_empty_completion"),
    ] {
        let request = with_plugin(
            json!({"id": "fusion", "analysis_models": ["sim/p1"], "judge": judge, "model": "sim/synth"}),
        );
        let body = ok_json(&gw, &request).await;
        assert_eq!(body["fusion"]["failure_reason"], reason);
    }
    assert_eq!(sim.stats().requests["shape"], 2, "one repair try");
}

#[tokio::test]
async fn the_global_deadline_bounds_the_run() {
    let extra = preset(
        "deadline",
        &["sim/p1"],
        "sim/judge",
        "sim/hang",
        "member_timeout_s = 1\ntotal_timeout_s = 1.5",
    );
    let (_sim, gw) = setup(&extra).await;
    for stream in [false, true] {
        let started = Instant::now();
        let response = gw.post(&json!({"model": "quorate/fusion:deadline", "messages": question(), "stream": stream})).await;
        let error = if stream {
            assert_eq!(
                response.status(),
                200,
                "past the first keep-alive the error comes in-stream"
            );
            let (data, _) = sse(response).await;
            serde_json::from_str::<Value>(data.last().unwrap()).unwrap()
        } else {
            assert_eq!(response.status(), 408);
            response.json().await.unwrap()
        };
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(2500),
            "no hang past total_timeout_s: {elapsed:?}"
        );
        assert_eq!(
            error["error"]["metadata"]["failure_reason"], "timeout",
            "{error}"
        );
        assert_eq!(
            error["error"]["metadata"]["fusion"]["panel"][0]["status"],
            "ok"
        );
    }
}

#[tokio::test]
async fn nested_fusion_is_refused() {
    let (_sim, gw) = setup("").await;
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-quorate-fusion-depth", "1")
        .json(&json!({"model": "quorate/fusion", "messages": question()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("fusion refused"));
    // An inner model cannot be fusion itself.
    let response = gw
        .post(&with_plugin(
            json!({"id": "fusion", "analysis_models": ["sim/p1", "openrouter/fusion"]}),
        ))
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("plugins[0].analysis_models[1]"));
    // An ordinary completion from inside a run is served, and stays marked upstream.
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-quorate-fusion-depth", "1")
        .json(&json!({"model": "sim/p1", "messages": question()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn progress_events_come_only_when_asked_for() {
    let (_sim, gw) = setup("").await;
    let events = |data: &[String]| -> Vec<Value> {
        data.iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v.get("fusion_event").cloned())
            .collect()
    };
    let mut request = with_plugin(json!({"id": "fusion", "stream_progress": true}));
    request["stream"] = json!(true);
    let (data, _) = sse(gw.post(&request).await).await;
    let seen = events(&data);
    let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "member_started").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "member_done").count(), 3);
    let judge_done = kinds.iter().position(|k| *k == "judge_done").unwrap();
    assert!(kinds.iter().rposition(|k| *k == "member_done").unwrap() < judge_done);
    // A watcher sees each answer and the analysis as they come, before the run ends.
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    for done in seen.iter().filter(|e| e["type"] == "member_done") {
        let slot = done["slot"].as_u64().unwrap() as usize;
        assert_eq!(done["content"], last["fusion"]["panel"][slot]["content"]);
    }
    assert_eq!(seen[judge_done]["analysis"], analysis());
    assert_eq!(content(&data), SYNTHESIS);
    let progress: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("fusion_event").is_some())
        .collect();
    assert!(progress
        .iter()
        .all(|v| v["choices"] == json!([]) && v["object"] == "chat.completion.chunk"));

    // As OpenAI streams: every chunk has a choice (the usual `choices[0].delta` loop never
    // fails), and the one that finishes the answer comes last, with the `fusion` object.
    let mut plain = json!({"model": "quorate/fusion", "messages": question(), "stream": true});
    let (data, _) = sse(gw.post(&plain).await).await;
    assert!(events(&data).is_empty(), "no progress chunks unless asked");
    assert_eq!(content(&data), SYNTHESIS);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0].is_object() && c.get("usage").is_none()));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["fusion"]["analysis"], analysis());

    // With `include_usage`, and always on OpenRouter's path: a last chunk with the usage.
    plain["stream_options"] = json!({"include_usage": true});
    let (data, _) = sse(gw.post(&plain).await).await;
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["fusion"]["analysis"], analysis());
    assert_eq!(last["usage"]["cost"].as_f64(), Some(0.00775));
    let mut openrouter = plain.clone();
    openrouter.as_object_mut().unwrap().remove("stream_options");
    let response = reqwest::Client::new()
        .post(gw.url("/api/v1/chat/completions"))
        .json(&openrouter)
        .send()
        .await
        .unwrap();
    let (data, _) = sse(response).await;
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["cost"], last["usage"]["cost"]);
    // Streamed and not, the same usage.
    plain["stream"] = json!(false);
    let body = ok_json(&gw, &plain).await;
    assert_eq!(body["usage"]["cost"], last["usage"]["cost"]);
}

#[tokio::test]
async fn client_disconnect_cancels_every_inner_call() {
    let extra = preset(
        "slow",
        &["sim/slow", "sim/slow", "sim/slow"],
        "sim/judge",
        "sim/synth",
        "member_timeout_s = 30\ntotal_timeout_s = 60",
    );
    let (sim, gw) = setup(&extra).await;
    for stream in [false, true] {
        let before = sim.stats().cancelled;
        let result = reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .timeout(Duration::from_millis(400))
            .json(
                &json!({"model": "quorate/fusion:slow", "messages": question(), "stream": stream}),
            )
            .send()
            .await;
        if let Ok(response) = result {
            drop(response);
        }
        assert!(
            eventually(|| sim.stats().cancelled == before + 3 && sim.stats().in_flight == 0).await,
            "stream={stream}: {:?}",
            sim.stats()
        );
    }
}

fn tool_request(model: &str, tool: Value) -> Value {
    let client_tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    json!({"model": model, "messages": question(), "tools": [client_tool, tool]})
}

fn fusion_tool() -> Value {
    json!({"type": "quorate:fusion", "parameters": {"analysis_models": ["sim/p1", "sim/p2"], "model": "sim/judge"}})
}

#[tokio::test]
async fn the_fusion_tool_runs_when_called_and_the_model_writes_the_answer() {
    let (sim, gw) = setup("").await;
    let body = ok_json(&gw, &tool_request("sim/outer", fusion_tool())).await;
    assert_eq!(body["choices"][0]["message"]["content"], OUTER_ANSWER);
    assert_eq!(body["model"], "sim/outer");
    let fusion = &body["fusion"];
    assert_eq!(fusion["panel"].as_array().unwrap().len(), 2);
    assert_eq!(fusion["analysis"], analysis());
    assert_eq!(
        (fusion["judge"].as_str(), fusion["synthesizer"].as_str()),
        (Some("sim/judge"), Some("sim/outer"))
    );
    // Two outer calls, two members, one judge: every one in the sum.
    assert_eq!(
        body["usage"]["cost"].as_f64(),
        Some(0.0235),
        "0.01 × 2 + 0.001 + 0.002 + 0.0005"
    );
    assert_eq!(
        body["usage"]["cost_details"]["synthesis"].as_f64(),
        Some(0.02)
    );

    let outer = requests_for(&sim, "outer");
    assert_eq!(outer.len(), 2);
    let first_tools = outer[0].body["tools"].as_array().unwrap();
    assert_eq!(
        first_tools[0]["function"]["name"], "get_weather",
        "client tools stay"
    );
    assert_eq!(first_tools[1]["function"]["name"], "fusion");
    assert!(first_tools[1]["function"]["description"]
        .as_str()
        .unwrap()
        .contains("only for questions that merit"));
    let second = &outer[1].body;
    let tools: Vec<&str> = second["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["get_weather"], "fusion is offered once");
    let messages = second["messages"].as_array().unwrap();
    let call = &messages[messages.len() - 2];
    assert_eq!(call["tool_calls"][0]["function"]["name"], "fusion");
    let result = &messages[messages.len() - 1];
    assert_eq!(result["role"], "tool");
    assert_eq!(result["tool_call_id"], call["tool_calls"][0]["id"]);
    let content: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["analysis"], analysis());
    assert_eq!(content["answers"][1]["content"], "It is Paris.");
    // Members never see the fusion tool or the client's tools.
    assert!(requests_for(&sim, "p1")[0].body.get("tools").is_none());
}

#[tokio::test]
async fn a_model_that_does_not_call_the_tool_costs_one_call() {
    let (sim, gw) = setup("").await;
    let body = ok_json(
        &gw,
        &tool_request("sim/plain", json!({"type": "openrouter:fusion"})),
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], "No panel needed.");
    assert!(body.get("fusion").is_none());
    assert_eq!(body["usage"]["cost"].as_f64(), Some(0.01));
    let mut request = tool_request("sim/plain", json!({"type": "quorate:fusion"}));
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let (data, _) = sse(gw.post(&request).await).await;
    assert_eq!(content(&data), "No panel needed.");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["cost"].as_f64(), Some(0.01));
    assert_eq!(sim.stats().requests["plain"], 2, "one call per request");
    assert!(!sim.stats().requests.contains_key("p1"), "no panel ran");

    // A client tool call goes back to the client.
    let body = ok_json(
        &gw,
        &tool_request("sim/weather", json!({"type": "quorate:fusion"})),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn tool_choice_forces_the_call_and_the_answer_streams() {
    let (sim, gw) = setup("").await;
    let mut request = tool_request("sim/outer_stream", fusion_tool());
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    request["tool_choice"] = json!({"type": "quorate:fusion"});
    let (data, _) = sse(gw.post(&request).await).await;
    assert_eq!(content(&data), OUTER_ANSWER);
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["fusion"]["analysis"], analysis());
    assert_eq!(last["usage"]["cost"].as_f64(), Some(0.0235));
    let outer = requests_for(&sim, "outer_stream");
    assert_eq!(
        outer[0].body["tool_choice"],
        json!({"type": "function", "function": {"name": "fusion"}})
    );
    assert!(outer[1].body.get("tool_choice").is_none());
    // "required" passes through unchanged.
    request["tool_choice"] = json!("required");
    request["model"] = json!("sim/plain");
    let _ = sse(gw.post(&request).await).await;
    assert_eq!(
        requests_for(&sim, "plain")[0].body["tool_choice"],
        "required"
    );
}

/// A streamed answer after the fusion tool that calls a client's tool is an answer, not an empty
/// one: the call reaches the client.
#[tokio::test]
async fn a_streamed_follow_up_may_call_a_client_tool() {
    let (_sim, gw) = setup("").await;
    let mut request = tool_request("sim/outer_weather", fusion_tool());
    request["stream"] = json!(true);
    let (data, raw) = sse(gw.post(&request).await).await;
    let chunks: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{raw}");
    let called: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .collect();
    assert!(
        called
            .iter()
            .any(|c| c["function"]["name"] == "get_weather"),
        "{raw}"
    );
}

#[tokio::test]
async fn unknown_server_tools_and_mixed_fusion_are_refused() {
    let (_sim, gw) = setup("").await;
    for (request, field) in [
        (
            tool_request("sim/plain", json!({"type": "quorate:calculator"})),
            "tools[1].type: quorate:calculator",
        ),
        (
            tool_request("quorate/fusion", json!({"type": "quorate:fusion"})),
            "tools[1]",
        ),
        (
            tool_request(
                "sim/plain",
                json!({"type": "quorate:fusion", "parameters": {"colour": 1}}),
            ),
            "tools[1].parameters",
        ),
    ] {
        let response = gw.post(&request).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}"
        );
    }
}
