//! `GET /metrics` in Prometheus' text format. Every request is counted when its record is
//! finished (one place for every path: JSON, SSE, fusion, failures, clients that went away);
//! the run store's queue and writer are read at scrape time. Labels stay low-cardinality:
//! surface, kind, status, configured model ids (an unknown one counts as `unknown`), provider,
//! fusion stage and failure reason; never an id or free text. The local engine counts its own
//! (`quorate_local_*`: queue depth, busy refusals, tokens read, reused and generated, decoding
//! speed) through the same recorder.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quorate_store::{Run, Store};
use rustc_hash::FxBuildHasher;
use serde_json::Value;

use crate::AppState;

/// Seconds, from a cached answer's fraction of a millisecond to a long fusion run.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A local model's decoding speed, tokens per second.
const TOKENS_PER_SECOND: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The process's Prometheus recorder and the handles every request counts with. `metrics`'
/// macros build a key of owned label strings and look it up in the registry on each call (12 K
/// instructions a request, measured with callgrind); these are looked up once per label set.
struct Installed {
    /// None when another recorder was installed first: the handles then count into that one.
    handle: Option<PrometheusHandle>,
    requests_in_flight: Gauge,
    streams_in_flight: Gauge,
    /// By surface, kind, model and status.
    requests: Mutex<Handles<Arc<RequestFigures>>>,
    /// `quorate_upstream_attempts_total` by provider and reason.
    attempts: Mutex<Handles<Counter>>,
}

/// Handles by their labels joined, looked up with the Fx hash: the keys are our own label
/// values, not a caller's, and SipHash would cost more than the counting.
type Handles<V> = HashMap<String, V, FxBuildHasher>;

/// What one request adds to the figures of its kind.
struct RequestFigures {
    requests: Counter,
    duration: Histogram,
    first_token: Histogram,
    own: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cost: Gauge,
}

/// Installs the process's recorder once (several servers in one process share it).
pub fn install() {
    INSTALLED.get_or_init(|| Installed {
        handle: prometheus(),
        requests_in_flight: gauge!("quorate_requests_in_flight"),
        streams_in_flight: gauge!("quorate_streams_in_flight"),
        requests: Mutex::default(),
        attempts: Mutex::default(),
    });
}

/// Sets the Prometheus recorder as the global one, and returns its handle.
fn prometheus() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("quorate_local_tokens_per_second".into()),
                TOKENS_PER_SECOND,
            )
        })
        .map_err(|e| tracing::warn!(error = %e, "metrics buckets refused"))
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            drain_histograms(handle.clone());
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "a metrics recorder was installed already; /metrics is empty");
            None
        }
    }
}

/// Histograms keep every sample until they are drained: at a scrape, and here every
/// `UPKEEP_EVERY`, so a gateway nobody scrapes does not grow with every request.
fn drain_histograms(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "histograms are drained only when /metrics is read");
    }
}

/// The handles; none before `install`, when there is no recorder to count into.
fn installed() -> Option<&'static Installed> {
    INSTALLED.get()
}

/// The entry of `map` under the key `write_key` writes (its labels joined), registered by
/// `register` the first time. The key is written into a buffer kept per thread: a request
/// whose labels were seen before allocates nothing.
fn handles<V: Clone>(
    map: &Mutex<Handles<V>>,
    write_key: impl FnOnce(&mut String),
    register: impl FnOnce() -> V,
) -> V {
    thread_local! {
        static KEY: Cell<String> = const { Cell::new(String::new()) };
    }
    // Taken out of the buffer and put back: no borrow is held, and a thread whose locals are
    // already gone uses a new String.
    let mut key = KEY.try_with(Cell::take).unwrap_or_default();
    key.clear();
    write_key(&mut key);
    let value = {
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key.as_str()) {
            Some(value) => value.clone(),
            None => map.entry(key.clone()).or_insert_with(register).clone(),
        }
    };
    let _ = KEY.try_with(|buffer| buffer.set(key));
    value
}

pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    if let Some(store) = &state.store {
        store_gauges(store);
    }
    let text = installed()
        .and_then(|i| i.handle.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A streamed response being sent: counted in `quorate_streams_in_flight` while it lives.
pub struct OpenStream;

impl OpenStream {
    pub fn open() -> Self {
        if let Some(i) = installed() {
            i.streams_in_flight.increment(1.0);
        }
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Some(i) = installed() {
            i.streams_in_flight.decrement(1.0);
        }
    }
}

pub fn started() {
    if let Some(i) = installed() {
        i.requests_in_flight.increment(1.0);
    }
}

/// Counts a finished request from its record.
pub fn finished(run: &Run) {
    let Some(installed) = installed() else {
        return;
    };
    installed.requests_in_flight.decrement(1.0);
    let s = &run.summary;
    // A model the gateway does not know (a 404) is the caller's free text.
    let model = if s.error_kind.as_deref() == Some("unknown_model") || s.model.is_empty() {
        "unknown"
    } else {
        s.model.as_str()
    };
    let figures = request_figures(installed, &s.surface, s.kind.as_str(), model, s.status);
    figures.requests.increment(1);
    figures.duration.record(s.latency_ms as f64 / 1000.0);
    if let Some(first) = s.first_token_ms {
        figures.first_token.record(first as f64 / 1000.0);
    }
    if let Some(own) = s.gateway_ms {
        figures.own.record(own / 1000.0);
    }
    if let Some(kind) = &s.error_kind {
        counter!("quorate_request_errors_total", "reason" => kind.clone()).increment(1);
    }
    // By the model asked for: a fusion run's tokens are its whole panel's, judge's and
    // synthesis's.
    figures.prompt_tokens.increment(s.prompt_tokens);
    figures.completion_tokens.increment(s.completion_tokens);
    if let Some(cost) = s.cost_usd {
        figures.cost.increment(cost);
    }
    attempts(installed, run);
    if let Some(fusion) = &run.detail.fusion {
        fusion_figures(fusion);
    }
}

fn request_figures(
    installed: &Installed,
    surface: &str,
    kind: &str,
    model: &str,
    status: u16,
) -> Arc<RequestFigures> {
    handles(
        &installed.requests,
        |key| {
            for label in [surface, kind, model] {
                key.push_str(label);
                key.push('\u{1f}');
            }
            key.push_str(itoa::Buffer::new().format(status));
        },
        || {
            let status = status.to_string();
            let all = [
                ("surface", surface),
                ("kind", kind),
                ("model", model),
                ("status", &status),
            ];
            let by_kind = || labels(&[("kind", kind)]);
            let tokens = |direction| {
                let by_model = labels(&[("model", model), ("direction", direction)]);
                counter!("quorate_tokens_total", by_model)
            };
            Arc::new(RequestFigures {
                requests: counter!("quorate_requests_total", labels(&all)),
                duration: histogram!("quorate_request_duration_seconds", by_kind()),
                first_token: histogram!("quorate_first_token_seconds", by_kind()),
                own: histogram!("quorate_gateway_own_seconds", by_kind()),
                prompt_tokens: tokens("prompt"),
                completion_tokens: tokens("completion"),
                // A gauge only ever increased: counters here are whole numbers, costs are not.
                cost: gauge!("quorate_cost_usd_total", "model" => model.to_string()),
            })
        },
    )
}

/// Labels with owned values, for registering a handle.
fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|&(key, value)| Label::new(key, value.to_string()))
        .collect()
}

/// Every try at a model: retries (a second try of a model) and fallbacks (another model).
fn attempts(installed: &Installed, run: &Run) {
    let mut first_model: Option<&str> = None;
    for a in &run.detail.attempts {
        let key = |key: &mut String| {
            key.push_str(&a.provider);
            key.push('\u{1f}');
            key.push_str(&a.reason);
        };
        handles(&installed.attempts, key, || {
            counter!("quorate_upstream_attempts_total", "provider" => a.provider.clone(),
                "reason" => a.reason.clone())
        })
        .increment(1);
        if a.retry > 0 {
            counter!("quorate_retries_total", "provider" => a.provider.clone()).increment(1);
        }
        // Inner fusion calls go to several models by design; only a pass-through's next model
        // is a fallback.
        if run.summary.kind == quorate_store::Kind::Completion && a.retry == 0 {
            match first_model {
                None => first_model = Some(&a.model),
                Some(first) if first != a.model => {
                    counter!("quorate_fallbacks_total").increment(1);
                }
                Some(_) => {}
            }
        }
    }
}

/// Stage durations, member failures by reason and early exits, from the `fusion` object.
fn fusion_figures(fusion: &Value) {
    for stage in ["panel", "judge", "synthesis"] {
        if let Some(ms) = fusion["timings"][format!("{stage}_ms")].as_f64() {
            histogram!("quorate_fusion_stage_seconds", "stage" => stage).record(ms / 1000.0);
        }
    }
    for member in fusion["panel"].as_array().into_iter().flatten() {
        if let Some(reason) = member["error"]["reason"].as_str() {
            counter!("quorate_fusion_member_failures_total", "reason" => reason.to_string())
                .increment(1);
        }
    }
    if fusion["early_exit"].is_object() {
        let strategy = fusion["strategy"].as_str().unwrap_or("unknown").to_string();
        counter!("quorate_fusion_early_exits_total", "strategy" => strategy).increment(1);
    }
}

/// The store's queue and writer, as they are now.
fn store_gauges(store: &Store) {
    let c = store.counters();
    gauge!("quorate_store_queue_depth").set(store.queued() as f64);
    counter!("quorate_store_written_total").absolute(c.written.load(Ordering::Relaxed));
    counter!("quorate_store_batches_total").absolute(c.batches.load(Ordering::Relaxed));
    counter!("quorate_store_dropped_total").absolute(c.dropped.load(Ordering::Relaxed));
    counter!("quorate_store_failed_batches_total")
        .absolute(c.failed_batches.load(Ordering::Relaxed));
    gauge!("quorate_store_last_write_seconds")
        .set(c.last_write_us.load(Ordering::Relaxed) as f64 / 1e6);
}
