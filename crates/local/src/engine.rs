//! One loaded GGUF model: its chat template, and the scheduler thread that generates for every
//! request on it (see `scheduler.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use quorate_api::Message;
use quorate_providers::Error;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::sampler::Sampler;
use crate::scheduler;
use crate::template::ChatTemplate;

/// Tokens the model holds at once (all sequences together) when the config does not say: enough
/// for a panel and a judge on a small model, without a large model's full context in memory.
const DEFAULT_CONTEXT: usize = 8192;

/// The process-wide llama.cpp backend (initialised once, logs silenced).
pub fn backend() -> Result<&'static LlamaBackend, Error> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| Error::Unavailable(format!("cannot start llama.cpp: {e}")))
}

/// What the scheduler thread shares with the request side.
pub struct Model {
    pub name: String,
    pub llama: LlamaModel,
    pub template: ChatTemplate,
    /// Tokens of KV cache, shared by all sequences; one request may use all of it.
    pub context_length: usize,
    pub threads: i32,
    /// Sequences generating at once (the provider's slots).
    pub slots: usize,
}

/// Ends a generation early, as if the model had stopped: unlike dropping its events, the
/// generation still reports its exact usage.
#[derive(Clone, Default)]
pub struct Halt(Arc<AtomicBool>);

impl Halt {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Engine {
    model: Arc<Model>,
    jobs: mpsc::Sender<scheduler::Job>,
}

/// Repetition control; the neutral values turn it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// Multiplicative, as in llama.cpp and OpenRouter's `repetition_penalty` (1 = off).
    pub repetition: f32,
    /// OpenAI's `frequency_penalty` (0 = off).
    pub frequency: f32,
    /// OpenAI's `presence_penalty` (0 = off).
    pub presence: f32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self {
            repetition: 1.0,
            frequency: 0.0,
            presence: 0.0,
        }
    }
}

impl Penalties {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Sampling and stopping rules of one generation.
#[derive(Debug, Clone)]
pub struct Params {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub seed: u32,
    pub penalties: Penalties,
    pub stop: Vec<String>,
    /// A GBNF grammar the output must match (JSON modes).
    pub grammar: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub prompt_tokens: u64,
    /// Prompt tokens whose cache came from an earlier or a sibling sequence (not decoded again).
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub finish: Finish,
}

/// What a generation reports, in order: text pieces, then one `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Outcome),
    Failed(Error),
}

pub fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Upstream {
        status: Some(500),
        message: format!("local model: {what}: {e}"),
    }
}

impl Engine {
    /// Loads the GGUF and starts its scheduler, which owns the model's one llama.cpp context.
    pub fn load(
        name: &str,
        path: &Path,
        threads: u32,
        context_length: Option<u64>,
        slots: usize,
    ) -> Result<Self, Error> {
        let backend = backend()?;
        let llama = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| Error::Unavailable(format!("cannot load {}: {e}", path.display())))?;
        let template = ChatTemplate::from_model(&llama)?;
        let trained = llama.n_ctx_train() as usize;
        let context_length = context_length.map_or(DEFAULT_CONTEXT, |c| c as usize);
        let model = Arc::new(Model {
            name: name.to_string(),
            llama,
            template,
            context_length: context_length.min(trained),
            threads: i32::try_from(threads).unwrap_or(1),
            slots: slots.max(1),
        });
        let jobs = scheduler::start(model.clone())?;
        Ok(Self { model, jobs })
    }

    /// Whether the model's chat template shows it tools (so it can call them).
    pub fn supports_tools(&self) -> bool {
        self.model.template.supports_tools()
    }

    /// The conversation as the model's chat template lays it out, followed by `prefill` (the
    /// start of the answer, when the answer must begin a certain way), tokenized.
    pub fn prompt(
        &self,
        messages: &[Message],
        tools: Option<&[Value]>,
        prefill: &str,
    ) -> Result<Vec<LlamaToken>, Error> {
        let mut text = self.model.template.render(messages, tools)?;
        text.push_str(prefill);
        let vocab = self.model.llama.vocab();
        let add_bos = vocab.should_add_bos() && !self.model.template.starts_with_bos(&text);
        Ok(vocab.tokenize(text.as_bytes(), add_bos, true))
    }

    /// Refuses prompts the context cannot hold, naming both counts.
    pub fn check_fits(&self, prompt: usize) -> Result<(), Error> {
        if prompt == 0 {
            return Err(Error::BadRequest("messages: the prompt is empty".into()));
        }
        if prompt >= self.model.context_length {
            return Err(Error::ContextTooLong(format!(
                "messages: the prompt is {prompt} tokens but {} holds {} tokens of context",
                self.model.name, self.model.context_length
            )));
        }
        Ok(())
    }

    /// Queues a generation. Its events arrive on the receiver; dropping the receiver cancels it
    /// (the scheduler notices within one step and frees the sequence's cache), and `halt` ends
    /// it as a stop.
    pub fn submit(
        &self,
        prompt: Vec<LlamaToken>,
        params: Params,
        halt: Halt,
    ) -> Result<UnboundedReceiver<Event>, Error> {
        self.check_fits(prompt.len())?;
        // Built here so a grammar that does not compile is the caller's 400 before any output.
        let sampler = Sampler::new(&self.model.llama, &params)?;
        let (events, receiver): (UnboundedSender<Event>, _) = unbounded_channel();
        self.jobs
            .send(scheduler::Job {
                prompt,
                sampler,
                max_tokens: params.max_tokens,
                stop: params.stop,
                halt,
                events,
            })
            .map_err(|_| failed("scheduler", "it has stopped"))?;
        Ok(receiver)
    }
}
