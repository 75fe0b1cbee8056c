//! Hardening (issue 20): slow clients, connection limits, rejections made by the HTTP layer, and
//! secrets in upstream error text. The real `quorate serve`, often spoken to over raw TCP.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, sim, sse, start, Gateway};
use serde_json::{json, Value};

const PROVIDER_KEY: &str = "sk-sim-provider-key-0123456789";
const ANTHROPIC_KEY: &str = "ant-sim-provider-key-0123456789";
const GATEWAY_KEY: &str = "qk-gateway-key-0123456789";

/// `config` with `server` lines added to its `[server]` table.
fn with_server(addr: std::net::SocketAddr, server: &str, extra: &str) -> String {
    config(addr, extra).replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

async fn post_with_key(gw: &Gateway, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn assert_scrubbed(text: &str) {
    for secret in [PROVIDER_KEY, ANTHROPIC_KEY, GATEWAY_KEY] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn upstream_error_text_is_scrubbed_of_every_configured_secret() {
    let echo = format!("bad key {PROVIDER_KEY} (also {ANTHROPIC_KEY}, {GATEWAY_KEY})");
    let fault = |status: u16, ttft_ms: u64| json!({"fault": "status", "status": status, "reply": echo, "ttft_ms": ttft_ms});
    let (_sim, addr) = sim(&[
        ("k400", fault(400, 0)),
        ("k429", fault(429, 0)),
        ("k500", fault(500, 0)),
        ("slow400", fault(400, 600)),
        ("p1", json!({"reply": "Paris."})),
        ("judge", json!({"json": {"consensus": ["Paris"]}})),
        ("synth", json!({"reply": "Paris."})),
    ])
    .await;
    let extra = r#"
[providers.keyed]
kind = "openai"
base_url = "http://ADDR/v1"
api_key_env = "HARDENING_PROVIDER_KEY"
max_retries = 0

[models."keyed/k400"]
provider = "keyed"
[models."keyed/k429"]
provider = "keyed"
[models."keyed/k500"]
provider = "keyed"
[models."keyed/slow400"]
provider = "keyed"

[tools.web_search]
backend = "off"
[tools.web_fetch]
enabled = false

[presets.leaky]
panel = ["sim/p1", "keyed/k429"]
judge = "sim/judge"
synthesizer = "sim/synth"
"#
    .replace("ADDR", &addr.to_string());
    let cfg = with_server(addr, "api_keys_env = \"HARDENING_GATEWAY_KEYS\"", &extra);
    let env = [
        ("HARDENING_PROVIDER_KEY", PROVIDER_KEY),
        ("SIM_ANTHROPIC_KEY", ANTHROPIC_KEY),
        ("HARDENING_GATEWAY_KEYS", GATEWAY_KEY),
    ];
    let mut gw = start(&cfg, &env).await;

    for (model, status) in [("k400", 400), ("k429", 429), ("k500", 502)] {
        let r = post_with_key(&gw, &common::ask(&format!("keyed/{model}"), "x")).await;
        assert_eq!(r.status(), status, "{model}");
        assert_scrubbed(&r.text().await.unwrap());
    }

    // Past one keep-alive interval the SSE response has started: the error comes in-stream.
    let mut streaming = common::ask("keyed/slow400", "x");
    streaming["stream"] = json!(true);
    let (data, raw) = sse(post_with_key(&gw, &streaming).await).await;
    assert!(raw.starts_with(": quorate processing"), "{raw}");
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 400);
    assert_scrubbed(&raw);

    let fused = json!({"model": "quorate/fusion:leaky", "messages": [{"role": "user", "content": "Capital?"}]});
    let body: Value = post_with_key(&gw, &fused).await.json().await.unwrap();
    let member = &body["fusion"]["panel"][1];
    assert_eq!(member["status"], "failed", "{body}");
    assert_scrubbed(member["error"]["message"].as_str().unwrap());

    gw.child.start_kill().unwrap();
    let _ = gw.child.wait().await;
    let logs = (&mut gw.stderr).await.unwrap();
    assert!(logs.contains("completion failed"), "{logs}");
    assert_scrubbed(&logs);
}
