//! `GET /metrics` in Prometheus' text format. Every request is counted when its record is
//! finished (one place for every path: JSON, SSE, fusion, failures, clients that went away);
//! the run store's queue and writer are read at scrape time. Labels stay low-cardinality:
//! surface, kind, status, configured model ids (an unknown one counts as `unknown`), provider,
//! fusion stage and failure reason; never an id or free text. The local engine counts its own
//! (`quorate_local_*`: queue depth, busy refusals, tokens read, reused and generated, decoding
//! speed) through the same recorder.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quorate_store::{Run, Store};
use serde_json::Value;

use crate::AppState;

/// Seconds, from a cached answer's fraction of a millisecond to a long fusion run.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A local model's decoding speed, tokens per second.
const TOKENS_PER_SECOND: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder once (several servers in one process share it).
pub fn install() {
    HANDLE.get_or_init(|| {
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
            Ok(()) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder was installed already; /metrics is empty");
                None
            }
        }
    });
}

pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    if let Some(store) = &state.store {
        store_gauges(store);
    }
    let text = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A streamed response being sent: counted in `quorate_streams_in_flight` while it lives.
pub struct OpenStream;

impl OpenStream {
    pub fn open() -> Self {
        gauge!("quorate_streams_in_flight").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!("quorate_streams_in_flight").decrement(1.0);
    }
}

pub fn started() {
    gauge!("quorate_requests_in_flight").increment(1.0);
}

/// Counts a finished request from its record.
pub fn finished(run: &Run) {
    gauge!("quorate_requests_in_flight").decrement(1.0);
    let s = &run.summary;
    // A model the gateway does not know (a 404) is the caller's free text.
    let model = if s.error_kind.as_deref() == Some("unknown_model") || s.model.is_empty() {
        "unknown".to_string()
    } else {
        s.model.clone()
    };
    let labels = [
        ("surface", s.surface.clone()),
        ("kind", s.kind.as_str().to_string()),
        ("model", model.clone()),
        ("status", s.status.to_string()),
    ];
    counter!("quorate_requests_total", &labels).increment(1);
    let kind = [("kind", s.kind.as_str().to_string())];
    histogram!("quorate_request_duration_seconds", &kind).record(s.latency_ms as f64 / 1000.0);
    if let Some(first) = s.first_token_ms {
        histogram!("quorate_first_token_seconds", &kind).record(first as f64 / 1000.0);
    }
    if let Some(own) = s.gateway_ms {
        histogram!("quorate_gateway_own_seconds", &kind).record(own / 1000.0);
    }
    if let Some(kind) = &s.error_kind {
        counter!("quorate_request_errors_total", "reason" => kind.clone()).increment(1);
    }
    // By the model asked for: a fusion run's tokens are its whole panel's, judge's and
    // synthesis's.
    counter!("quorate_tokens_total", "model" => model.clone(), "direction" => "prompt")
        .increment(s.prompt_tokens);
    counter!("quorate_tokens_total", "model" => model.clone(), "direction" => "completion")
        .increment(s.completion_tokens);
    if let Some(cost) = s.cost_usd {
        // A gauge only ever increased: counters here are whole numbers, costs are not.
        gauge!("quorate_cost_usd_total", "model" => model).increment(cost);
    }
    attempts(run);
    if let Some(fusion) = &run.detail.fusion {
        fusion_figures(fusion);
    }
}

/// Every try at a model: retries (a second try of a model) and fallbacks (another model).
fn attempts(run: &Run) {
    let mut first_model: Option<&str> = None;
    for a in &run.detail.attempts {
        counter!("quorate_upstream_attempts_total", "provider" => a.provider.clone(),
            "reason" => a.reason.clone())
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
    counter!("quorate_store_dropped_total").absolute(c.dropped.load(Ordering::Relaxed));
    counter!("quorate_store_failed_batches_total")
        .absolute(c.failed_batches.load(Ordering::Relaxed));
    gauge!("quorate_store_last_write_seconds")
        .set(c.last_write_us.load(Ordering::Relaxed) as f64 / 1e6);
}
