//! `quorate-sim`: a scripted upstream for tests and benchmarks. Speaks the OpenAI chat
//! completions API (`/v1/chat/completions`, `/v1/models`) and Anthropic's Messages API
//! (`/v1/messages`), streaming or not.
//!
//! Behaviour comes from a [`Script`]: the request's own `sim` object if it has one (gateways
//! forward unknown fields, so a test can script one request end to end), else the script given
//! for the model name at start-up, else echo. It counts requests, completions and cancellations
//! (a client that went away before the answer was done), and records recent requests, so tests
//! can assert retries, fallbacks, pass-through and disconnects.

mod anthropic;
mod openai;
mod script;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

pub use script::{Fault, Script, ToolCallScript};

/// How many recent requests `/sim/requests` keeps.
const RECORDED: usize = 256;

#[derive(Clone, Default)]
pub struct Sim {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, Script>,
    stats: Mutex<Stats>,
    recorded: Mutex<VecDeque<Recorded>>,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Stats {
    /// Requests received, per model name.
    pub requests: HashMap<String, u64>,
    pub completed: u64,
    /// Requests whose client went away before the answer was complete.
    pub cancelled: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Sim {
    pub fn new(scripts: HashMap<String, Script>) -> Self {
        Self {
            inner: Arc::new(Inner {
                scripts,
                ..Inner::default()
            }),
        }
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/chat/completions", post(openai::chat))
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
            .route("/v1/models", get(models))
            .route("/sim/stats", get(stats))
            .route("/sim/requests", get(recorded))
            .with_state(self.clone())
    }

    /// Serves on `addr` in the background; returns the bound address.
    pub async fn spawn(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let listener = nodelay(listener);
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("quorate-sim: server stopped: {e}");
            }
        });
        Ok(bound)
    }

    pub fn stats(&self) -> Stats {
        self.lock_stats().clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        let recorded = self
            .inner
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recorded.iter().cloned().collect()
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts and records a request; returns its script, whether its fault applies this time
    /// (`fail_first` lets the first N requests of a model fail), and a guard that tells a
    /// completed answer from an abandoned one.
    fn begin(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        model: &str,
    ) -> (Script, bool, Guard) {
        let script = match body.get("sim") {
            Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|e| Script {
                fault: Some(Fault::Status),
                status: Some(400),
                reply: Some(format!("invalid sim script: {e}")),
                ..Script::default()
            }),
            None => self.inner.scripts.get(model).cloned().unwrap_or_default(),
        };
        let seen = {
            let mut stats = self.lock_stats();
            let count = stats.requests.entry(model.to_string()).or_default();
            let seen = *count;
            *count += 1;
            stats.in_flight += 1;
            seen
        };
        let script = script.nth(seen);
        let fault_applies = script.fault.is_some() && script.fail_first.is_none_or(|n| seen < n);
        self.record(path, headers, body);
        (
            script,
            fault_applies,
            Guard {
                sim: self.clone(),
                done: false,
            },
        )
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut recorded = self
            .inner
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recorded.len() == RECORDED {
            recorded.pop_front();
        }
        recorded.push_back(Recorded {
            path: path.to_string(),
            headers,
            body: body.clone(),
        });
    }
}

/// Accepted connections get TCP_NODELAY, as a real API server's do: latency figures measured
/// against the sim should not include Nagle's delays.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// Lives as long as a request is being answered; dropped early means the client went away.
struct Guard {
    sim: Sim,
    done: bool,
}

impl Guard {
    fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut stats = self.sim.lock_stats();
        stats.in_flight = stats.in_flight.saturating_sub(1);
        if self.done {
            stats.completed += 1;
        } else {
            stats.cancelled += 1;
        }
    }
}

async fn models(axum::extract::State(sim): axum::extract::State<Sim>) -> Json<Value> {
    let mut ids: Vec<&String> = sim.inner.scripts.keys().collect();
    ids.sort();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "sim"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn stats(axum::extract::State(sim): axum::extract::State<Sim>) -> Json<Stats> {
    Json(sim.stats())
}

async fn recorded(axum::extract::State(sim): axum::extract::State<Sim>) -> Json<Vec<Recorded>> {
    Json(sim.requests())
}
