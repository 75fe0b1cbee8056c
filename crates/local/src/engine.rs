//! One loaded GGUF model and the generation loop on llama.cpp.
//!
//! A model is loaded once and shared. Each generation gets a context sized to what it needs
//! (prompt plus output cap, within the model's context length), so memory grows with the work in
//! flight rather than with the configured maximum, and is freed when the generation ends.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use quorate_api::Message;
use quorate_providers::Error;

use crate::template::ChatTemplate;

/// Tokens decoded per llama.cpp batch. Prompts are fed in chunks of this size: a batch larger
/// than the context's batch size makes llama.cpp abort the process.
const BATCH: usize = 512;

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

pub struct Engine {
    name: String,
    model: LlamaModel,
    template: ChatTemplate,
    threads: i32,
    context_length: usize,
    /// llama.cpp may touch the model while creating a context: never two at once.
    create: Mutex<()>,
}

/// Sampling and stopping rules of one generation.
#[derive(Debug, Clone)]
pub struct Params {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub seed: u32,
    pub stop: Vec<String>,
    /// A GBNF grammar the output must match (JSON modes).
    pub grammar: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    /// The consumer went away; generation stopped early.
    Abandoned,
}

impl Finish {
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop | Finish::Abandoned => "stop",
            Finish::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub finish: Finish,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Upstream {
        status: Some(500),
        message: format!("local model: {what}: {e}"),
    }
}

impl Engine {
    pub fn load(
        name: &str,
        path: &Path,
        threads: u32,
        context_length: Option<u64>,
    ) -> Result<Self, Error> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| Error::Unavailable(format!("cannot load {}: {e}", path.display())))?;
        let template = ChatTemplate::from_model(&model)?;
        let trained = model.n_ctx_train() as usize;
        let context_length = context_length.map_or(trained, |c| (c as usize).min(trained));
        Ok(Self {
            name: name.to_string(),
            model,
            template,
            threads: i32::try_from(threads).unwrap_or(1),
            context_length,
            create: Mutex::new(()),
        })
    }

    /// The conversation as the model's chat template lays it out, tokenized.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<LlamaToken>, Error> {
        let text = self.template.render(messages)?;
        let vocab = self.model.vocab();
        let add_bos = vocab.should_add_bos() && !self.template.starts_with_bos(&text);
        Ok(vocab.tokenize(text.as_bytes(), add_bos, true))
    }

    /// Refuses prompts the context cannot hold, naming both counts.
    pub fn check_fits(&self, prompt: usize) -> Result<(), Error> {
        if prompt == 0 {
            return Err(Error::BadRequest("messages: the prompt is empty".into()));
        }
        if prompt >= self.context_length {
            return Err(Error::BadRequest(format!(
                "messages: the prompt is {prompt} tokens but {} holds {} tokens of context",
                self.name, self.context_length
            )));
        }
        Ok(())
    }

    /// Generates from `prompt`, handing text to `emit` as it comes; `emit` returns false when
    /// nobody is listening any more, which ends the generation at once.
    pub fn generate(
        &self,
        prompt: &[LlamaToken],
        params: &Params,
        mut emit: impl FnMut(&str) -> bool,
    ) -> Result<Outcome, Error> {
        self.check_fits(prompt.len())?;
        let room = self.context_length - prompt.len();
        let max_new = params.max_tokens.min(room);
        let n_ctx = (prompt.len() + max_new + 1).min(self.context_length);
        let n_batch = BATCH.min(n_ctx);
        let context_params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx as u32))
            .with_n_batch(n_batch as u32)
            .with_n_ubatch(n_batch as u32)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = {
            let _guard = self.create.lock().unwrap_or_else(PoisonError::into_inner);
            self.model
                .new_context(backend()?, context_params)
                .map_err(|e| failed("cannot create a context", e))?
        };
        let mut batch = LlamaBatch::new(n_batch, 1);
        for (i, chunk) in prompt.chunks(n_batch).enumerate() {
            batch.clear();
            for (j, token) in chunk.iter().enumerate() {
                let pos = i * n_batch + j;
                batch
                    .add(*token, pos as i32, &[0], pos + 1 == prompt.len())
                    .map_err(|e| failed("batch", e))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| failed("prompt decoding", e))?;
        }
        let mut sampler = self.sampler(params)?;
        let vocab = self.model.vocab();
        let mut text = TextOut::new(&params.stop);
        let mut generated = 0;
        let finish = loop {
            if generated >= max_new {
                break Finish::Length;
            }
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break Finish::Stop;
            }
            generated += 1;
            let bytes = vocab.token_to_piece(token, false, None);
            let (piece, stopped) = text.push(&bytes);
            if !piece.is_empty() && !emit(&piece) {
                break Finish::Abandoned;
            }
            if stopped {
                break Finish::Stop;
            }
            batch.clear();
            let pos = (prompt.len() + generated - 1) as i32;
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| failed("batch", e))?;
            ctx.decode(&mut batch).map_err(|e| failed("decoding", e))?;
        };
        if finish != Finish::Abandoned {
            let rest = text.finish();
            if !rest.is_empty() {
                emit(&rest);
            }
        }
        Ok(Outcome {
            prompt_tokens: prompt.len() as u64,
            completion_tokens: generated as u64,
            finish,
        })
    }

    fn sampler(&self, p: &Params) -> Result<LlamaSampler, Error> {
        let mut chain = Vec::new();
        if let Some(grammar) = &p.grammar {
            let g = LlamaSampler::grammar(&self.model, grammar, "root").map_err(|e| {
                Error::BadRequest(format!("response_format: the grammar did not compile: {e}"))
            })?;
            chain.push(g);
        }
        if p.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::top_k(p.top_k));
            chain.push(LlamaSampler::top_p(p.top_p, 1));
            chain.push(LlamaSampler::temp(p.temperature));
            chain.push(LlamaSampler::dist(p.seed));
        }
        Ok(LlamaSampler::chain_simple(chain))
    }
}

/// Turns token bytes into text: holds back incomplete UTF-8 sequences and anything that may be
/// the start of a stop string, and cuts the text at a stop string.
struct TextOut<'a> {
    pending: Vec<u8>,
    held: String,
    stop: &'a [String],
}

impl<'a> TextOut<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self {
            pending: Vec::new(),
            held: String::new(),
            stop,
        }
    }

    /// Returns the text that is safe to emit, and whether a stop string was reached.
    fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Not UTF-8 at all: pass it on replaced rather than stall.
            Err(_) => self.pending.len(),
        };
        let decoded: Vec<u8> = self.pending.drain(..valid).collect();
        self.held.push_str(&String::from_utf8_lossy(&decoded));
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.partial_stop_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// Length of the longest suffix of the held text that begins some stop string.
    fn partial_stop_len(&self) -> usize {
        let mut best = 0;
        for stop in self.stop {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    best = best.max(i);
                }
            }
        }
        best
    }

    fn finish(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.held);
        rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_out_joins_split_utf8_and_cuts_at_stop() {
        let stop = vec!["END".to_string()];
        let mut out = TextOut::new(&stop);
        let e_acute = "é".as_bytes();
        assert_eq!(out.push(&e_acute[..1]), (String::new(), false));
        assert_eq!(out.push(&e_acute[1..]), ("é".to_string(), false));
        assert_eq!(
            out.push(b" fin E"),
            (" fin ".to_string(), false),
            "a possible stop start is held"
        );
        assert_eq!(out.push(b"N"), (String::new(), false));
        assert_eq!(out.push(b"D and more"), (String::new(), true));
        let mut out = TextOut::new(&stop);
        assert_eq!(out.push(b"E"), (String::new(), false));
        assert_eq!(
            out.push(b"x"),
            ("Ex".to_string(), false),
            "released once it cannot be a stop"
        );
        assert_eq!(out.push(b"E"), (String::new(), false));
        assert_eq!(out.finish(), "E");
    }
}
