//! A request's record for the run store, filled in as the request is answered and handed to the
//! store when it ends: answered, failed, or dropped by a client that went away (recorded then
//! as `client_closed`, status 499). Recording never waits on the database.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::Response;
use quorate_api::{ChatChunk, ChatCompletion, ModelRequest, Usage};
use quorate_fusion::{FusionError, FusionEvent, FusionReport, Item};
use quorate_providers::{Error, RequestCtx};
use quorate_store::{Attempt, Detail, Kind, Run, Store, Summary, TimedEvent};
use rust_decimal::prelude::ToPrimitive;

use crate::chat::unix_millis;

/// Who called: the gateway key's name, never the key.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

pub struct Recorder {
    store: Option<Arc<Store>>,
    ctx: RequestCtx,
    started: Instant,
    /// Boxed: the recorder travels in the request's futures, which are moved whole.
    run: Option<Box<Run>>,
    /// The request as the client sent it, kept when the store keeps text: parsed for the record
    /// on the store's writer thread.
    body: Option<Bytes>,
    /// The answer as streamed so far, when the store keeps text.
    text: String,
    keep_text: bool,
}

impl Recorder {
    /// A record for the request `ctx` names: counted in the metrics, and kept when there is a
    /// store.
    pub fn start(
        store: Option<&Arc<Store>>,
        ctx: &RequestCtx,
        caller: Option<&Caller>,
        request: Option<(&ModelRequest, Option<Bytes>)>,
        fusion: bool,
        surface: &'static str,
    ) -> Self {
        let keep_text = store.is_some_and(|s| s.keeps_content());
        let (request, body) = match request {
            Some((request, body)) => (Some(request), body.filter(|_| keep_text)),
            None => (None, None),
        };
        crate::metrics::started();
        let summary = Summary {
            // What only the store reads (the id, who answered) is left empty without one: the
            // metrics do not need it, and every request would pay for the copies.
            id: if store.is_some() {
                ctx.id().to_string()
            } else {
                String::new()
            },
            created_ms: unix_millis() as i64,
            caller: caller.map(|c| c.0.clone()),
            surface: surface.into(),
            model: request.map(|r| r.model.clone()).unwrap_or_default(),
            kind: if fusion {
                Kind::Fusion
            } else {
                Kind::Completion
            },
            stream: request.is_some_and(|r| r.stream),
            ..Summary::default()
        };
        Self {
            keep_text,
            body,
            store: store.cloned(),
            ctx: ctx.clone(),
            started: Instant::now(),
            run: Some(Box::new(Run {
                summary,
                detail: Detail::default(),
            })),
            text: String::new(),
        }
    }

    /// Takes one item of a fusion run in: its events on the timeline, its text.
    pub fn item(&mut self, item: &Item) {
        match item {
            Item::Event(event) => self.event(event),
            Item::Chunk(chunk) => self.chunk(chunk),
            Item::Answer(_) | Item::Annotations(_) | Item::Done(_) => {}
        }
    }

    /// Keeps the event on the timeline, less the answer and analysis texts the `fusion` object
    /// holds anyway.
    fn event(&mut self, event: &FusionEvent) {
        let t_ms = self.elapsed_ms();
        if let (Some(run), Ok(mut event)) = (self.run.as_mut(), serde_json::to_value(event)) {
            if let Some(fields) = event.as_object_mut() {
                fields.remove("content");
                fields.remove("analysis");
            }
            run.detail.events.push(TimedEvent { t_ms, event });
        }
    }

    /// A streamed chunk: the first with content sets the time to first token.
    pub fn chunk(&mut self, chunk: &ChatChunk) {
        let elapsed = self.elapsed_ms();
        let Some(run) = self.run.as_mut() else {
            return;
        };
        for choice in &chunk.choices {
            if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                run.summary.first_token_ms.get_or_insert(elapsed);
                if self.keep_text {
                    self.text.push_str(text);
                }
            }
        }
        if let Some(usage) = &chunk.usage {
            set_usage(&mut run.summary, usage);
            answered_by(run, &self.store, &chunk.model);
        }
    }

    /// A whole completion answered.
    pub fn completed(mut self, completion: &ChatCompletion) {
        if let Some(run) = self.run.as_mut() {
            run.summary.status = 200;
            answered_by(run, &self.store, &completion.model);
            if let Some(usage) = &completion.usage {
                set_usage(&mut run.summary, usage);
            }
            if self.keep_text {
                run.detail.answer = completion.choices.first().map(|c| c.message.text());
            }
            run.detail.fusion = completion.extra.get("fusion").cloned();
        }
        self.finish();
    }

    /// `completed`, once hyper has taken the last of `response`'s body (see `body`): the
    /// record needs no task of its own.
    pub fn completed_after(self, response: Response, completion: ChatCompletion) -> Response {
        let record = AfterResponse(Some((self, completion)));
        crate::body::guard(response, record).map(Body::new)
    }

    /// A stream that ended well; `report` for a fusion run.
    pub fn streamed(mut self, report: Option<&FusionReport>) {
        if let Some(run) = self.run.as_mut() {
            run.summary.status = 200;
            run.detail.answer = Some(std::mem::take(&mut self.text));
            if let Some(report) = report {
                set_usage(&mut run.summary, &report.total_usage());
                answered_by(run, &self.store, &report.synthesizer);
                run.detail.fusion = Some(report.to_value());
            }
        }
        self.finish();
    }

    /// A request that failed with `error`; `started_streaming` when the response had already
    /// begun (its status was 200).
    pub fn failed(self, error: &Error, started_streaming: bool) {
        self.fail(error, None, started_streaming);
    }

    /// A fusion run that failed: its reason and its report, as far as it got.
    pub fn fusion_failed(mut self, error: &FusionError, started_streaming: bool) {
        if let (Some(run), Some(report)) = (self.run.as_mut(), &error.report) {
            set_usage(&mut run.summary, &report.total_usage());
            run.detail.fusion = Some(report.to_value());
        }
        self.fail(
            &error.error,
            error.reason.map(|r| r.as_str()),
            started_streaming,
        );
    }

    fn fail(mut self, error: &Error, kind: Option<&str>, started_streaming: bool) {
        if let Some(run) = self.run.as_mut() {
            run.summary.status = if started_streaming {
                200
            } else {
                error.status()
            };
            run.summary.error_kind = Some(kind.unwrap_or(error.reason()).to_string());
            run.detail.error = Some(error.to_string());
        }
        self.finish();
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn finish(&mut self) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        run.summary.latency_ms = elapsed.as_millis() as u64;
        let own = elapsed.saturating_sub(self.ctx.upstream_wait());
        run.summary.gateway_ms = Some(own.as_secs_f64() * 1000.0);
        run.detail.attempts = self
            .ctx
            .take_attempts()
            .into_iter()
            .map(|a| Attempt {
                model: a.model,
                provider: a.provider,
                retry: a.retry,
                status: a.status,
                reason: a.reason.into(),
                elapsed_ms: a.elapsed_ms,
            })
            .collect();
        run.summary.saved_tokens = saved_tokens(run.detail.fusion.as_ref());
        if run.detail.answer.is_none() && !self.text.is_empty() {
            run.detail.answer = Some(std::mem::take(&mut self.text));
        }
        crate::metrics::finished(&run);
        if let Some(store) = &self.store {
            store.record_with_request(*run, self.body.take());
        }
    }
}

/// Records a completion when dropped: with its response's body, once hyper has taken all of it.
struct AfterResponse(Option<(Recorder, ChatCompletion)>);

impl Drop for AfterResponse {
    fn drop(&mut self) {
        if let Some((recorder, completion)) = self.0.take() {
            recorder.completed(&completion);
        }
    }
}

/// A client that went away before the end is recorded as such.
impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.summary.status = 499;
            run.summary.error_kind = Some("client_closed".into());
            run.detail.error = Some("the client closed the connection before the end".into());
            self.finish();
        }
    }
}

/// What an early exit saved, from the report's `agreement` (`auto` only).
fn saved_tokens(fusion: Option<&serde_json::Value>) -> u64 {
    let Some(saved) = fusion.and_then(|f| f.pointer("/agreement/saved")) else {
        return 0;
    };
    let tokens = |key: &str| {
        saved
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    tokens("prompt_tokens") + tokens("completion_tokens")
}

/// Who answered, for the store only: without one the copy is skipped (see `Recorder::start`).
fn answered_by(run: &mut Run, store: &Option<Arc<Store>>, model: &str) {
    if store.is_some() {
        run.summary.answered_by = Some(model.to_string());
    }
}

fn set_usage(summary: &mut Summary, usage: &Usage) {
    summary.prompt_tokens = usage.prompt_tokens;
    summary.completion_tokens = usage.completion_tokens;
    summary.cost_usd = usage.cost.and_then(|c| c.to_f64());
}
