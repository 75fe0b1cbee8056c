//! The observability seams of one fusion request, in-process: the span tree a subscriber sees
//! (request → panel → member → attempt, request → judge → attempt, request → synthesis →
//! attempt), the request id on the response and on every upstream call, and `Server-Timing`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quorate_config::Config;
use quorate_providers::Router;
use quorate_server::AppState;
use quorate_sim::Sim;
use serde_json::{json, Value};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span's name and its parent's name.
type Edge = (String, Option<String>);

/// Each new span, as it is created.
#[derive(Clone, Default)]
struct Tree(Arc<Mutex<Vec<Edge>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Tree {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let parent = span.parent().map(|p| p.name().to_string());
            self.0
                .lock()
                .unwrap()
                .push((span.name().to_string(), parent));
        }
    }
}

impl Tree {
    /// How many spans named `name` have a parent named `parent`.
    fn count(&self, name: &str, parent: &str) -> usize {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(n, p)| n == name && p.as_deref() == Some(parent))
            .count()
    }
}

async fn gateway(sim_addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut toml = format!(
        "[providers.sim]\nkind = \"openai\"\nbase_url = \"http://{sim_addr}/v1\"\nmax_retries = 0\n\
         [presets.t]\npanel = [\"sim/p1\", \"sim/p2\", \"sim/p2\"]\njudge = \"sim/judge\"\n\
         synthesizer = \"sim/synth\"\n"
    );
    for model in ["p1", "p2", "judge", "synth"] {
        toml.push_str(&format!(
            "[models.\"sim/{model}\"]\nprovider = \"sim\"\nupstream = \"{model}\"\n"
        ));
    }
    let config = Config::from_toml(&toml, "test").unwrap();
    let state = Arc::new(AppState::new(Router::new(config).unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, quorate_server::app(state)).await });
    addr
}

async fn sim() -> (Sim, std::net::SocketAddr) {
    let analysis = json!({"consensus": ["Paris"], "contradictions": [], "partial_coverage": [],
        "unique_insights": [], "blind_spots": []});
    let scripts: HashMap<_, _> = [
        ("p1", json!({"reply": "Paris."})),
        ("p2", json!({"reply": "It is Paris."})),
        ("judge", json!({"json": analysis})),
        ("synth", json!({"reply": "Paris is the capital."})),
    ]
    .into_iter()
    .map(|(name, v)| (name.to_string(), serde_json::from_value(v).unwrap()))
    .collect();
    let sim = Sim::new(scripts);
    let addr = sim.spawn("127.0.0.1:0").await.unwrap();
    (sim, addr)
}

/// A current-thread runtime: the spawned server and simulator run on the test's thread, where
/// the recording subscriber is the default. The only test of its binary, since tracing caches
/// each callsite's interest globally and a test without the subscriber could turn spans off.
#[tokio::test]
async fn a_fusion_request_is_one_span_tree_with_its_id_everywhere() {
    let tree = Tree::default();
    let subscriber = tracing_subscriber::registry().with(tree.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let (sim, sim_addr) = sim().await;
    let addr = gateway(sim_addr).await;

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "client-chosen-id")
        .json(&json!({"model": "quorate/fusion:t",
            "messages": [{"role": "user", "content": "Capital of France?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();

    assert_eq!(body["id"], id, "the request id is the completion's id");
    assert!(
        id.starts_with("gen-"),
        "the gateway's own id, not the client's: {id}"
    );
    assert!(
        timing.starts_with("upstream;dur=") && timing.contains("total;dur="),
        "{timing}"
    );
    for call in sim.requests() {
        assert_eq!(call.headers.get("x-request-id"), Some(&id), "sent upstream");
    }

    assert_eq!(tree.count("panel", "request"), 1);
    assert_eq!(tree.count("member", "panel"), 3);
    assert_eq!(tree.count("attempt", "member"), 3);
    assert_eq!(tree.count("judge", "request"), 1);
    assert_eq!(tree.count("attempt", "judge"), 1);
    assert_eq!(tree.count("synthesis", "request"), 1);
    assert_eq!(tree.count("attempt", "synthesis"), 1);
}
