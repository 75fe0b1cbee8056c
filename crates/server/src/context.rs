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
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use quorate_api::REQUEST_ID_HEADER;
use quorate_providers::RequestCtx;
use tracing::Instrument;

use crate::chat::unix_millis;
use crate::AppState;

/// Where a completion's run can be fetched: `GET /v1/runs/{id}` (only with the store on).
static RUN_ID: HeaderName = HeaderName::from_static("x-quorate-run-id");
/// Parsed once: a header named by a string is parsed again on every use.
static REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The longest client-sent `x-request-id` kept in logs (it is the caller's text, not ours).
const MAX_CLIENT_ID: usize = 128;

pub async fn attach(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let n = state.request_ids.fetch_add(1, Ordering::Relaxed);
    let ctx = RequestCtx::new(request_id(unix_millis(), &state.instance, n));
    let span = tracing::info_span!("request", id = %ctx.id(), method = %req.method(),
        path = %req.uri().path(), client_request_id = tracing::field::Empty,
        status = tracing::field::Empty);
    if let Some(client) = req.headers().get(&REQUEST_ID) {
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
    if let Ok(id) = HeaderValue::from_str(ctx.id()) {
        if recorded {
            headers.insert(RUN_ID.clone(), id.clone());
        }
        headers.insert(REQUEST_ID.clone(), id);
    }
    let timing = server_timing(ctx.upstream_wait(), started.elapsed());
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        headers.insert(SERVER_TIMING.clone(), timing);
    }
    response
}

/// `gen-<unix ms>-<instance>-<n>`: unique across restarts and replicas. Written without the
/// formatting machinery, which costs more than the rest of the id on every request.
fn request_id(unix_ms: u64, instance: &str, n: u64) -> String {
    let (mut ms, mut count) = (itoa::Buffer::new(), itoa::Buffer::new());
    let parts = [
        "gen-",
        ms.format(unix_ms),
        "-",
        instance,
        "-",
        count.format(n),
    ];
    let mut id = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        id.push_str(part);
    }
    id
}

/// Whether a path is under OpenRouter's prefix (`/api/v1/...`), whose clients get OpenRouter's
/// shapes (errors, stream usage); every other path speaks OpenAI's.
pub fn openrouter_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// A `Server-Timing` header: time waiting on providers and the whole handling up to the response
/// head, in ms, so a client sees what the gateway itself adds (`total - upstream`). For a stream,
/// that is the time to its first byte. Written by hand from whole microseconds: the formatting
/// machinery cost more than the rest of the header.
fn server_timing(upstream: Duration, total: Duration) -> String {
    let mut header = String::with_capacity(64);
    header.push_str("upstream;dur=");
    push_millis(&mut header, upstream);
    header.push_str(";desc=\"provider calls\", total;dur=");
    push_millis(&mut header, total);
    header
}

/// A duration as milliseconds with three decimals.
fn push_millis(out: &mut String, duration: Duration) {
    // u64 microseconds last 584,000 years.
    let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    out.push_str(itoa::Buffer::new().format(us / 1000));
    out.push('.');
    let fraction = us % 1000;
    for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_name_the_time_the_instance_and_the_count() {
        assert_eq!(
            request_id(1_700_000_000_123, "0a1b2c3d", 42),
            "gen-1700000000123-0a1b2c3d-42"
        );
    }

    #[test]
    fn server_timing_is_in_milliseconds_to_the_microsecond() {
        let timing = server_timing(Duration::from_micros(1_234_567), Duration::from_micros(5));
        assert_eq!(
            timing,
            "upstream;dur=1234.567;desc=\"provider calls\", total;dur=0.005"
        );
        let timing = server_timing(Duration::from_micros(2_050), Duration::from_secs(1));
        assert_eq!(
            timing,
            "upstream;dur=2.050;desc=\"provider calls\", total;dur=1000.000"
        );
    }
}
