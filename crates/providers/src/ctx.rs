//! What travels with a request beside its body, passed explicitly from the edge (the server,
//! `quorate ask`, eval) through fusion and the router to the providers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;

use crate::error::Attempt;

#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// How many fusion stages this request is nested in (0 for a caller's request); upstream it
    /// travels as the `x-quorate-fusion-depth` header, so a Quorate behind Quorate refuses to
    /// recurse.
    pub fusion_depth: u8,
    /// One allocation for what every copy shares: a copy is cloned into each layer that needs
    /// the context, on every request.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    upstream: Mutex<Waiting>,
    /// Every try at a model the request made (inner fusion calls included), in order.
    attempts: Mutex<Vec<Attempt>>,
}

/// Wall time during which at least one provider call of the request was in flight. Parallel
/// calls (a fusion panel) overlap, so this is a union of intervals, not a sum: the gateway's own
/// time is then the whole handling minus it.
#[derive(Debug, Default)]
struct Waiting {
    in_flight: u32,
    since: Option<Instant>,
    total: Duration,
}

impl RequestCtx {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            fusion_depth: 0,
            shared: Arc::new(Shared {
                id: id.into(),
                upstream: Mutex::default(),
                attempts: Mutex::default(),
            }),
        }
    }

    /// The gateway's id of the request (the completion's `id`): in its log lines and sent
    /// upstream as `x-request-id`.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub(crate) fn log_attempt(&self, attempt: Attempt) {
        if let Ok(mut attempts) = self.shared.attempts.lock() {
            attempts.push(attempt);
        }
    }

    /// The tries made so far (model, provider, status and time of each), taken out: the
    /// request's record, made once at its end, is their reader.
    pub fn take_attempts(&self) -> Vec<Attempt> {
        self.shared
            .attempts
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    /// The context of an inner call one fusion stage deeper; its waits count for the request.
    pub fn nested(&self) -> Self {
        Self {
            fusion_depth: self.fusion_depth.saturating_add(1),
            ..self.clone()
        }
    }

    /// Marks a provider call (with its retries and backoffs) in flight until the guard drops.
    pub fn waiting(&self) -> WaitGuard {
        if let Ok(mut w) = self.shared.upstream.lock() {
            if w.in_flight == 0 {
                w.since = Some(Instant::now());
            }
            w.in_flight += 1;
        }
        WaitGuard {
            shared: self.shared.clone(),
        }
    }

    /// How long the request has waited on providers so far.
    pub fn upstream_wait(&self) -> Duration {
        self.shared.upstream.lock().map_or(Duration::ZERO, |w| {
            w.total + w.since.map_or(Duration::ZERO, |s| s.elapsed())
        })
    }
}

/// Polls `stream` inside `span`, so that what it does (upstream calls, log lines) is recorded
/// under that span even though the stream is polled after the code that made it returned (an SSE
/// body, a synthesis streamed to the caller).
pub fn in_span<S: Stream + Send>(
    span: tracing::Span,
    stream: S,
) -> impl Stream<Item = S::Item> + Send {
    let mut stream = Box::pin(stream);
    futures::stream::poll_fn(move |cx| {
        let _entered = span.enter();
        stream.as_mut().poll_next(cx)
    })
}

pub struct WaitGuard {
    shared: Arc<Shared>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.shared.upstream.lock() {
            w.in_flight = w.in_flight.saturating_sub(1);
            if w.in_flight == 0 {
                if let Some(since) = w.since.take() {
                    w.total += since.elapsed();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_waits_count_once_and_nested_contexts_share_them() {
        let ctx = RequestCtx::new("gen-1");
        let inner = ctx.nested();
        assert_eq!((inner.fusion_depth, inner.id()), (1, "gen-1"));
        let a = ctx.waiting();
        let b = inner.waiting();
        std::thread::sleep(Duration::from_millis(30));
        drop(a);
        std::thread::sleep(Duration::from_millis(30));
        drop(b);
        std::thread::sleep(Duration::from_millis(30));
        let waited = ctx.upstream_wait();
        assert!(
            waited >= Duration::from_millis(60) && waited < Duration::from_millis(85),
            "one 60 ms interval, not 90 ms of summed waits nor the idle time after: {waited:?}"
        );
        assert_eq!(inner.upstream_wait(), waited);
    }
}
