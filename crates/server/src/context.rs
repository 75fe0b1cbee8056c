//! Every request's context, made once at the edge: its id, a `request` span that holds it (so
//! every log line of the request names it, and every upstream attempt and fusion stage nests
//! under it), and on the response the `x-request-id` and `Server-Timing` headers, whatever path
//! answered (JSON, SSE, fusion, errors), and errors in the path's dialect. A declared body over
//! the limit is refused here, before anything reads it. One middleware for all of it: each layer
//! costs every request a boxed future.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use quorate_api::REQUEST_ID_HEADER;
use quorate_providers::RequestCtx;
use tracing::Instrument;

use crate::chat::unix_millis;
use crate::AppState;

/// Where a completion's run can be fetched: `GET /v1/runs/{id}` (only with the store on).
const RUN_ID_HEADER: &str = "x-quorate-run-id";

/// The longest client-sent `x-request-id` kept in logs (it is the caller's text, not ours).
const MAX_CLIENT_ID: usize = 128;

pub async fn attach(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let n = state.request_ids.fetch_add(1, Ordering::Relaxed);
    let ctx = RequestCtx::new(format!("gen-{}-{}-{n}", unix_millis(), state.instance));
    let span = tracing::info_span!("request", id = %ctx.id, method = %req.method(),
        path = %req.uri().path(), client_request_id = tracing::field::Empty,
        status = tracing::field::Empty);
    if let Some(client) = req.headers().get(REQUEST_ID_HEADER) {
        let client = String::from_utf8_lossy(client.as_bytes());
        let client: String = client.chars().take(MAX_CLIENT_ID).collect();
        span.record("client_request_id", tracing::field::debug(client));
    }
    let openrouter = openrouter_path(req.uri().path());
    // The record a completion leaves in the run store is read back by this id.
    let recorded = state.store.is_some() && req.uri().path().ends_with("/chat/completions");
    req.extensions_mut().insert(ctx.clone());
    let max_body = state.router.config().server.max_body_bytes;
    let response = match crate::error::declared_oversize(req.headers(), max_body) {
        Some(refused) => refused,
        None => next.run(req).instrument(span.clone()).await,
    };
    let mut response = crate::error::in_dialect(response, openrouter);
    span.record("status", response.status().as_u16());
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&ctx.id) {
        if recorded {
            headers.insert(RUN_ID_HEADER, id.clone());
        }
        headers.insert(REQUEST_ID_HEADER, id);
    }
    let timing = server_timing(ctx.upstream_wait(), started.elapsed());
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", timing);
    }
    response
}

/// Whether a path is under OpenRouter's prefix (`/api/v1/...`), whose clients get OpenRouter's
/// shapes (errors, stream usage); every other path speaks OpenAI's.
pub fn openrouter_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// A `Server-Timing` header: time waiting on providers and the whole handling up to the response
/// head, in ms, so a client sees what the gateway itself adds (`total - upstream`). For a stream,
/// that is the time to its first byte. Written from whole microseconds: formatting two floats
/// cost more than the rest of the header.
fn server_timing(upstream: Duration, total: Duration) -> String {
    format!(
        "upstream;dur={};desc=\"provider calls\", total;dur={}",
        Millis(upstream),
        Millis(total)
    )
}

/// A duration as milliseconds with three decimals.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_in_milliseconds_to_the_microsecond() {
        let timing = server_timing(Duration::from_micros(1_234_567), Duration::from_micros(5));
        assert_eq!(
            timing,
            "upstream;dur=1234.567;desc=\"provider calls\", total;dur=0.005"
        );
    }
}
