//! Routing: a model id to its candidates (the model, then fallbacks), each tried with retries
//! under a per-call timeout. Streams fall back only until the first content token; after that an
//! upstream failure ends the stream with an error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use quorate_api::{ChatCompletion, ModelRequest};
use quorate_config::{Config, ProviderConfig, ProviderKind, ResolvedModel, Secrets};
use rand::Rng;
use serde_json::Value;
use tracing::Instrument;

use crate::anthropic::Anthropic;
use crate::error::Attempt;
use crate::openai::OpenAi;
use crate::scrub::Scrubbed;
use crate::{cost, http, ChunkStream, Error, Provider, RequestCtx};

/// A stream of chunks for the caller: model ids are the gateway's, usage carries cost.
pub type RoutedStream = ChunkStream;

/// The longest backoff between two tries, whatever the attempt count.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    providers: HashMap<String, Entry>,
}

struct Entry {
    provider: Scrubbed,
    policy: Policy,
}

#[derive(Clone, Copy)]
struct Policy {
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    max_retry_after: Duration,
}

impl Policy {
    fn from_config(p: &ProviderConfig) -> Self {
        Self {
            timeout: Duration::from_secs_f64(p.timeout_s),
            max_retries: p.max_retries,
            backoff: Duration::from_millis(p.backoff_ms),
            max_retry_after: Duration::from_secs_f64(p.max_retry_after_s),
        }
    }

    /// How long to wait before retry number `attempt` (0-based) after `error`, or `None` when the
    /// error is not worth retrying here.
    fn delay(&self, attempt: u32, error: &Error) -> Option<Duration> {
        if attempt >= self.max_retries || !error.is_retryable() {
            return None;
        }
        if let Some(after) = error.retry_after() {
            return (after <= self.max_retry_after).then_some(after);
        }
        let exp = self.backoff.saturating_mul(1 << attempt.min(16));
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        Some(exp.mul_f64(jitter).min(MAX_BACKOFF))
    }
}

/// Builds the providers of a kind this crate does not implement: the local engine lives in a crate
/// of its own, so that llama.cpp is compiled only where it is needed.
pub type ProviderFactory =
    dyn Fn(&str, &ProviderConfig, &Config) -> Result<Arc<dyn Provider>, Error>;

impl Router {
    /// A router for the HTTP provider kinds only; local providers answer 503.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_local(config, None)
    }

    pub fn with_local(config: Config, local: Option<&ProviderFactory>) -> Result<Self, Error> {
        let client = http::client(&config.server)?;
        let secrets = Secrets::from_env(&config);
        let mut providers = HashMap::new();
        for (name, p) in &config.providers {
            let provider: Arc<dyn Provider> = match (p.kind, local) {
                (ProviderKind::Openai, _) => Arc::new(OpenAi::new(name, p, client.clone())?),
                (ProviderKind::Anthropic, _) => Arc::new(Anthropic::new(name, p, client.clone())?),
                (ProviderKind::Local, Some(make)) => make(name, p, &config)?,
                (ProviderKind::Local, None) => continue,
            };
            let provider = Scrubbed::wrap(provider, &secrets);
            let policy = Policy::from_config(p);
            providers.insert(name.clone(), Entry { provider, policy });
        }
        Ok(Self {
            inner: Arc::new(Inner { config, providers }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The models to try, in order: the requested one, then the request's `models` list if it
    /// has one, else the model's configured fallbacks.
    pub fn candidates(&self, req: &ModelRequest) -> Result<Vec<ResolvedModel>, Error> {
        let config = &self.inner.config;
        let mut out = vec![self.primary(req)?];
        match &req.fallbacks {
            Some(models) => {
                for (i, id) in models.iter().enumerate() {
                    let model = config.resolve(id).ok_or_else(|| {
                        Error::BadRequest(format!("models[{i}]: unknown model {id:?}"))
                    })?;
                    out.push(model);
                }
            }
            None => {
                for id in &out[0].fallbacks.clone() {
                    out.extend(config.resolve(id));
                }
            }
        }
        if out.len() > 1 {
            let mut seen = std::collections::HashSet::new();
            out.retain(|m| seen.insert(m.id.clone()));
        }
        Ok(out)
    }

    /// Tries each candidate in turn, with retries. The time spent in provider calls (every
    /// attempt and backoff) counts as the request's upstream wait.
    ///
    /// The request is borrowed: each candidate's upstream gets its own copy, and the caller's
    /// future does not carry the request twice.
    pub async fn complete(
        &self,
        ctx: &RequestCtx,
        req: &ModelRequest,
    ) -> Result<ChatCompletion, Error> {
        let candidates = self.candidates(req)?;
        let mut tried = Tried::default();
        let _waiting = ctx.waiting();
        for model in &candidates {
            let entry = self.entry(model)?;
            let upstream = upstream_request(req, model);
            let result = retrying(ctx, model, entry.policy, &mut tried, |span| {
                let call = entry.provider.call(|p| p.complete(ctx, upstream.clone()));
                with_timeout(entry.policy.timeout, call, model).map(move |result| {
                    if let Ok(completion) = &result {
                        if let Some(usage) = &completion.usage {
                            span.record("tokens", usage.completion_tokens);
                        }
                    }
                    result
                })
            })
            .await;
            if let Some(mut completion) = result {
                finish_completion(&mut completion, model);
                return Ok(completion);
            }
        }
        Err(tried.into_error())
    }

    /// The requested model.
    fn primary(&self, req: &ModelRequest) -> Result<ResolvedModel, Error> {
        self.inner.config.resolve(&req.model).ok_or_else(|| {
            Error::UnknownModel(format!(
                "model {:?} is not configured: GET /v1/models lists the available models",
                req.model
            ))
        })
    }

    /// The prompt's size in tokens, counted by the requested model's provider: no retries and no
    /// fallbacks, since another model's count would be another number.
    pub async fn count_tokens(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<u64, Error> {
        let model = self.primary(&req)?;
        let entry = self.entry(&model)?;
        let _waiting = ctx.waiting();
        let upstream = upstream_request(&req, &model);
        let call = entry.provider.call(|p| p.count_tokens(ctx, upstream));
        with_timeout(entry.policy.timeout, call, &model).await
    }

    /// Opens a stream on the first candidate that accepts the request. The returned stream keeps
    /// falling back to later candidates while no content has been sent.
    pub async fn stream(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<RoutedStream, Error> {
        let candidates = self.candidates(&req)?;
        let mut tried = Tried::default();
        let (index, first) = self
            .open_from(ctx, &req, &candidates, 0, &mut tried)
            .await?;
        let router = self.clone();
        let ctx = ctx.clone();
        Ok(Box::pin(async_stream::stream! {
            let mut index = index;
            let mut current = first;
            let mut started = false;
            let mut opened = Instant::now();
            loop {
                let model = &candidates[index];
                match current.next().await {
                    Some(Ok(mut chunk)) => {
                        started |= chunk.has_content();
                        chunk.model = model.id.clone();
                        if let Some(usage) = chunk.usage.as_mut() {
                            usage.cost = Some(cost::price(usage, model));
                        }
                        yield Ok(chunk);
                    }
                    Some(Err(e)) if !started => {
                        tracing::warn!(model = %model.id, error = %e, "stream failed before content; falling back");
                        tried.push(&ctx, model, tried.retries_of(model), e.context(&model.id), opened);
                        match router.open_from(&ctx, &req, &candidates, index + 1, &mut tried).await {
                            Ok((next, stream)) => { index = next; current = stream; opened = Instant::now(); }
                            Err(e) => { yield Err(e); return; }
                        }
                    }
                    Some(Err(e)) => { yield Err(e.context(&model.id)); return; }
                    None => return,
                }
            }
        }))
    }

    /// Tries candidates from `start` on; returns the index that accepted and its stream. The wait
    /// until one accepts counts as the request's upstream wait.
    async fn open_from(
        &self,
        ctx: &RequestCtx,
        req: &ModelRequest,
        candidates: &[ResolvedModel],
        start: usize,
        tried: &mut Tried,
    ) -> Result<(usize, ChunkStream), Error> {
        let _waiting = ctx.waiting();
        for (index, model) in candidates.iter().enumerate().skip(start) {
            let entry = self.entry(model)?;
            let upstream = upstream_request(req, model);
            let result = retrying(ctx, model, entry.policy, tried, |_| {
                let call = entry.provider.stream(ctx, upstream.clone());
                with_timeout(entry.policy.timeout, call, model)
            })
            .await;
            if let Some(stream) = result {
                return Ok((index, stream));
            }
        }
        Err(std::mem::take(tried).into_error())
    }

    fn entry(&self, model: &ResolvedModel) -> Result<&Entry, Error> {
        self.inner.providers.get(&model.provider).ok_or_else(|| {
            Error::Unavailable(format!(
                "model {}: provider {} is not configured",
                model.id, model.provider
            ))
        })
    }
}

/// The caller's request as one candidate's upstream sees it.
fn upstream_request(req: &ModelRequest, model: &ResolvedModel) -> ModelRequest {
    let mut upstream = req.clone();
    upstream.model = model.upstream.clone();
    upstream.fallbacks = None;
    if upstream.max_tokens.is_none() {
        upstream.max_tokens = model.max_output_tokens;
    }
    upstream
}

fn finish_completion(completion: &mut ChatCompletion, model: &ResolvedModel) {
    completion.model = model.id.clone();
    let usage = completion.usage.get_or_insert_with(|| {
        tracing::warn!(model = %model.id, "upstream reported no usage");
        Default::default()
    });
    usage.total_tokens = usage
        .total_tokens
        .max(usage.prompt_tokens + usage.completion_tokens);
    usage.cost = Some(cost::price(usage, model));
    completion
        .extra
        .insert("provider".into(), Value::String(model.provider.clone()));
}

async fn with_timeout<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, Error>>,
    model: &ResolvedModel,
) -> Result<T, Error> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout(format!(
                "no answer from upstream within {}s",
                limit.as_secs_f64()
            )))
        })
        .map_err(|e| e.context(&model.id))
}

/// Runs `call` until it succeeds, the error is not retryable, or retries are spent, each try in
/// an `attempt` span (model, provider, retry, status) that `call` may add to. Each failed try goes
/// into `tried`, where the caller reads the error from.
async fn retrying<T, F, Fut>(
    ctx: &RequestCtx,
    model: &ResolvedModel,
    policy: Policy,
    tried: &mut Tried,
    call: F,
) -> Option<T>
where
    F: Fn(tracing::Span) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut retry = 0;
    loop {
        let started = Instant::now();
        let span = tracing::info_span!("attempt", model = %model.id, provider = %model.provider,
            retry, status = tracing::field::Empty, tokens = tracing::field::Empty);
        let result = call(span.clone()).instrument(span.clone()).await;
        span.record(
            "status",
            result.as_ref().map_or_else(Error::status, |_| 200),
        );
        let error = match result {
            Ok(value) => {
                ctx.log_attempt(Attempt::ok(model, retry, started));
                return Some(value);
            }
            Err(e) => e,
        };
        let delay = policy.delay(retry, &error);
        if let Some(delay) = delay {
            tracing::warn!(model = %model.id, retry, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
        }
        tried.push(ctx, model, retry, error, started);
        match delay {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            None => return None,
        }
    }
}

/// The failed tries of one call, across retries and fallbacks.
#[derive(Default)]
struct Tried {
    attempts: Vec<Attempt>,
    last: Option<Error>,
}

impl Tried {
    /// A failed try, kept for the error and logged in the request's context.
    fn push(
        &mut self,
        ctx: &RequestCtx,
        model: &ResolvedModel,
        retry: u32,
        error: Error,
        started: Instant,
    ) {
        let attempt = Attempt {
            model: model.id.clone(),
            provider: model.provider.clone(),
            retry,
            status: error.status(),
            reason: error.reason(),
            message: error.to_string(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        ctx.log_attempt(attempt.clone());
        self.attempts.push(attempt);
        self.last = Some(error);
    }

    /// How many tries of `model` failed before: the retry number of its next one.
    fn retries_of(&self, model: &ResolvedModel) -> u32 {
        let earlier = self.attempts.iter().filter(|a| a.model == model.id).count();
        u32::try_from(earlier).unwrap_or(u32::MAX)
    }

    /// One error for the call: a single try's own, or the chain with every attempt, whose last
    /// error's kind decides the status.
    fn into_error(self) -> Error {
        match self.last {
            None => Error::Unavailable("no model could serve the request".into()),
            Some(last) if self.attempts.len() < 2 => last,
            Some(last) => Error::Attempts {
                attempts: self.attempts,
                last: Box::new(last),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            max_retries,
            backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let p = policy(5);
        let e = Error::Upstream {
            status: Some(500),
            message: "x".into(),
        };
        for attempt in 0..4 {
            let d = p.delay(attempt, &e).unwrap().as_secs_f64();
            let base = 0.1 * f64::from(1u32 << attempt);
            assert!(d >= base * 0.5 && d <= base * 1.5, "attempt {attempt}: {d}");
        }
        let limited = |s| Error::RateLimited {
            message: "x".into(),
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.delay(0, &limited(2)), Some(Duration::from_secs(2)));
        assert_eq!(
            p.delay(0, &limited(60)),
            None,
            "too long a wait goes to the next fallback"
        );
        assert_eq!(p.delay(5, &e), None, "retries spent");
        assert_eq!(p.delay(0, &Error::BadRequest("x".into())), None);
    }

    #[test]
    fn candidates_follow_request_list_or_config_fallbacks() {
        let config = Config::from_toml(
            r#"
            [models."openai/a"]
            provider = "openai"
            fallbacks = ["openai/b"]
            [models."openai/b"]
            provider = "openai"
            "#,
            "t",
        )
        .unwrap();
        let router = Router::new(config).unwrap();
        let req = |v: serde_json::Value| {
            let wire = serde_json::from_value::<quorate_api::ChatRequest>(v).unwrap();
            wire.into_request().unwrap()
        };
        let ids = |r: &ModelRequest| -> Vec<String> {
            router
                .candidates(r)
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        let msgs = serde_json::json!([{"role": "user", "content": "x"}]);
        assert_eq!(
            ids(&req(
                serde_json::json!({"model": "openai/a", "messages": msgs})
            )),
            ["openai/a", "openai/b"]
        );
        assert_eq!(
            ids(&req(
                serde_json::json!({"model": "openai/a", "messages": msgs, "models": ["openai/a", "anthropic/c"]})
            )),
            ["openai/a", "anthropic/c"]
        );
        let err = router
            .candidates(&req(
                serde_json::json!({"model": "ghost", "messages": msgs}),
            ))
            .unwrap_err();
        assert_eq!(err.status(), 404);
        assert!(err.to_string().contains("/v1/models"));
        let err = router
            .candidates(&req(
                serde_json::json!({"model": "openai/a", "messages": msgs, "models": ["x"]}),
            ))
            .unwrap_err();
        assert_eq!(
            (err.status(), err.to_string().starts_with("models[0]")),
            (400, true)
        );
    }
}
