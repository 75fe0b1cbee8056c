//! Hardening (issue 20): slow clients, connection limits, rejections made by the HTTP layer, and
//! secrets in upstream error text. The real `quorate serve`, often spoken to over raw TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, sim, sse, start, Gateway};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection stayed open past {limit:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw connection that has sent the head of a chat completion request, `framing` the headers
/// that frame its body (each ending in CRLF).
async fn posted_head(gw: &Gateway, framing: &str) -> TcpStream {
    let mut tcp = connect(gw).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// Status and JSON body of a raw HTTP/1.1 response.
fn parse_response(raw: &str) -> (u16, Value) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A GET of /health on a fresh connection.
async fn health(gw: &Gateway) -> reqwest::StatusCode {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = client.get(gw.url("/health")).send();
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .expect("/health answers")
        .unwrap()
        .status()
}

async fn limited(server: &str) -> Gateway {
    let (_sim, addr) = sim(&[]).await;
    start(&with_server(addr, server, ""), &[]).await
}

#[tokio::test]
async fn slow_headers_are_cut_off_while_health_answers() {
    let gw = limited("header_timeout_s = 1").await;
    let started = Instant::now();
    let mut slow = Vec::new();
    // An HTTP/1 request line, the start of an HTTP/2 preface, and nothing at all.
    for opening in ["GET /health HTTP/1.1\r\nhost: x\r\n", "PRI * HTTP/2.0", ""] {
        let mut tcp = connect(&gw).await;
        let bytes = opening.as_bytes().to_vec();
        slow.push(tokio::spawn(async move {
            for byte in bytes {
                if tcp.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            read_to_close(&mut tcp, Duration::from_secs(10)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&gw).await, 200, "/health answers meanwhile");
    for client in slow {
        assert_eq!(client.await.unwrap(), "", "closed without an answer");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "cut off after {elapsed:?}"
    );
}

/// Between two requests on a kept-alive HTTP/1 connection, the next headers are timed too: a
/// client that answered once cannot then hold the connection by dribbling (or by sending
/// nothing) for the whole idle limit.
#[tokio::test]
async fn the_next_request_on_a_kept_alive_connection_has_its_headers_timed() {
    let gw = limited("header_timeout_s = 1\nidle_timeout_s = 30").await;
    for next in ["GET /health HTTP/1.1\r\nhost: x\r\n", ""] {
        let mut tcp = connect(&gw).await;
        tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\"ok\"}") {
            let mut buf = [0u8; 512];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the first answer");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "the first request is answered"
        );
        let started = Instant::now();
        for byte in next.bytes() {
            if tcp.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(read_to_close(&mut tcp, Duration::from_secs(10)).await, "");
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(4),
            "{next:?}: cut off after {elapsed:?}, not within header_timeout_s"
        );
    }
}

#[tokio::test]
async fn a_dribbled_body_gets_a_408() {
    let gw = limited("body_timeout_s = 1").await;
    let tcp = posted_head(&gw, "content-length: 100\r\n").await;
    let (mut reader, mut writer) = tcp.into_split();
    // A byte every 100 ms: no single read waits long, the whole body would take 10 s.
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut raw)).await;
    dribble.abort();
    let (status, body) = parse_response(&String::from_utf8_lossy(&raw));
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(body["error"]["status"], 408);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.body_timeout_s"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn past_the_connection_limit_health_answers_and_the_rest_get_a_503() {
    let gw = limited("max_connections = 2").await;
    let mut held = vec![connect(&gw).await, connect(&gw).await];
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(health(&gw).await, 200);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client
        .post(gw.url("/v1/chat/completions"))
        .json(&common::ask("sim/a", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], 503);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_connections"));
    held.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200, "closing connections frees their slots");
}

#[tokio::test]
async fn rejections_by_the_http_layer_are_json() {
    let gw = limited("max_header_bytes = 8192").await;
    let cases = [
        (
            format!(
                "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(9000)
            ),
            431,
            "server.max_header_bytes",
        ),
        (
            "GET /health HTTP/1.1\r\nno colon here\r\n\r\n".to_string(),
            400,
            "malformed HTTP request",
        ),
    ];
    for (request, status, says) in cases {
        let mut tcp = connect(&gw).await;
        tcp.write_all(request.as_bytes()).await.unwrap();
        let raw = read_to_close(&mut tcp, Duration::from_secs(5)).await;
        let (got, body) = parse_response(&raw);
        assert_eq!(got, status, "{raw}");
        assert!(raw.contains("content-type: application/json"), "{raw}");
        assert_eq!(body["error"]["status"], status);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{raw}"
        );
    }
}

#[tokio::test]
async fn a_declared_oversized_body_gets_its_413_before_any_upload() {
    let gw = limited("max_body_bytes = 1048576").await;
    let mut tcp = posted_head(&gw, "content-length: 20000000\r\nexpect: 100-continue\r\n").await;
    let raw = read_to_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(!raw.contains("100 Continue"), "{raw}");
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 413, "{raw}");
    assert_eq!(body["error"]["status"], 413);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_body_bytes"));
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_gets_its_413_as_it_is_read() {
    let gw = limited("max_body_bytes = 2000").await;
    // No content-length: only reading the body can tell it is too large.
    let mut tcp = posted_head(&gw, "transfer-encoding: chunked\r\nconnection: close\r\n").await;
    let chunk = format!("{:x}\r\n{}\r\n", 1000, "x".repeat(1000));
    for _ in 0..3 {
        tcp.write_all(chunk.as_bytes()).await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let raw = read_to_close(&mut tcp, Duration::from_secs(5)).await;
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 413, "{raw}");
    assert_eq!(body["error"]["code"], "request_too_large", "{raw}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_body_bytes"));
}

#[tokio::test]
async fn http2_and_a_thousand_concurrent_streams_still_work_within_the_defaults() {
    let (_sim, addr) = sim(&[("a", json!({"reply": "one two three", "token_ms": 20}))]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );

    let client = reqwest::Client::new();
    let mut body = common::ask("sim/a", "x");
    body["stream"] = json!(true);
    let streams = (0..1000).map(|_| {
        let request = client
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send();
        async move { sse(request.await.unwrap()).await.0 }
    });
    let done = futures::future::join_all(streams).await;
    for data in done {
        assert_eq!(common::content(&data), "one two three");
        assert_eq!(data.last().unwrap(), "[DONE]");
    }
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
        ("slow400", fault(400, 1000)),
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

    // Past one keep-alive interval (0.3 s) the SSE response has started: the error comes
    // in-stream, after a keep-alive comment (the upstream answers at 1 s, well past the first).
    let mut streaming = common::ask("keyed/slow400", "x");
    streaming["stream"] = json!(true);
    let (data, raw) = sse(post_with_key(&gw, &streaming).await).await;
    assert!(raw.starts_with(": quorate processing"), "{raw}");
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(error["error"]["status"], 400);
    assert_scrubbed(&raw);

    let fused = json!({"model": "quorate/fusion:leaky", "messages": [{"role": "user", "content": "Capital?"}]});
    let body: Value = post_with_key(&gw, &fused).await.json().await.unwrap();
    let member = &body["fusion"]["panel"][1];
    assert_eq!(member["status"], "failed", "{body}");
    assert_scrubbed(member["error"]["message"].as_str().unwrap());

    // Nor do they reach the run store (the whole file, every record and attempt) or the metrics.
    let id = body["id"].as_str().unwrap();
    let kept = reqwest::Client::new()
        .get(gw.url(&format!("/v1/runs/{id}")))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    assert_scrubbed(&kept.text().await.unwrap());
    let metrics = reqwest::Client::new()
        .get(gw.url("/metrics"))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [PROVIDER_KEY, ANTHROPIC_KEY, GATEWAY_KEY] {
        assert!(!metrics.contains(secret));
    }

    gw.child.start_kill().unwrap();
    let _ = gw.child.wait().await;
    let logs = (&mut gw.stderr).await.unwrap();
    assert!(logs.contains("completion failed"), "{logs}");
    assert_scrubbed(&logs);
    for file in [gw.store.clone(), gw.store.with_extension("db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [PROVIDER_KEY, ANTHROPIC_KEY, GATEWAY_KEY] {
            assert!(!text.contains(secret), "a secret in {}", file.display());
        }
    }
}
