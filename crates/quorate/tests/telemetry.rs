//! Span export end to end: `quorate serve` with `[telemetry] otlp_endpoint` sends its spans over
//! OTLP/HTTP (JSON) to a receiver in the test, with the request → panel → member → attempt
//! structure, judge and synthesis under the request, all in the request's trace.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use common::{config, sim, start};
use serde_json::{json, Value};

/// A span as the receiver got it: name, ids, attributes.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, Value>,
}

/// An OTLP/HTTP receiver: every span of every export request it got.
async fn receiver() -> (Arc<Mutex<Vec<Span>>>, std::net::SocketAddr) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).unwrap();
                kept.lock().unwrap().extend(parse(&export));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (spans, addr)
}

fn parse(export: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        assert_eq!(
            resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .unwrap()["value"]["stringValue"],
            "quorate-test"
        );
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone()))
                    .collect();
                out.push(Span {
                    name: span["name"].as_str().unwrap().to_string(),
                    trace: span["traceId"].as_str().unwrap().to_string(),
                    id: span["spanId"].as_str().unwrap().to_string(),
                    parent: span["parentSpanId"].as_str().unwrap_or("").to_string(),
                    attributes,
                });
            }
        }
    }
    out
}

#[tokio::test]
async fn a_fusion_requests_spans_are_exported_with_their_parents() {
    let (spans, receiver) = receiver().await;
    let (_sim, addr) = sim(&[
        ("p1", json!({"reply": "Paris."})),
        ("p2", json!({"reply": "It is Paris."})),
        (
            "judge",
            json!({"json": {"consensus": ["Paris"], "contradictions": [],
            "partial_coverage": [], "unique_insights": [], "blind_spots": []}}),
        ),
        ("synth", json!({"reply": "Paris."})),
    ])
    .await;
    let extra = format!(
        r#"
[telemetry]
otlp_endpoint = "http://{receiver}/v1/traces"
service_name = "quorate-test"

[tools.web_search]
backend = "off"

[presets.t]
panel = ["sim/p1", "sim/p2"]
judge = "sim/judge"
synthesizer = "sim/synth"
"#
    );
    let gw = start(&config(addr, &extra), &[]).await;
    let response = gw
        .post(&json!({"model": "quorate/fusion:t",
            "messages": [{"role": "user", "content": "Capital of France?"}]}))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The batch goes out within half a second; wait for the request's whole tree.
    let mut found = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = spans.lock().unwrap().clone();
        let request = found.iter().find(|s| {
            s.name == "request" && s.attributes.get("id") == Some(&json!({"stringValue": id}))
        });
        if request.is_some() && found.iter().filter(|s| s.name == "attempt").count() >= 4 {
            break;
        }
    }
    let request = found
        .iter()
        .find(|s| {
            s.name == "request" && s.attributes.get("id") == Some(&json!({"stringValue": id}))
        })
        .unwrap_or_else(|| panic!("no request span with id {id} in {found:#?}"));
    assert_eq!(request.parent, "", "the request is the root");
    let mine: Vec<&Span> = found.iter().filter(|s| s.trace == request.trace).collect();
    let named =
        |name: &str| -> Vec<&Span> { mine.iter().copied().filter(|s| s.name == name).collect() };
    let panel = named("panel");
    assert_eq!(panel.len(), 1, "{mine:#?}");
    assert_eq!(panel[0].parent, request.id);
    let members = named("member");
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.parent == panel[0].id));
    let attempts = named("attempt");
    for member in &members {
        assert!(
            attempts.iter().any(|a| a.parent == member.id),
            "each member's call is an attempt under it: {mine:#?}"
        );
    }
    for stage in ["judge", "synthesis"] {
        let spans = named(stage);
        assert_eq!(spans.len(), 1, "{stage}: {mine:#?}");
        assert_eq!(spans[0].parent, request.id, "{stage}");
        assert!(
            attempts.iter().any(|a| a.parent == spans[0].id),
            "{stage}'s attempt"
        );
    }
}
