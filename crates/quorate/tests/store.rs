//! The run store end to end: the real `quorate serve` records every request (pass-through and
//! fusion, JSON and streamed, answered and failed) in its SQLite store, and serves them back on
//! `/v1/runs`, `/v1/runs/{id}` and OpenRouter's `/api/v1/generation`; `quorate runs` reads the
//! same file. With `[store] content = false` no prompt or answer text reaches the file.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, sim, sse, start, Gateway};
use serde_json::{json, Value};

const KEY: &str = "sk-store-test";

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
        (
            "judge",
            json!({"json": {"consensus": ["Paris"], "contradictions": [], "partial_coverage": [],
                            "unique_insights": [], "blind_spots": []}}),
        ),
        (
            "synth",
            json!({"reply": "The capital of France is Paris.", "token_ms": 2}),
        ),
        (
            "a",
            json!({"reply": "bonjour le monde", "cost": 0.5, "token_ms": 2}),
        ),
    ]
}

fn store_config(addr: std::net::SocketAddr, extra: &str) -> String {
    let extra = format!(
        r#"
[fusion]
default_preset = "t"

[tools.web_search]
backend = "off"

[presets.t]
panel = ["sim/p1", "sim/p2", "sim/p3"]
judge = "sim/judge"
synthesizer = "sim/synth"
{extra}
"#
    );
    config(addr, &extra).replace(
        "[server]\n",
        "[server]\napi_keys_env = \"QUORATE_TEST_STORE_KEYS\"\n",
    )
}

async fn gateway(extra: &str) -> (quorate_sim::Sim, Gateway) {
    let (sim, addr) = sim(&scripts()).await;
    let keys = format!("alice:{KEY}");
    let gw = start(
        &store_config(addr, extra),
        &[("QUORATE_TEST_STORE_KEYS", keys.as_str())],
    )
    .await;
    (sim, gw)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let response = client()
        .get(gw.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The run once the writer has written it (batches go out within milliseconds).
async fn run(gw: &Gateway, id: &str) -> Value {
    for _ in 0..200 {
        let (status, body) = get(gw, &format!("/v1/runs/{id}")).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} never appeared in the store");
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn question() -> Value {
    json!([{"role": "user", "content": "Which city is the capital of France?"}])
}

#[tokio::test]
async fn usage_sums_tokens_cost_and_failures_per_day_model_and_kind() {
    let (_sim, gw) = gateway("").await;
    let mut ids = Vec::new();
    for body in [
        json!({"model": "sim/a", "messages": question()}),
        json!({"model": "sim/a", "messages": question(), "stream": true}),
        json!({"model": "quorate/fusion", "messages": question()}),
        json!({"model": "nowhere/x", "messages": question()}),
    ] {
        let response = post(&gw, body).await;
        ids.push(request_id(&response));
        let _ = response.bytes().await;
    }
    let fusion = run(&gw, &ids[2]).await;
    let failed = run(&gw, &ids[3]).await;
    run(&gw, &ids[1]).await;

    let (status, usage) = get(&gw, "/v1/usage").await;
    assert_eq!(status, 200, "{usage}");
    let rows = usage["rows"].as_array().unwrap();
    let row = |model: &str| {
        rows.iter()
            .find(|r| r["model"] == model)
            .unwrap_or_else(|| panic!("no {model} in {usage}"))
    };
    let today = quorate_api::time::iso_date(fusion["created_ms"].as_i64().unwrap() / 1000);
    let plain = row("sim/a");
    assert_eq!(
        (
            &plain["day"],
            &plain["kind"],
            &plain["requests"],
            &plain["failed"]
        ),
        (&json!(today), &json!("completion"), &json!(2), &json!(0))
    );
    assert_eq!(plain["cost_usd"].as_f64(), Some(1.0));
    let fused = row("quorate/fusion");
    assert_eq!(
        (&fused["kind"], &fused["requests"]),
        (&json!("fusion"), &json!(1))
    );
    assert_eq!(fused["cost_usd"], fusion["cost_usd"]);
    assert_eq!(fused["prompt_tokens"], fusion["prompt_tokens"]);
    assert_eq!(row("nowhere/x")["failed"], 1);
    assert_eq!(
        usage["failures"],
        json!([{"reason": failed["error_kind"], "count": 1}])
    );

    // A range with nothing in it, a range the wrong way round, no key.
    let (_, empty) = get(&gw, "/v1/usage?since=0&until=86400").await;
    assert_eq!(empty["rows"], json!([]));
    let (status, refused) = get(&gw, "/v1/usage?since=10&until=5").await;
    assert_eq!(status, 400);
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("since"));
    let anonymous = client().get(gw.url("/v1/usage")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn every_request_is_kept_and_read_back_with_its_figures() {
    let (_sim, gw) = gateway("").await;

    // A pass-through completion: its figures as the client saw them.
    let plain = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
    let plain_id = request_id(&plain);
    let plain_body: Value = plain.json().await.unwrap();
    let kept = run(&gw, &plain_id).await;
    assert_eq!(kept["status"], 200);
    assert_eq!(kept["model"], "sim/a");
    assert_eq!(kept["answered_by"], "sim/a");
    assert_eq!(kept["caller"], "alice", "the key's name, never the key");
    assert_eq!(kept["surface"], "chat");
    assert_eq!(kept["kind"], "completion");
    assert_eq!(kept["prompt_tokens"], plain_body["usage"]["prompt_tokens"]);
    assert_eq!(
        kept["completion_tokens"],
        plain_body["usage"]["completion_tokens"]
    );
    assert_eq!(kept["cost_usd"], 0.5);
    assert_eq!(kept["answer"], "bonjour le monde");
    assert_eq!(
        kept["request"]["messages"][0]["content"],
        "Which city is the capital of France?"
    );
    assert_eq!(kept["attempts"][0]["model"], "sim/a");
    assert_eq!(kept["attempts"][0]["status"], 200);
    assert!(kept["gateway_ms"].as_f64().unwrap() >= 0.0);

    // A stream: its text put together, the time to its first token.
    let stream_id = stream(&gw).await;
    let kept = run(&gw, &stream_id).await;
    assert_eq!(
        (&kept["stream"], &kept["answer"]),
        (&json!(true), &json!("bonjour le monde"))
    );
    let first = kept["first_token_ms"].as_u64().unwrap();
    assert!(first <= kept["latency_ms"].as_u64().unwrap());

    // A fusion run: the plan's members, each answer, the event timeline, every inner attempt.
    let fused = post(
        &gw,
        json!({"model": "quorate/fusion", "messages": question()}),
    )
    .await;
    let fusion_id = request_id(&fused);
    let body: Value = fused.json().await.unwrap();
    let kept = run(&gw, &fusion_id).await;
    assert_eq!(
        (&kept["kind"], &kept["status"]),
        (&json!("fusion"), &json!(200))
    );
    assert_eq!(kept["answer"], "The capital of France is Paris.");
    assert_eq!(kept["cost_usd"].as_f64(), body["usage"]["cost"].as_f64());
    let panel = kept["fusion"]["panel"].as_array();
    let panel = panel.unwrap_or_else(|| panic!("{kept}"));
    let answers: Vec<&str> = panel
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        [
            "Paris is the capital.",
            "It is Paris.",
            "Paris, on the Seine."
        ]
    );
    assert_eq!(kept["fusion"]["analysis"]["consensus"][0], "Paris");
    let models: Vec<&str> = kept["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["model"].as_str().unwrap())
        .collect();
    for model in ["sim/p1", "sim/p2", "sim/p3", "sim/judge", "sim/synth"] {
        assert!(models.contains(&model), "{model} not in {models:?}");
    }
    let times: Vec<u64> = kept["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["t_ms"].as_u64().unwrap())
        .collect();
    assert!(
        times.len() >= 5 && times.windows(2).all(|w| w[0] <= w[1]),
        "{times:?}"
    );
    // The texts live once, in the `fusion` object, not again on the timeline.
    assert!(kept["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| { e["event"].get("content").is_none() && e["event"].get("analysis").is_none() }));

    // A failure is kept with its kind.
    let failed = post(&gw, json!({"model": "nowhere/x", "messages": question()})).await;
    let failed_id = request_id(&failed);
    let kept = run(&gw, &failed_id).await;
    assert_eq!(kept["status"], failed.status().as_u16());
    assert!(
        kept["error_kind"].is_string() && kept["error"].is_string(),
        "{kept}"
    );

    // Pages, newest first, filtered.
    let (_, page) = get(&gw, "/v1/runs?model=sim/a&limit=1").await;
    assert_eq!(page["data"][0]["id"], stream_id.as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = get(
        &gw,
        &format!("/v1/runs?model=sim/a&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(next["data"][0]["id"], plain_id.as_str());
    assert_eq!(next["next_cursor"], Value::Null);
    let (_, all) = get(&gw, "/v1/runs?caller=alice&status=200").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert!(
        all["data"][0].get("answer").is_none(),
        "a list holds figures only"
    );
    let (status, bad) = get(&gw, "/v1/runs?limit=0").await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = get(&gw, "/v1/runs/gen-0-none").await;
    assert_eq!(status, 404);

    // OpenRouter's generation endpoint.
    let (status, generation) = get(&gw, &format!("/api/v1/generation?id={plain_id}")).await;
    assert_eq!(status, 200);
    let data = &generation["data"];
    assert_eq!(
        (&data["id"], &data["model"]),
        (&json!(plain_id), &json!("sim/a"))
    );
    assert_eq!(data["total_cost"], 0.5);
    assert_eq!(
        data["tokens_completion"],
        plain_body["usage"]["completion_tokens"]
    );
    assert_eq!(data["provider_name"], "sim");

    // Gateway keys guard the runs too.
    let anonymous = client().get(gw.url("/v1/runs")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // The CLI reads the same file.
    let text = cli(&gw, &["runs", "list", "--model", "sim/a"]).await;
    assert!(
        text.contains(&plain_id) && text.contains(&stream_id),
        "{text}"
    );
    let shown: Value =
        serde_json::from_str(&cli(&gw, &["runs", "show", &fusion_id]).await).unwrap();
    assert_eq!(shown["fusion"]["panel"][1]["content"], "It is Paris.");
}

/// `quorate ARGS` on the gateway's store file: its stdout.
async fn cli(gw: &Gateway, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .env(
            "QUORATE_STORE_URL",
            format!("sqlite://{}", gw.store.display()),
        )
        .env_remove("QUORATE_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A streamed pass-through completion read to its end: its id.
async fn stream(gw: &Gateway) -> String {
    let body = json!({"model": "sim/a", "messages": question(), "stream": true});
    let response = post(gw, body).await;
    let id = request_id(&response);
    let _ = sse(response).await;
    id
}

#[tokio::test]
async fn content_off_keeps_the_figures_and_no_text() {
    let (_sim, gw) = gateway("[store]\ncontent = false\n").await;
    let fused = post(
        &gw,
        json!({"model": "quorate/fusion", "messages": question()}),
    )
    .await;
    let fused_id = request_id(&fused);
    assert_eq!(fused.status().as_u16(), 200);
    let plain_id = stream(&gw).await;
    let kept = run(&gw, &fused_id).await;
    assert_eq!(kept["fusion"]["panel"].as_array().unwrap().len(), 3);
    assert!(kept["prompt_tokens"].as_u64().unwrap() > 0);
    run(&gw, &plain_id).await;
    for file in [gw.store.clone(), gw.store.with_extension("db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["capital of France", "Paris", "bonjour"] {
            assert!(!text.contains(secret), "{secret:?} in {}", file.display());
        }
    }
}

/// A gateway whose run store is `pg`.
async fn on_postgres(config: &str, pg: &common::postgres::Postgres) -> Gateway {
    let keys = format!("alice:{KEY}");
    let url = pg.url();
    let env = [
        ("QUORATE_TEST_STORE_KEYS", keys.as_str()),
        ("QUORATE_STORE_URL", url.as_str()),
    ];
    start(config, &env).await
}

/// Two replicas on one PostgreSQL behave as one gateway: a run written by either is listed and
/// shown by both.
#[tokio::test]
async fn replicas_share_runs_through_postgres() {
    let Some(pg) = common::postgres::start() else {
        return;
    };
    let (_sim, addr) = sim(&scripts()).await;
    let config = store_config(addr, "");
    let (one, two) = tokio::join!(on_postgres(&config, &pg), on_postgres(&config, &pg));
    let mut ids = Vec::new();
    for gw in [&one, &two, &one, &two] {
        let response = post(gw, json!({"model": "sim/a", "messages": question()})).await;
        assert_eq!(response.status().as_u16(), 200);
        ids.push(request_id(&response));
    }
    ids.push(stream(&two).await);
    for gw in [&one, &two] {
        for id in &ids {
            assert_eq!(run(gw, id).await["id"], id.as_str());
        }
        let (_, page) = get(gw, "/v1/runs?limit=50").await;
        let listed: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        for id in &ids {
            assert!(
                listed.contains(&id.as_str()),
                "{id} not listed by a replica"
            );
        }
        // PostgreSQL sums BIGINT into NUMERIC: the usage query casts back.
        let (status, usage) = get(gw, "/v1/usage").await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["rows"][0]["requests"], ids.len(), "{usage}");
        assert_eq!(usage["rows"][0]["cost_usd"].as_f64(), Some(2.5));
    }
}

/// A database that goes away never fails or holds up a request: records past the queue are
/// dropped and counted, and writes resume once it is back.
#[tokio::test]
async fn a_dead_database_fails_no_request_and_writes_resume() {
    let Some(pg) = common::postgres::start() else {
        return;
    };
    let (_sim, addr) = sim(&scripts()).await;
    let gw = on_postgres(&store_config(addr, "[store]\nqueue = 4\n"), &pg).await;
    let first = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
    run(&gw, &request_id(&first)).await;
    pg.stop();
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let response = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests waited on the dead database: {:?}",
        started.elapsed()
    );
    let metrics = metrics(&gw).await;
    let dropped = sample(&metrics, "quorate_store_dropped_total");
    assert!(dropped >= 20.0, "{dropped} dropped\n{metrics}");
    let (status, _) = get(&gw, "/v1/runs").await;
    assert_eq!(status, 503, "a read of a dead store is a clear 503");
    pg.restart();
    let after = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
    let after_id = request_id(&after);
    // The writer retries with backoff up to 5 s, then writes what it kept and the new one.
    for _ in 0..400 {
        if get(&gw, &format!("/v1/runs/{after_id}")).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("writes did not resume after the database came back");
}

async fn metrics(gw: &Gateway) -> String {
    client()
        .get(gw.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The samples of a scrape, parsed as Prometheus parses them: `name{labels}` → value (a
/// histogram's `_count` for its observations).
async fn scrape(gw: &Gateway) -> std::collections::HashMap<String, f64> {
    let text = metrics(gw).await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le" && *k != "quantile")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => 0.0,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_tokens_stages_and_the_store() {
    let (_sim, gw) = gateway("").await;
    let before = scrape(&gw).await;
    let plain = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
    let plain_body: Value = plain.json().await.unwrap();
    stream(&gw).await;
    let fused = post(
        &gw,
        json!({"model": "quorate/fusion", "messages": question()}),
    )
    .await;
    let fused_id = request_id(&fused);
    let _ = fused.bytes().await;
    let missing = post(&gw, json!({"model": "nowhere/x", "messages": question()})).await;
    assert_eq!(missing.status().as_u16(), 404);
    run(&gw, &fused_id).await;
    let after = scrape(&gw).await;
    let moved = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    assert_eq!(
        moved("quorate_requests_total{kind=completion,model=sim/a,status=200,surface=chat}"),
        2.0,
        "{after:#?}"
    );
    assert_eq!(
        moved("quorate_requests_total{kind=fusion,model=quorate/fusion,status=200,surface=chat}"),
        1.0
    );
    assert_eq!(
        moved("quorate_requests_total{kind=completion,model=unknown,status=404,surface=chat}"),
        1.0,
        "a model the gateway does not know is not a label"
    );
    assert_eq!(
        moved("quorate_request_duration_seconds{kind=completion}"),
        3.0
    );
    assert_eq!(moved("quorate_first_token_seconds{kind=completion}"), 1.0);
    assert_eq!(moved("quorate_fusion_stage_seconds{stage=judge}"), 1.0);
    let tokens = plain_body["usage"]["completion_tokens"].as_f64().unwrap();
    assert_eq!(
        moved("quorate_tokens_total{direction=completion,model=sim/a}"),
        2.0 * tokens
    );
    assert_eq!(moved("quorate_cost_usd_total{model=sim/a}"), 1.0);
    assert!(moved("quorate_store_written_total{}") >= 3.0);
    let batches = moved("quorate_store_batches_total{}");
    assert!(
        (1.0..=moved("quorate_store_written_total{}")).contains(&batches),
        "{batches} batches"
    );
    assert_eq!(after["quorate_requests_in_flight{}"], 0.0);
    // A stream was sent and has ended.
    assert_eq!(after["quorate_streams_in_flight{}"], 0.0);
    assert_eq!(after["quorate_store_dropped_total{}"], 0.0);
}

/// `--log-format json` (here through `QUORATE_LOG_FORMAT`): every log line is a JSON object, and
/// a request's lines carry its id from the `request` span.
#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let (_sim, addr) = sim(&scripts()).await;
    let keys = format!("alice:{KEY}");
    let env = [
        ("QUORATE_TEST_STORE_KEYS", keys.as_str()),
        ("QUORATE_LOG_FORMAT", "json"),
    ];
    let mut gw = start(&store_config(addr, ""), &env).await;
    let response = post(&gw, json!({"model": "sim/a", "messages": question()})).await;
    let id = request_id(&response);
    gw.child.start_kill().unwrap();
    let _ = gw.child.wait().await;
    let logs = (&mut gw.stderr).await.unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let completion = lines
        .iter()
        .find(|l| l["fields"]["message"] == "completion")
        .unwrap_or_else(|| panic!("no completion line in {logs}"));
    assert_eq!(completion["spans"][0]["name"], "request");
    assert_eq!(completion["spans"][0]["id"], id.as_str());
}

/// The local engine's own figures: its queue, the tokens it read and generated, its speed.
#[tokio::test]
async fn metrics_count_the_local_engines_tokens() {
    let (_sim, gw) = gateway("").await;
    let ask = json!({"model": "local/smollm2-135m", "max_tokens": 8, "temperature": 0,
                     "messages": [{"role": "user", "content": "Say hello."}]});
    let before = scrape(&gw).await;
    let body: Value = post(&gw, ask).await.json().await.unwrap();
    let after = scrape(&gw).await;
    let moved = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let model = "model=local/smollm2-135m";
    assert_eq!(
        moved(&format!("quorate_local_generated_tokens_total{{{model}}}")),
        body["usage"]["completion_tokens"].as_f64().unwrap(),
        "{body}"
    );
    assert_eq!(
        moved(&format!("quorate_local_prompt_tokens_total{{{model}}}")),
        body["usage"]["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        moved(&format!("quorate_local_tokens_per_second{{{model}}}")),
        1.0
    );
    assert_eq!(
        after
            .get("quorate_local_queue_depth{}")
            .copied()
            .unwrap_or(0.0),
        0.0
    );
}
