//! Memory with concurrent requests, alone in its own test binary: RSS is process-wide, so other
//! tests loading models in parallel would blur it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use quorate_api::{ChatRequest, ModelRequest};
use quorate_config::Config;
use quorate_providers::{Provider, RequestCtx};
use serde_json::{json, Value};

fn provider() -> Arc<dyn Provider> {
    let config = Config::from_toml("", "test").unwrap();
    quorate_local::provider("local", &config.providers["local"], &config).unwrap()
}

fn request(v: Value) -> ModelRequest {
    serde_json::from_value::<ChatRequest>(v).unwrap().into()
}

fn ask(text: &str) -> Value {
    json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 40})
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn concurrent_requests_share_one_model() {
    let p = provider();
    p.complete(
        &RequestCtx::new("test"),
        request(ask("Which city is the capital of France?")),
    )
    .await
    .unwrap();
    let before = rss_kib();
    let runs = (0..3).map(|i| {
        let p = p.clone();
        async move {
            let mut req = ask("Name three colours.");
            req["seed"] = json!(i);
            req["temperature"] = json!(0.7);
            p.complete(&RequestCtx::new("test"), request(req)).await
        }
    });
    let results = futures::future::join_all(runs).await;
    assert!(results.iter().all(Result::is_ok));
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // The GGUF is 94 MiB: loading it again per request would show here.
    assert!(
        grown_mib < 60,
        "RSS grew {grown_mib} MiB for 3 concurrent requests"
    );
}
