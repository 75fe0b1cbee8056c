//! The `local` provider: GGUF models run in-process on llama.cpp (the zero-config default).
//!
//! Each model is loaded once, on first use (fetched first if it is a known name), and shared by
//! every request: its scheduler decodes all of its generations together, batched (see
//! `scheduler.rs`). At most `slots` generations run at once; up to `queue` more wait, and beyond
//! that requests get a 503 at once.

mod engine;
mod output;
pub mod pull;
mod sampler;
mod scheduler;
mod template;
mod text;
mod tool_calls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{ChatCompletion, ModelRequest, ResponseFormat};
use quorate_config::{Config, ProviderConfig};
use quorate_providers::{ChunkStream, Error, Provider, RequestCtx};
use serde_json::Value;

use crate::output::Output;
use crate::tool_calls::ToolUse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a full queue tells a client to wait (`Retry-After`): about one short answer's time.
const BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

use engine::{Engine, Halt, Params, Penalties};

/// Output cap when neither the request nor the model config gives one.
const DEFAULT_MAX_TOKENS: usize = 512;

struct Spec {
    gguf: String,
    context_length: Option<u64>,
}

pub struct LocalProvider {
    name: String,
    models: HashMap<String, Spec>,
    threads: u32,
    /// Generations at once, per provider (each model's scheduler is sized for all of them).
    concurrency: usize,
    slots: Arc<Semaphore>,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    engines: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Engine>>>>>,
}

/// Builds the provider `name` from the config: it serves every model configured for it.
pub fn provider(
    name: &str,
    p: &ProviderConfig,
    config: &Config,
) -> Result<Arc<dyn Provider>, Error> {
    let models = config
        .models
        .keys()
        .filter_map(|id| config.resolve(id))
        .filter(|m| m.provider == name)
        .filter_map(|m| {
            let gguf = m.gguf.clone()?;
            Some((
                m.upstream.clone(),
                Spec {
                    gguf,
                    context_length: m.context_length,
                },
            ))
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    Ok(Arc::new(LocalProvider {
        name: name.to_string(),
        models,
        threads: p.threads.unwrap_or(cores),
        concurrency: p.slots as usize,
        slots: Arc::new(Semaphore::new(p.slots as usize)),
        queue: p.queue as usize,
        waiting: Arc::new(AtomicUsize::new(0)),
        engines: Mutex::new(HashMap::new()),
    }))
}

/// Decrements the waiting count however the wait ends (a caller may give up mid-wait).
/// A request waiting for a free slot: counted here and in `quorate_local_queue_depth` until
/// it has one (or is dropped).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: Arc<AtomicUsize>) -> Self {
        metrics::gauge!("quorate_local_queue_depth").increment(1.0);
        Self(count)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("quorate_local_queue_depth").decrement(1.0);
    }
}

impl LocalProvider {
    async fn engine(&self, upstream: &str) -> Result<Arc<Engine>, Error> {
        let spec = self.models.get(upstream).ok_or_else(|| {
            Error::UnknownModel(format!(
                "{}/{upstream} is not a configured local model",
                self.name
            ))
        })?;
        let cell = {
            let mut engines = self.engines.lock().unwrap_or_else(PoisonError::into_inner);
            engines.entry(upstream.to_string()).or_default().clone()
        };
        let engine = cell
            .get_or_try_init(|| async {
                let path = pull::resolve(&spec.gguf, &log_progress)
                    .await
                    .map_err(Error::Unavailable)?;
                let (name, threads, ctx, slots) = (
                    format!("{}/{upstream}", self.name),
                    self.threads,
                    spec.context_length,
                    self.concurrency,
                );
                tracing::info!(model = %name, path = %path.display(), "loading local model");
                let engine = tokio::task::spawn_blocking(move || {
                    Engine::load(&name, &path, threads, ctx, slots)
                })
                .await
                .map_err(|e| Error::Unavailable(format!("model loading failed: {e}")))??;
                Ok::<_, Error>(Arc::new(engine))
            })
            .await?;
        Ok(engine.clone())
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, Error> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("quorate_local_busy_total").increment(1);
            return Err(Error::Overloaded {
                message: format!(
                    "local model busy: {} requests already waiting for a free slot; retry later",
                    self.queue
                ),
                retry_after: Some(BUSY_RETRY_AFTER),
            });
        }
        let _waiting = Waiting::new(self.waiting.clone());
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("local provider is shutting down".into()))
    }
}

fn log_progress(p: pull::Progress) {
    match p {
        pull::Progress::Trying(source) => tracing::info!("fetching the model from {source}"),
        pull::Progress::Verifying => tracing::debug!("verifying the model's SHA-256"),
        pull::Progress::Bytes { .. } => {}
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn complete(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChatCompletion, Error> {
        let model = req.model.clone();
        let mut stream = self.stream(ctx, req).await?;
        let mut whole = output::Whole::default();
        while let Some(chunk) = stream.next().await {
            whole.add(chunk?);
        }
        Ok(whole.completion(model))
    }

    /// The templated prompt's tokens, as a generation would feed them (tools and the answer's
    /// forced start included).
    async fn count_tokens(&self, _ctx: &RequestCtx, req: ModelRequest) -> Result<u64, Error> {
        let engine = self.engine(&req.model).await?;
        let tool_use = ToolUse::of(&req, &req.model, engine.supports_tools())?;
        let prompt = engine.prompt(&req.messages, tool_use.tools, &tool_use.prefill)?;
        Ok(prompt.len() as u64)
    }

    async fn stream(&self, _ctx: &RequestCtx, req: ModelRequest) -> Result<ChunkStream, Error> {
        let params = params(&req)?;
        let engine = self.engine(&req.model).await?;
        let tool_use = ToolUse::of(&req, &req.model, engine.supports_tools())?;
        let prompt = engine.prompt(&req.messages, tool_use.tools, &tool_use.prefill)?;
        engine.check_fits(prompt.len())?;
        let permit = self.slot().await?;
        let halt = Halt::default();
        let events = engine.submit(prompt, params, halt.clone())?;
        let output = Output::new(&req.model, tool_use.parser(), halt);
        let role = output.role();
        // The permit travels with the stream: the slot is free again when the stream ends or
        // is dropped (which also cancels the generation).
        let rest = futures::stream::unfold(Some((events, permit, output)), |state| async move {
            let (mut events, permit, mut output) = state?;
            let event = events.recv().await?;
            let (chunks, more) = output.chunks(event);
            Some((
                futures::stream::iter(chunks),
                more.then_some((events, permit, output)),
            ))
        })
        .flatten();
        Ok(Box::pin(
            futures::stream::once(async { Ok(role) }).chain(rest),
        ))
    }
}

/// Sampling parameters from the request; the errors name the field.
fn params(req: &ModelRequest) -> Result<Params, Error> {
    let bad = |m: String| Error::BadRequest(m);
    let int = |key: &str| -> Result<Option<i64>, Error> {
        match req.extra.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("{key}: must be an integer"))),
        }
    };
    let float = |key: &str, range: std::ops::RangeInclusive<f64>| -> Result<Option<f32>, Error> {
        match req.extra.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if range.contains(&x) => Ok(Some(x as f32)),
                _ => Err(bad(format!(
                    "{key}: must be a number from {} to {}",
                    range.start(),
                    range.end()
                ))),
            },
        }
    };
    let seed = req.seed.map_or_else(rand_seed, |s| s as u32);
    let top_k = int("top_k")?.map_or(40, |k| k.clamp(1, 1000) as i32);
    let defaults = Penalties::default();
    let penalties = Penalties {
        repetition: float("repetition_penalty", 0.01..=2.0)?.unwrap_or(defaults.repetition),
        frequency: float("frequency_penalty", -2.0..=2.0)?.unwrap_or(defaults.frequency),
        presence: float("presence_penalty", -2.0..=2.0)?.unwrap_or(defaults.presence),
    };
    Ok(Params {
        max_tokens: req.max_tokens.map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
        // SmolLM2's model card recommends 0.2; small models ramble when sampled hotter.
        temperature: req.temperature.unwrap_or(0.2) as f32,
        top_p: req.top_p.unwrap_or(0.95) as f32,
        top_k,
        seed,
        penalties,
        stop: req.stop.clone(),
        grammar: grammar(req.response_format.as_ref())?,
    })
}

fn rand_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id()
}

/// `response_format` as a grammar: `json_object` is any JSON object, `json_schema` its schema.
fn grammar(format: Option<&ResponseFormat>) -> Result<Option<String>, Error> {
    let schema = match format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => serde_json::json!({"type": "object"}),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            json_schema.schema.clone().ok_or_else(|| {
                Error::BadRequest("response_format.json_schema.schema: required".into())
            })?
        }
    };
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(Some)
        .map_err(|e| {
            Error::BadRequest(format!(
                "response_format.json_schema.schema: cannot be enforced: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ModelRequest {
        serde_json::from_value::<quorate_api::ChatRequest>(v)
            .unwrap()
            .into()
    }

    #[test]
    fn params_from_request() {
        let p = params(&req(json!({"model": "m", "messages": [], "seed": 7, "max_tokens": 9, "temperature": 0, "stop": "x", "top_k": 5}))).unwrap();
        assert_eq!(
            (p.seed, p.max_tokens, p.temperature, p.top_k),
            (7, 9, 0.0, 5)
        );
        assert_eq!(p.stop, ["x"]);
        assert!(p.grammar.is_none());
        let e = params(&req(
            json!({"model": "m", "messages": [], "frequency_penalty": "x"}),
        ))
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("frequency_penalty"), "{e}");
    }

    #[test]
    fn response_formats_become_grammars() {
        let format = |v: Value| serde_json::from_value::<ResponseFormat>(v).unwrap();
        let object = grammar(Some(&format(json!({"type": "json_object"}))))
            .unwrap()
            .unwrap();
        assert!(object.contains("root ::="));
        let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
        assert!(grammar(Some(&format(schema)))
            .unwrap()
            .unwrap()
            .contains("city"));
        assert!(grammar(Some(&format(json!({"type": "text"}))))
            .unwrap()
            .is_none());
        let unschemed = format(json!({"type": "json_schema", "json_schema": {"name": "x"}}));
        let e = grammar(Some(&unschemed)).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("response_format.json_schema.schema"));
    }
}
