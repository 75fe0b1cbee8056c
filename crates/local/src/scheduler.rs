//! Continuous batching: one thread per loaded model owns the model's one llama.cpp context and
//! runs every generation on it, one sequence id per generation.
//!
//! Each step decodes one batch holding the next token of every generating sequence plus chunks
//! of prompts still being read (chunked prefill, so a long prompt does not stall the others);
//! two or three generating sequences alone may be decoded one at a time (see `SmallSteps`).
//! Sequences start, finish and are cancelled independently.
//!
//! The KV cache is unified: a prompt prefix that another sequence already decoded is shared with
//! `seq_cp` instead of being decoded again. Fusion panel slots send the same prompt at the same
//! moment, so a sequence whose prompt a sibling admitted earlier is about to decode waits one step
//! and then shares it. A finished sequence keeps its cache as long as nothing needs the room, so a
//! later prompt that extends it (the next turn of a chat) starts where it ended.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use quorate_providers::Error;
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{backend, failed, Event, Finish, Halt, Model, Outcome};
use crate::sampler::Sampler;
use crate::text::TextOut;

/// Tokens per decode step. A batch larger than the context's batch size makes llama.cpp abort.
const BATCH: usize = 512;

/// A sequence waits for an earlier sibling to decode a prompt prefix they share only when it
/// gains at least this many tokens by waiting.
const MIN_SHARED: usize = 8;

/// A step of this many generating sequences or fewer, with no prompt being read, may be decoded
/// one sequence at a time (see `SmallSteps`).
const SMALL_STEP: usize = 3;

/// Steps of each size each way before `SmallSteps` keeps the quicker way.
const TRIES: u32 = 4;

/// llama.cpp's limit on sequence ids in one context.
const MAX_SEQ_IDS: usize = 256;

/// One generation handed to the scheduler.
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    pub sampler: Sampler,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub halt: Halt,
    pub events: UnboundedSender<Event>,
}

/// Starts the scheduler thread of `model` and returns where to send it jobs; it stops when the
/// sender is dropped and nothing is left to do.
pub fn start(model: Arc<Model>) -> Result<mpsc::Sender<Job>, Error> {
    let (jobs, receiver) = mpsc::channel();
    let (ready, started) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("llama {}", model.name))
        .spawn(move || run(&model, &receiver, &ready))
        .map_err(|e| failed("cannot start the scheduler thread", e))?;
    started
        .recv()
        .map_err(|_| failed("scheduler", "it stopped while starting"))??;
    Ok(jobs)
}

fn run(model: &Model, jobs: &mpsc::Receiver<Job>, ready: &mpsc::Sender<Result<(), Error>>) {
    match context(model) {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            Scheduler::new(model, ctx).serve(jobs);
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// Sequence ids: one per slot, and as many again for finished sequences kept for their prefix.
fn seq_ids(slots: usize) -> usize {
    (slots * 2).clamp(2, MAX_SEQ_IDS)
}

fn context(model: &Model) -> Result<LlamaContext<'_>, Error> {
    let n_batch = BATCH.min(model.context_length) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(model.context_length as u32))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(seq_ids(model.slots) as u32)
        .with_kv_unified(true)
        .with_n_threads(model.threads)
        .with_n_threads_batch(model.threads);
    model
        .llama
        .new_context(backend()?, params)
        .map_err(|e| failed("cannot create a context", e))
}

/// A sequence id in use: by a running generation, or idle with its cache kept.
struct Seq {
    /// Tokens whose keys and values are in the cache under this id, position by position.
    cached: Vec<LlamaToken>,
    run: Option<Run>,
    /// Scheduler clock at the last use, for evicting the least recently used idle sequence.
    used: u64,
}

/// A generation in progress.
struct Run {
    prompt: Vec<LlamaToken>,
    sampler: Sampler,
    text: TextOut,
    halt: Halt,
    events: UnboundedSender<Event>,
    max_new: usize,
    generated: usize,
    /// Prompt tokens whose cache came from another sequence.
    reused: usize,
    /// The token sampled last step, decoded this step.
    next: Option<LlamaToken>,
    /// This step's batch index holding the logits of the next token.
    logits: Option<i32>,
    /// Admission order: earlier sequences decode a shared prefix, later ones copy it.
    admitted: u64,
    started: Instant,
    /// When the first output token was sampled (the prompt was read).
    first_token: Option<Instant>,
}

impl Run {
    /// Cache cells this generation may need (counted in full, shared or not).
    fn reserved(&self) -> usize {
        self.prompt.len() + self.max_new
    }

    fn prefilling(&self, cached: usize) -> bool {
        cached < self.prompt.len()
    }
}

/// How steps of two or three generating sequences (with no prompt being read) are decoded: as one
/// batch or one sequence at a time, whichever has been faster for this model on this machine.
/// llama.cpp multiplies two or more tokens with kernels made for prompts, which for some weight
/// types take longer than as many one-token steps (`examples/decode_steps.rs`, 2 threads, AVX2:
/// Qwen2.5-Coder 0.5B, mostly Q5_0/Q8_0, three tokens 60 ms at once and 50 ms one by one; the
/// 1.5B, Q4_K, 70 and 90 ms).
struct SmallSteps {
    /// The quickest step seen, in milliseconds, by step size (2, 3) and way (batched, one by one):
    /// other work on the machine only ever makes a step slower.
    quickest: [[f64; 2]; SMALL_STEP - 1],
    tries: [[u32; 2]; SMALL_STEP - 1],
}

impl Default for SmallSteps {
    fn default() -> Self {
        Self {
            quickest: [[f64::INFINITY; 2]; SMALL_STEP - 1],
            tries: [[0; 2]; SMALL_STEP - 1],
        }
    }
}

impl SmallSteps {
    /// Whether a step of `n` sequences goes one by one: the two ways take turns for the first
    /// `TRIES` steps each, then the quicker one is kept.
    fn one_by_one(&self, n: usize) -> bool {
        let [batched, single] = self.tries[n - 2];
        if batched < TRIES || single < TRIES {
            return single < batched;
        }
        let [batched, single] = self.quickest[n - 2];
        single < batched
    }

    /// Records a step; returns both ways' quickest steps once both have had their tries.
    fn record(&mut self, n: usize, one_by_one: bool, ms: f64) -> Option<[f64; 2]> {
        let way = usize::from(one_by_one);
        self.tries[n - 2][way] += 1;
        let quickest = &mut self.quickest[n - 2][way];
        *quickest = quickest.min(ms);
        (self.tries[n - 2] == [TRIES; 2]).then_some(self.quickest[n - 2])
    }
}

struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    seqs: Vec<Option<Seq>>,
    waiting: VecDeque<Job>,
    clock: u64,
    small: SmallSteps,
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A sequence's id as llama.cpp takes it (ids are below `MAX_SEQ_IDS`).
fn sid(id: usize) -> i32 {
    id as i32
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m Model, ctx: LlamaContext<'m>) -> Self {
        let mut seqs = Vec::new();
        seqs.resize_with(seq_ids(model.slots), || None);
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(BATCH.min(model.context_length), 1),
            seqs,
            waiting: VecDeque::new(),
            clock: 0,
            small: SmallSteps::default(),
        }
    }

    fn serve(&mut self, jobs: &mpsc::Receiver<Job>) {
        loop {
            if self.idle() {
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.waiting.push_back(job);
            }
            self.drop_cancelled();
            self.admit();
            self.step();
        }
    }

    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.runs().next().is_none()
    }

    fn runs(&self) -> impl Iterator<Item = (usize, &Seq, &Run)> {
        self.seqs
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_ref().map(|s| (id, s)))
            .filter_map(|(id, s)| s.run.as_ref().map(|r| (id, s, r)))
    }

    /// The idle sequences: finished, their cache kept for a later prompt that extends it.
    fn kept(&self) -> impl Iterator<Item = (usize, &Seq)> {
        self.seqs
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_ref().filter(|s| s.run.is_none()).map(|s| (id, s)))
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Frees the sequences whose consumer went away.
    fn drop_cancelled(&mut self) {
        let gone: Vec<usize> = self
            .runs()
            .filter(|(_, _, r)| r.events.is_closed())
            .map(|(id, _, _)| id)
            .collect();
        for id in gone {
            self.free(id);
        }
    }

    fn free(&mut self, id: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(id as u32), None, None);
        self.seqs[id] = None;
    }

    /// Starts waiting jobs, in order, while their reserved cells fit beside the running ones.
    fn admit(&mut self) {
        while let Some(job) = self.waiting.front() {
            if job.events.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let capacity = self.model.context_length;
            let max_new = job
                .max_tokens
                .min(capacity.saturating_sub(job.prompt.len()));
            let running: usize = self.runs().map(|(_, _, r)| r.reserved()).sum();
            let need = job.prompt.len() + max_new;
            if running + need > capacity {
                return;
            }
            let Some(id) = self.place(&job.prompt) else {
                return;
            };
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            self.start(id, job, max_new);
            self.make_room(running + need);
        }
    }

    /// The id for a new prompt: the idle sequence sharing the longest prefix with it, else a
    /// free id, else the least recently used idle sequence.
    fn place(&self, prompt: &[LlamaToken]) -> Option<usize> {
        let best = self
            .kept()
            .map(|(id, s)| (common_prefix(&s.cached, prompt), id))
            .max()
            .filter(|(shared, _)| *shared > 0)
            .map(|(_, id)| id);
        best.or_else(|| self.seqs.iter().position(Option::is_none))
            .or_else(|| self.kept().min_by_key(|(_, s)| s.used).map(|(id, _)| id))
    }

    fn start(&mut self, id: usize, job: Job, max_new: usize) {
        let admitted = self.tick();
        let mut cached = self.seqs[id].take().map(|s| s.cached).unwrap_or_default();
        // Keep what this prompt starts with, but decode its last token again: its logits are
        // the first output token's.
        let keep = common_prefix(&cached, &job.prompt).min(job.prompt.len() - 1);
        let trimmed = self
            .ctx
            .clear_kv_cache_seq(Some(id as u32), Some(keep as u32), None);
        if !matches!(trimmed, Ok(true)) {
            let _ = self.ctx.clear_kv_cache_seq(Some(id as u32), None, None);
            cached.clear();
        }
        cached.truncate(keep);
        let reused = cached.len();
        self.seqs[id] = Some(Seq {
            cached,
            used: admitted,
            run: Some(Run {
                prompt: job.prompt,
                sampler: job.sampler,
                text: TextOut::new(job.stop),
                halt: job.halt,
                events: job.events,
                max_new,
                generated: 0,
                reused,
                next: None,
                logits: None,
                admitted,
                started: Instant::now(),
                first_token: None,
            }),
        });
    }

    /// Evicts idle sequences, least recently used first, until running reservations and kept
    /// caches fit in the context.
    fn make_room(&mut self, running: usize) {
        loop {
            let kept: usize = self.kept().map(|(_, s)| s.cached.len()).sum();
            if running + kept <= self.model.context_length {
                return;
            }
            match self.kept().min_by_key(|(_, s)| s.used) {
                Some((id, _)) => self.free(id),
                None => return,
            }
        }
    }

    /// One decode step; nothing happens when no sequence has work.
    fn step(&mut self) {
        self.share_prefixes();
        let Some(ids) = self.small_step() else {
            return self.decode_step(None);
        };
        let one_by_one = self.small.one_by_one(ids.len());
        let started = Instant::now();
        if one_by_one {
            for &id in &ids {
                self.decode_step(Some(id));
            }
        } else {
            self.decode_step(None);
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some([batched, single]) = self.small.record(ids.len(), one_by_one, ms) {
            tracing::debug!(
                model = %self.model.name,
                sequences = ids.len(),
                batched_ms = batched,
                one_by_one_ms = single,
                "small steps measured"
            );
        }
    }

    /// The generating sequences, when there are two or three of them and no prompt is being read
    /// (a step `SmallSteps` may decode one sequence at a time).
    fn small_step(&self) -> Option<Vec<usize>> {
        let mut ids = Vec::new();
        for (id, seq, run) in self.runs() {
            if run.prefilling(seq.cached.len()) {
                return None;
            }
            if run.next.is_some() {
                ids.push(id);
            }
        }
        (2..=SMALL_STEP).contains(&ids.len()).then_some(ids)
    }

    /// Decodes one batch: the next token of every generating sequence (or of `only` that one)
    /// and, for a whole step, prompt chunks; then samples every sequence whose logits it made.
    fn decode_step(&mut self, only: Option<usize>) {
        self.batch.clear();
        let mut decoded: Vec<(usize, usize)> = Vec::new();
        if let Err(e) = self.fill_generating(&mut decoded, only) {
            return self.fail_all(&e);
        }
        if only.is_none() {
            if let Err(e) = self.fill_prefills(&mut decoded) {
                return self.fail_all(&e);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.decode() {
            return self.fail_all(&e);
        }
        for (id, end) in decoded {
            if let Some(Seq {
                cached,
                run: Some(run),
                ..
            }) = &mut self.seqs[id]
            {
                match run.next.take() {
                    Some(token) => cached.push(token),
                    None => cached.extend_from_slice(&run.prompt[cached.len()..end]),
                }
            }
        }
        let ready: Vec<(usize, i32)> = self
            .runs()
            .filter_map(|(id, _, r)| r.logits.map(|i| (id, i)))
            .collect();
        for (id, index) in ready {
            self.advance(id, index);
        }
    }

    /// Adds the next token of every generating sequence (or of `only` that one) to the batch.
    fn fill_generating(
        &mut self,
        decoded: &mut Vec<(usize, usize)>,
        only: Option<usize>,
    ) -> Result<(), Error> {
        for (id, seq) in self.seqs.iter_mut().enumerate() {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let Some(Seq {
                cached,
                run: Some(run),
                ..
            }) = seq
            else {
                continue;
            };
            run.logits = None;
            if let Some(token) = run.next {
                run.logits = Some(self.batch.n_tokens());
                self.batch
                    .add(token, cached.len() as i32, &[sid(id)], true)
                    .map_err(|e| failed("batch", e))?;
                decoded.push((id, cached.len() + 1));
            }
        }
        Ok(())
    }

    /// Fills the rest of the batch with prompt chunks, earliest admitted first.
    fn fill_prefills(&mut self, decoded: &mut Vec<(usize, usize)>) -> Result<(), Error> {
        let mut order: Vec<(u64, usize)> = self
            .runs()
            .filter(|(_, s, r)| r.prefilling(s.cached.len()))
            .map(|(id, _, r)| (r.admitted, id))
            .collect();
        order.sort_unstable();
        for (_, id) in order {
            let budget = self.batch_room();
            if budget == 0 {
                break;
            }
            if self.waits_for_sibling(id) {
                continue;
            }
            let Some(Seq {
                cached,
                run: Some(run),
                ..
            }) = &mut self.seqs[id]
            else {
                continue;
            };
            let start = cached.len();
            let end = (start + budget).min(run.prompt.len());
            for (pos, token) in run.prompt.iter().enumerate().take(end).skip(start) {
                let last = pos + 1 == run.prompt.len();
                if last {
                    run.logits = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(*token, pos as i32, &[sid(id)], last)
                    .map_err(|e| failed("batch", e))?;
            }
            decoded.push((id, end));
        }
        Ok(())
    }

    fn batch_room(&self) -> usize {
        BATCH
            .min(self.model.context_length)
            .saturating_sub(self.batch.n_tokens() as usize)
    }

    /// Whether an earlier sequence is about to decode a prefix of this one's prompt that this
    /// one has not got yet (it will be copied next step instead of decoded twice).
    fn waits_for_sibling(&self, id: usize) -> bool {
        let Some(Seq {
            cached,
            run: Some(run),
            ..
        }) = &self.seqs[id]
        else {
            return false;
        };
        self.runs().any(|(other, s, r)| {
            let shared = common_prefix(&r.prompt, &run.prompt).min(run.prompt.len() - 1);
            other != id
                && r.admitted < run.admitted
                && shared >= cached.len() + MIN_SHARED
                && s.cached.len() < shared
        })
    }

    /// Gives each prefilling sequence the longest prefix of its prompt that any other sequence
    /// already has in the cache.
    fn share_prefixes(&mut self) {
        let copies: Vec<(usize, usize, usize, usize)> = self
            .runs()
            .filter(|(_, s, r)| s.cached.len() + 1 < r.prompt.len())
            .filter_map(|(id, s, r)| {
                let have = s.cached.len();
                let (shared, donor) = self.best_donor(id, &r.prompt)?;
                (shared > have).then_some((id, donor, have, shared))
            })
            .collect();
        for (id, donor, have, shared) in copies {
            let copied = self.ctx.copy_kv_cache_seq(
                sid(donor),
                sid(id),
                Some(have as u32),
                Some(shared as u32),
            );
            if copied.is_err() {
                continue;
            }
            if let Some(Seq {
                cached,
                run: Some(run),
                ..
            }) = &mut self.seqs[id]
            {
                cached.extend_from_slice(&run.prompt[have..shared]);
                run.reused += shared - have;
            }
        }
    }

    /// The other sequence whose cache holds the longest prefix of `prompt` (all but its last
    /// token at most: that one is decoded for its logits), and that prefix's length.
    fn best_donor(&self, id: usize, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.seqs
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != id)
            .filter_map(|(other, s)| s.as_ref().map(|s| (other, s)))
            .map(|(other, s)| {
                let shared = common_prefix(&s.cached, prompt).min(prompt.len() - 1);
                (shared, other)
            })
            .max()
    }

    /// Decodes the batch; when the cache has no room, drops the idle sequences' caches and
    /// tries once more.
    fn decode(&mut self) -> Result<(), Error> {
        match self.ctx.decode(&mut self.batch) {
            Err(DecodeError::NoKvCacheSlot) => {
                let idle: Vec<usize> = self.kept().map(|(id, _)| id).collect();
                for id in idle {
                    self.free(id);
                }
                self.ctx
                    .decode(&mut self.batch)
                    .map_err(|e| failed("decoding", e))
            }
            other => other.map_err(|e| failed("decoding", e)),
        }
    }

    /// Ends every generation with the error and empties the cache: after a failed decode its
    /// state is not to be trusted.
    fn fail_all(&mut self, error: &Error) {
        for seq in self.seqs.iter_mut() {
            if let Some(run) = seq.take().and_then(|s| s.run) {
                let _ = run.events.send(Event::Failed(failed("generation", error)));
            }
        }
        self.ctx.clear_kv_cache();
    }

    /// Samples sequence `id`'s next token from batch index `index` and passes its text on.
    fn advance(&mut self, id: usize, index: i32) {
        let model = self.model;
        let vocab = model.llama.vocab();
        let Some(Seq { run: Some(run), .. }) = &mut self.seqs[id] else {
            return;
        };
        run.logits = None;
        run.first_token.get_or_insert_with(Instant::now);
        if run.generated >= run.max_new {
            return self.finish(id, Finish::Length);
        }
        if run.halt.stopped() {
            return self.finish(id, Finish::Stop);
        }
        let Some(token) = run.sampler.sample(self.ctx.get_logits_ith(index)) else {
            let _ = run.events.send(Event::Failed(failed(
                "sampling",
                "the grammar allows no next token",
            )));
            return self.free(id);
        };
        if vocab.is_eog(token) {
            return self.finish(id, Finish::Stop);
        }
        run.sampler.accept(token);
        run.generated += 1;
        let (piece, stopped) = run.text.push(&vocab.token_to_piece(token, false, None));
        if !piece.is_empty() && run.events.send(Event::Text(piece)).is_err() {
            return self.free(id);
        }
        if stopped {
            return self.finish(id, Finish::Stop);
        }
        if run.generated >= run.max_new {
            return self.finish(id, Finish::Length);
        }
        run.next = Some(token);
    }

    /// A finished generation in the metrics: tokens read (and reused from the cache), tokens
    /// generated, and its decoding speed.
    fn count(&self, run: &Run) {
        let model = self.model.name.clone();
        metrics::counter!("quorate_local_prompt_tokens_total", "model" => model.clone())
            .increment(run.prompt.len() as u64);
        metrics::counter!("quorate_local_cached_tokens_total", "model" => model.clone())
            .increment(run.reused as u64);
        metrics::counter!("quorate_local_generated_tokens_total", "model" => model.clone())
            .increment(run.generated as u64);
        let decoding = run.first_token.map(|t| t.elapsed().as_secs_f64());
        if let Some(seconds) = decoding.filter(|s| *s > 0.0 && run.generated > 1) {
            metrics::histogram!("quorate_local_tokens_per_second", "model" => model)
                .record(run.generated as f64 / seconds);
        }
    }

    /// Reports the end of a generation; its sequence stays as an idle cache.
    fn finish(&mut self, id: usize, finish: Finish) {
        let used = self.tick();
        let Some(seq) = &mut self.seqs[id] else {
            return;
        };
        let Some(mut run) = seq.run.take() else {
            return;
        };
        seq.used = used;
        tracing::debug!(
            model = %self.model.name,
            prompt = run.prompt.len(),
            reused = run.reused,
            generated = run.generated,
            grammar_resampled = run.sampler.resampled,
            prompt_ms = run.first_token.map(|t| (t - run.started).as_millis()),
            total_ms = run.started.elapsed().as_millis(),
            "generation finished"
        );
        self.count(&run);
        let rest = run.text.finish();
        if !rest.is_empty() {
            let _ = run.events.send(Event::Text(rest));
        }
        let _ = run.events.send(Event::Done(Outcome {
            prompt_tokens: run.prompt.len() as u64,
            cached_tokens: run.reused as u64,
            completion_tokens: run.generated as u64,
            finish,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_steps_take_turns_then_keep_the_quicker_way() {
        let mut small = SmallSteps::default();
        let mut ways = Vec::new();
        for _ in 0..2 * TRIES {
            let way = small.one_by_one(3);
            ways.push(way);
            // One by one is quicker, but one of its tries was slowed by something else.
            let ms = match (way, ways.len()) {
                (true, 2) => 90.0,
                (true, _) => 50.0,
                (false, _) => 60.0,
            };
            small.record(3, way, ms);
        }
        assert_eq!(
            ways.iter().filter(|w| **w).count(),
            TRIES as usize,
            "{ways:?}"
        );
        assert!(small.one_by_one(3));
        // Sizes are measured apart: two sequences start with a batch.
        assert!(!small.one_by_one(2));
    }

    #[test]
    fn a_quicker_batch_is_kept() {
        let mut small = SmallSteps::default();
        for _ in 0..2 * TRIES {
            let way = small.one_by_one(2);
            small.record(2, way, if way { 67.0 } else { 52.0 });
        }
        assert!(!small.one_by_one(2));
    }
}
