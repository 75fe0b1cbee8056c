//! One fusion run: the panel in parallel, the judge, then the synthesis streamed. Everything runs
//! inside the stream the caller polls, so dropping it (a client that went away) cancels every
//! inner call; nothing is spawned.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use quorate_api::{
    ChatChunk, ChatCompletion, ChunkChoice, Delta, Message, ModelRequest, Role, Usage,
};
use quorate_providers::{in_span, Error, RequestCtx, Router};
use quorate_tools::{Session, Source};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::analysis::{self, Analysis, Invalid};
use crate::citations;
use crate::event::FusionEvent;
use crate::panel_cache::{self, KeptAnswer, PanelCache};
use crate::plan::Plan;
use crate::prompts::{self, Prompts};
use crate::report::{
    add, EarlyExit, FailureReason, FusionError, FusionReport, JudgeAttempt, MemberError,
    MemberReport, MemberStatus,
};
use crate::research::{self, Prefetched, PREFETCH_CHARS};
use crate::strategy::{self, select, Selection};

/// What a run yields: progress events, the final answer (streamed as chunks, or whole), then the
/// report. A fusion tool the model chose not to call yields only the answer.
#[derive(Debug)]
pub enum Item {
    Event(FusionEvent),
    Chunk(Box<ChatChunk>),
    Answer(Box<ChatCompletion>),
    /// `url_citation` annotations of the answer, after its last chunk.
    Annotations(Vec<Value>),
    Done(Box<FusionReport>),
}

pub type FusionStream = Pin<Box<dyn Stream<Item = Result<Item, FusionError>> + Send>>;

pub(crate) type Events = mpsc::UnboundedSender<FusionEvent>;

/// Member token counts are reported at most this often.
const TOKEN_EVENT_EVERY: Duration = Duration::from_millis(250);

/// The judge's output cap where the model's context does not lower it.
const JUDGE_MAX_TOKENS: u32 = 4096;

/// `select`'s reply: a label and a sentence.
const SELECT_MAX_TOKENS: usize = 256;

/// Rough characters per token, to keep prompts inside a model's context.
const CHARS_PER_TOKEN: usize = 3;

pub struct Run {
    /// The caller's context; inner calls (panel, judge, synthesis) run one fusion stage deeper.
    pub ctx: RequestCtx,
    pub router: Router,
    pub prompts: Arc<Prompts>,
    pub plan: Plan,
    pub request: ModelRequest,
    pub deadline: Instant,
    /// The research tools the panel may use.
    pub tools: Session,
    /// Where plain members' answers are kept and replayed (the eval's `--reuse-panel`).
    pub panel_cache: Option<Arc<dyn PanelCache>>,
}

/// How a panel member gets to its answer.
enum Approach {
    /// The conversation as it is (research off).
    Plain,
    /// The agentic loop with the research tools.
    Agent,
    /// Prefetched extracts in the prompt, for models without tool support.
    Prefetched(Vec<Source>),
}

/// Where panel and judge leave a run.
pub(crate) enum Analysed {
    /// The strategy answered from the panel alone: the report and that answer.
    Decided(FusionReport, String),
    /// The report with the judge's analysis, and the answers the synthesis will see.
    Judged(FusionReport, Vec<AnswerView>),
}

pub(crate) enum Streamed {
    Chunk(Box<ChatChunk>),
    Usage(Usage),
}

pub(crate) enum Phase {
    Event(FusionEvent),
    Analysed(Box<Result<Analysed, FusionError>>),
}

/// An answer as the judge and the synthesizer see it.
#[derive(Serialize)]
pub(crate) struct AnswerView {
    /// The panel slot that wrote it (`label` is its number as the prompts show it).
    #[serde(skip)]
    pub slot: usize,
    pub label: String,
    pub model: String,
    pub content: String,
}

/// A member's answer and what it took to get it.
struct Answered {
    text: String,
    usage: Usage,
    sources: Vec<Source>,
    tool_calls: u32,
    /// A replayed answer's latency when it was first given.
    latency_ms: Option<u64>,
}

impl Answered {
    fn plain(text: String, usage: Usage) -> Self {
        Self {
            text,
            usage,
            sources: Vec::new(),
            tool_calls: 0,
            latency_ms: None,
        }
    }
}

struct Verdict {
    analysis: Option<Analysis>,
    judge: String,
    attempts: Vec<JudgeAttempt>,
    usage: Usage,
    failure: Option<FailureReason>,
}

impl Run {
    pub fn stream(self) -> FusionStream {
        Box::pin(async_stream::stream! {
            let started = Instant::now();
            let mut analysis = std::pin::pin!(self.analysis());
            let mut analysed = None;
            while let Some(step) = analysis.next().await {
                match step {
                    Phase::Event(event) => yield Ok(Item::Event(event)),
                    Phase::Analysed(result) => analysed = Some(*result),
                }
            }
            let (mut report, answers) = match analysed {
                Some(Ok(Analysed::Judged(report, answers))) => (report, answers),
                Some(Ok(Analysed::Decided(mut report, text))) => {
                    // The member's own answer, its citations checked as a synthesis's are.
                    let sources = all_sources(&report.panel);
                    report.sources = citations::number(&sources);
                    let cited = citations::check(&text, &report.sources, &sources, self.plan.strict_citations);
                    report.unverified_citations = cited.unverified;
                    report.timings.total_ms = millis(started);
                    yield Ok(Item::Chunk(Box::new(whole_chunk(&self.request.model, cited.text, None))));
                    if !cited.annotations.is_empty() {
                        yield Ok(Item::Annotations(cited.annotations));
                    }
                    yield Ok(Item::Done(Box::new(report)));
                    return;
                }
                Some(Err(e)) => { yield Err(e); return; }
                None => return,
            };
            let request = match self.synthesis_request(&mut report, &answers) {
                Ok(request) => request,
                Err(e) => { yield Err(e); return; }
            };
            let ctx = self.ctx.nested();
            let mut answer = std::pin::pin!(self.final_answer(&ctx, request, report, started));
            while let Some(item) = answer.next().await {
                yield item;
            }
        })
    }

    /// The final answer streamed (the synthesis, one stage deeper; or the outer model's answer
    /// with the fusion tool, at the caller's depth), its citations checked, then the report.
    pub(crate) fn final_answer<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        request: ModelRequest,
        mut report: FusionReport,
        started: Instant,
    ) -> impl Stream<Item = Result<Item, FusionError>> + Send + 'a {
        async_stream::stream! {
            yield Ok(Item::Event(FusionEvent::SynthesisStarted { model: request.model.clone() }));
            let synthesis_started = Instant::now();
            let strict = self.plan.strict_citations;
            let mut tries: u64 = 0;
            let (text, finish) = loop {
                tries += 1;
                let (mut text, mut finish) = (String::new(), None);
                // Chunks wait until the answer says something (text, or a call of a client's
                // tool), so an empty answer is retried unseen.
                let mut held = Vec::new();
                let mut calls_tools = false;
                let mut request = request.clone();
                if tries > 1 {
                    request.seed = Some(self.plan.seed.wrapping_add(tries) as i64);
                }
                let span = tracing::info_span!("synthesis", model = %request.model, try_ = tries);
                let mut answer = std::pin::pin!(in_span(span, self.streamed(ctx, request)));
                while let Some(step) = answer.next().await {
                    match step {
                        Ok(Streamed::Chunk(chunk)) => {
                            for choice in &chunk.choices {
                                text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                                finish = choice.finish_reason.clone().or(finish);
                                calls_tools |= choice.delta.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
                            }
                            // Strict citations hold the text back until it is checked.
                            if strict {
                                continue;
                            }
                            held.push(chunk);
                            if calls_tools || !text.trim().is_empty() {
                                for chunk in held.drain(..) {
                                    yield Ok(Item::Chunk(chunk));
                                }
                            }
                        }
                        Ok(Streamed::Usage(usage)) => add(&mut report.usage.synthesis, &usage),
                        Err(e) => { yield Err(self.synthesis_failure(report, e)); return; }
                    }
                }
                if calls_tools || !text.trim().is_empty() {
                    break (text, finish);
                }
                if tries == 2 {
                    yield Err(self.empty_synthesis(report));
                    return;
                }
                tracing::warn!("the synthesis came back empty; asking once more");
            };
            let cited = citations::check(&text, &report.sources, &all_sources(&report.panel), strict);
            report.unverified_citations = cited.unverified;
            if strict {
                yield Ok(Item::Chunk(Box::new(whole_chunk(&self.request.model, cited.text, finish))));
            }
            if !cited.annotations.is_empty() {
                yield Ok(Item::Annotations(cited.annotations));
            }
            report.timings.synthesis_ms = millis(synthesis_started);
            report.timings.total_ms = millis(started);
            yield Ok(Item::Done(Box::new(report)));
        }
    }

    /// Panel and judge as a stream: their progress events, then the report with the answers.
    pub(crate) fn analysis(&self) -> impl Stream<Item = Phase> + Send + '_ {
        async_stream::stream! {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut work = std::pin::pin!(self.analyse(tx));
            let result = loop {
                let step = tokio::select! {
                    biased;
                    Some(event) = rx.recv() => Err(event),
                    result = &mut work => Ok(result),
                };
                match step {
                    Err(event) => yield Phase::Event(event),
                    Ok(result) => break result,
                }
            };
            while let Ok(event) = rx.try_recv() {
                yield Phase::Event(event);
            }
            yield Phase::Analysed(Box::new(result));
        }
    }

    /// Panel and judge: everything before the synthesis, unless the strategy answers from the
    /// panel alone.
    async fn analyse(&self, events: Events) -> Result<Analysed, FusionError> {
        let mut report = FusionReport {
            preset: self.plan.preset.clone(),
            strategy: self.plan.strategy,
            judge: self.plan.judges[0].clone(),
            synthesizer: self.plan.synthesizer.clone(),
            ..FusionReport::default()
        };
        let panel_started = Instant::now();
        report.tools_note = self.tools.note();
        let span = tracing::info_span!("panel", size = self.plan.panel.len());
        (report.panel, report.early_exit) = self
            .panel(&events, &mut report.tools_note)
            .instrument(span)
            .await;
        report.timings.panel_ms = millis(panel_started);
        for member in &report.panel {
            add(&mut report.usage.panel, &member.usage);
            let failed = matches!(member.status, MemberStatus::Failed | MemberStatus::Timeout);
            if failed && !report.failed_models.contains(&member.model) {
                report.failed_models.push(member.model.clone());
            }
        }
        let answers = answers(&report.panel);
        report.degraded = !report.failed_models.is_empty();
        if answers.len() < self.plan.quorum {
            return Err(panel_failure(report, self.plan.quorum));
        }
        let variant = strategy::variant(&self.plan);
        if let Some(text) = variant.answer(&mut report) {
            return Ok(Analysed::Decided(report, text));
        }
        if !variant.judges() {
            return Ok(Analysed::Judged(report, answers));
        }
        if variant.selects() {
            let started = Instant::now();
            let chosen = self
                .select(&answers, &mut report)
                .instrument(tracing::info_span!("select"))
                .await;
            report.timings.judge_ms = millis(started);
            if let Some(text) = chosen {
                return Ok(Analysed::Decided(report, text));
            }
        }
        let judge_started = Instant::now();
        let verdict = self
            .judge(&answers, &events)
            .instrument(tracing::info_span!("judge"))
            .await;
        report.timings.judge_ms = millis(judge_started);
        report.analysis = verdict.analysis;
        report.judge = verdict.judge;
        report.judge_attempts.extend(verdict.attempts);
        report.usage.judge = verdict.usage;
        report.failure_reason = verdict.failure;
        for attempt in report.judge_attempts.iter().filter(|a| !a.ok) {
            if !report.failed_models.contains(&attempt.model) {
                report.failed_models.push(attempt.model.clone());
            }
        }
        Ok(Analysed::Judged(report, answers))
    }

    // ---- panel ----

    /// Every member at once; those without tools first wait for the run's one prefetch, the
    /// others do not. Members are taken as they finish, and the strategy may stop the panel
    /// early: the members still running are then cancelled (dropped, so their upstream calls
    /// end at once).
    async fn panel(
        &self,
        events: &Events,
        note: &mut Option<String>,
    ) -> (Vec<MemberReport>, Option<EarlyExit>) {
        let started = Instant::now();
        let base = inner_request(&self.request, false);
        let prefetch = tokio::sync::OnceCell::new();
        let members = self.plan.panel.iter().enumerate().map(|(slot, model)| {
            let (base, prefetch) = (&base, &prefetch);
            async move {
                let mut req = base.clone();
                req.model.clone_from(model);
                req.temperature = self.plan.temperature;
                self.plan.cap(&mut req);
                let seed = self.plan.seed.wrapping_add(slot as u64);
                req.seed = Some(seed as i64);
                let prefetched = if self.agentic(model) {
                    None
                } else {
                    prefetch
                        .get_or_init(|| self.prefetch(events))
                        .await
                        .as_ref()
                };
                let approach = self.approach(&mut req, prefetched);
                let deadline = (Instant::now() + self.plan.member_timeout).min(self.deadline);
                let span = tracing::info_span!("member", slot, model = %model);
                self.member(slot, seed, req, approach, deadline, events.clone())
                    .instrument(span)
                    .await
            }
        });
        let mut running: FuturesUnordered<_> = members.collect();
        let variant = strategy::variant(&self.plan);
        let mut reports = Vec::new();
        let mut stopped = None;
        while let Some(report) = running.next().await {
            reports.push(report);
            // Never stop short of the quorum: the run would then fail for want of answers.
            if answers(&reports).len() < self.plan.quorum {
                continue;
            }
            let finished: Vec<&MemberReport> = reports.iter().collect();
            stopped = variant.stop_early(&finished, self.plan.panel.len());
            if stopped.is_some() {
                break;
            }
        }
        drop(running);
        if let Some(e) = prefetch.get().and_then(|p| p.as_ref()?.error.as_ref()) {
            let line = format!("prefetch failed: {e}");
            *note = Some(note.take().map_or(line.clone(), |n| format!("{n}; {line}")));
        }
        let early_exit =
            stopped.map(|reason| self.cancel_rest(&mut reports, reason, started, events));
        reports.sort_by_key(|m| m.slot);
        (reports, early_exit)
    }

    /// Reports the slots that did not finish as cancelled, and says so in an event.
    fn cancel_rest(
        &self,
        reports: &mut Vec<MemberReport>,
        reason: String,
        started: Instant,
        events: &Events,
    ) -> EarlyExit {
        let cancelled: Vec<usize> = (0..self.plan.panel.len())
            .filter(|slot| !reports.iter().any(|m| m.slot == *slot))
            .collect();
        for &slot in &cancelled {
            reports.push(MemberReport {
                slot,
                model: self.plan.panel[slot].clone(),
                status: MemberStatus::Cancelled,
                content: None,
                usage: Usage::default(),
                latency_ms: millis(started),
                seed: self.plan.seed.wrapping_add(slot as u64),
                error: None,
                sources: Vec::new(),
                tool_calls: 0,
            });
        }
        let _ = events.send(FusionEvent::PanelStopped {
            reason: reason.clone(),
            cancelled: cancelled.clone(),
        });
        EarlyExit { reason, cancelled }
    }

    /// Prefetch for the members that cannot call tools, once per run, when search is on.
    async fn prefetch(&self, events: &Events) -> Option<Prefetched> {
        let without_tools: Vec<&String> = self
            .plan
            .panel
            .iter()
            .filter(|m| !self.agentic(m))
            .collect();
        if without_tools.is_empty() || !self.tools.has_search() || self.plan.tools.is_empty() {
            return None;
        }
        // The smallest context among those members sets the extracts' size.
        let budget = without_tools
            .iter()
            .filter_map(|m| {
                let output = self.plan.max_completion_tokens.unwrap_or(512) as usize;
                self.answer_budget(m, 1, output, &conversation(&self.request.messages))
            })
            .min()
            .unwrap_or(PREFETCH_CHARS)
            .min(PREFETCH_CHARS);
        let _ = events.send(FusionEvent::PrefetchStarted);
        let started = Instant::now();
        let question = question(&self.request.messages);
        let deadline = (Instant::now() + self.plan.member_timeout / 2).min(self.deadline);
        let found =
            tokio::time::timeout_at(deadline, research::prefetch(&self.tools, &question, budget))
                .await
                .unwrap_or_else(|_| Prefetched {
                    error: Some("prefetch timed out".into()),
                    ..Prefetched::default()
                });
        let _ = events.send(FusionEvent::PrefetchDone {
            sources: found.sources.len(),
            error: found.error.clone(),
            latency_ms: millis(started),
        });
        Some(found)
    }

    /// Sets a member's request up for how it researches.
    fn approach(&self, req: &mut ModelRequest, prefetched: Option<&Prefetched>) -> Approach {
        if self.plan.tools.is_empty() || self.tools.is_empty() {
            return Approach::Plain;
        }
        if self.agentic(&req.model) {
            let tools: Vec<Value> = self
                .tools
                .functions()
                .iter()
                .filter_map(|f| f.pointer("/function/name").cloned())
                .collect();
            if let Ok(text) = self
                .prompts
                .render(prompts::RESEARCH, json!({"tools": tools}))
            {
                let at = req
                    .messages
                    .iter()
                    .take_while(|m| m.role == Role::System)
                    .count();
                req.messages
                    .insert(at, Message::new(Role::System, text.trim()));
            }
            return Approach::Agent;
        }
        let Some(found) = prefetched.filter(|p| !p.extracts.is_empty()) else {
            return Approach::Plain;
        };
        match research::with_extracts(&self.prompts, self.router.config(), req, found) {
            Ok(true) => Approach::Prefetched(found.sources.clone()),
            _ => Approach::Plain,
        }
    }

    /// One panel slot: its answer, or why it has none, under the member deadline.
    async fn member(
        &self,
        slot: usize,
        seed: u64,
        req: ModelRequest,
        approach: Approach,
        deadline: Instant,
        events: Events,
    ) -> MemberReport {
        let started = Instant::now();
        let model = req.model.clone();
        let _ = events.send(FusionEvent::MemberStarted {
            slot,
            model: model.clone(),
        });
        let work = async {
            match approach {
                Approach::Agent => self.agent(slot, req, &events).await,
                Approach::Plain => self.plain(slot, req, &events).await,
                Approach::Prefetched(sources) => {
                    answer(&self.router, &self.ctx.nested(), slot, req, &events)
                        .await
                        .map(|(text, usage)| Answered {
                            sources,
                            ..Answered::plain(text, usage)
                        })
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, work).await;
        let mut report = MemberReport {
            slot,
            model,
            status: MemberStatus::Ok,
            content: None,
            usage: Usage::default(),
            latency_ms: millis(started),
            seed,
            error: None,
            sources: Vec::new(),
            tool_calls: 0,
        };
        match result {
            Ok(Ok(Answered {
                text: content,
                usage,
                sources,
                tool_calls,
                latency_ms,
            })) => {
                report.usage = usage;
                report.sources = sources;
                report.tool_calls = tool_calls;
                report.latency_ms = latency_ms.unwrap_or(report.latency_ms);
                if content.trim().is_empty() {
                    report.status = MemberStatus::Failed;
                    report.error = Some(MemberError::new(
                        "empty_completion",
                        "the model returned no text",
                    ));
                } else {
                    report.content = Some(content);
                }
            }
            Ok(Err(e)) => {
                report.status = MemberStatus::Failed;
                report.error = Some(MemberError::from_error(&e));
            }
            Err(_) => {
                report.status = MemberStatus::Timeout;
                report.error = Some(MemberError::new(
                    "timeout",
                    format!(
                        "no complete answer within {:.1}s",
                        deadline.saturating_duration_since(started).as_secs_f64()
                    ),
                ));
            }
        }
        let event = match &report.error {
            None => FusionEvent::MemberDone {
                slot,
                model: report.model.clone(),
                tokens: report.usage.completion_tokens,
                latency_ms: report.latency_ms,
                tool_calls: report.tool_calls,
                sources: report.sources.len(),
                content: report.content.clone(),
            },
            Some(e) => FusionEvent::MemberFailed {
                slot,
                model: report.model.clone(),
                reason: e.reason.to_string(),
                error: e.message.clone(),
                latency_ms: report.latency_ms,
            },
        };
        let _ = events.send(event);
        report
    }

    /// A member without research: its answer, or the one the panel cache keeps for the same
    /// request.
    async fn plain(
        &self,
        slot: usize,
        req: ModelRequest,
        events: &Events,
    ) -> Result<Answered, Error> {
        let ctx = self.ctx.nested();
        let Some(cache) = &self.panel_cache else {
            let (text, usage) = answer(&self.router, &ctx, slot, req, events).await?;
            return Ok(Answered::plain(text, usage));
        };
        let key = panel_cache::key(&req);
        // What a fresh answer gave when it is not kept (a failure, an empty answer).
        let mut unkept = None;
        let fresh = async {
            let started = Instant::now();
            match answer(&self.router, &ctx, slot, req, events).await {
                Ok((content, usage)) if !content.trim().is_empty() => Some(KeptAnswer {
                    content,
                    usage,
                    latency_ms: millis(started),
                }),
                other => {
                    unkept = Some(other);
                    None
                }
            }
        };
        match (cache.answer(key, Box::pin(fresh)).await, unkept) {
            (Some(kept), _) => Ok(Answered {
                latency_ms: Some(kept.latency_ms),
                ..Answered::plain(kept.content, kept.usage)
            }),
            (None, Some(result)) => result.map(|(text, usage)| Answered::plain(text, usage)),
            (None, None) => Err(Error::Internal(
                "the panel cache gave no answer and asked for none".into(),
            )),
        }
    }

    /// An agentic member: the research loop, each tool call reported as it starts.
    async fn agent(
        &self,
        slot: usize,
        req: ModelRequest,
        events: &Events,
    ) -> Result<Answered, Error> {
        let on_call = |tool: &str, arguments: &Value| {
            let _ = events.send(FusionEvent::MemberToolCall {
                slot,
                tool: tool.to_string(),
                arguments: arguments.clone(),
            });
        };
        let done = research::agent(
            &self.router,
            &self.ctx.nested(),
            &self.prompts,
            &self.tools,
            req,
            self.plan.max_tool_calls,
            &on_call,
        )
        .await?;
        let text = done
            .completion
            .as_ref()
            .and_then(|c| c.choices.first())
            .map(|c| c.message.text())
            .unwrap_or_default();
        Ok(Answered {
            sources: done.sources,
            tool_calls: done.tool_calls,
            ..Answered::plain(text, done.usage)
        })
    }

    // ---- judge ----

    async fn judge(&self, answers: &[AnswerView], events: &Events) -> Verdict {
        let mut verdict = Verdict {
            analysis: None,
            judge: self.plan.judges[0].clone(),
            attempts: Vec::new(),
            usage: Usage::default(),
            failure: None,
        };
        // The judge may use half the time left, so a stalled judge still leaves the synthesis time.
        let now = Instant::now();
        let deadline = now + self.deadline.saturating_duration_since(now) / 2;
        for model in &self.plan.judges {
            let _ = events.send(FusionEvent::JudgeStarted {
                model: model.clone(),
            });
            let started = Instant::now();
            let outcome = self
                .judge_with(model, answers, deadline, &mut verdict)
                .await;
            let failure = outcome.as_ref().err().copied();
            let _ = events.send(FusionEvent::JudgeDone {
                model: model.clone(),
                ok: failure.is_none(),
                failure_reason: failure,
                latency_ms: millis(started),
                analysis: outcome.as_ref().ok().cloned().map(Box::new),
            });
            match outcome {
                Ok(analysis) => {
                    verdict.analysis = Some(analysis);
                    verdict.judge.clone_from(model);
                    verdict.failure = None;
                    break;
                }
                Err(reason) => {
                    tracing::warn!(judge = %model, reason = reason.as_str(), "judge failed");
                    verdict.failure = Some(reason);
                    if reason == FailureReason::Timeout {
                        break;
                    }
                }
            }
        }
        verdict
    }

    /// `select`: each judge in turn names the best answer until one does; that answer's text.
    /// The calls' usage counts as the judge's; failed ones are judge attempts.
    async fn select(&self, answers: &[AnswerView], report: &mut FusionReport) -> Option<String> {
        let labels: Vec<String> = answers.iter().map(|a| a.label.clone()).collect();
        let conversation = conversation(&self.request.messages);
        for model in &self.plan.judges {
            let budget = self.answer_budget(model, answers.len(), SELECT_MAX_TOKENS, &conversation);
            let prompt = self.prompts.render(
                prompts::SELECT,
                json!({"conversation": conversation, "question": question(&self.request.messages),
                   "answers": clipped(answers, budget), "compact": self.is_local(model)}),
            );
            let outcome = match prompt {
                Ok(prompt) => self.select_with(model, prompt, &labels, report).await,
                Err(e) => Err(e.to_string()),
            };
            report.judge_attempts.push(JudgeAttempt {
                model: model.clone(),
                repair: false,
                ok: outcome.is_ok(),
                error: outcome.as_ref().err().cloned(),
            });
            if let Ok((label, reason)) = outcome {
                let chosen = answers.iter().find(|a| a.label == label)?;
                report.judge.clone_from(model);
                report.selection = Some(Selection {
                    label,
                    slot: chosen.slot,
                    reason,
                    judge: model.clone(),
                });
                return Some(chosen.content.clone());
            }
        }
        None
    }

    async fn select_with(
        &self,
        model: &str,
        prompt: String,
        labels: &[String],
        report: &mut FusionReport,
    ) -> Result<(String, String), String> {
        let mut req = ModelRequest::new(model, vec![Message::new(Role::User, prompt)]);
        req.temperature = Some(0.0);
        req.max_tokens = Some(SELECT_MAX_TOKENS as u32);
        req.response_format = Some(select::response_format(labels));
        let completion = tokio::time::timeout_at(
            self.deadline,
            self.router.complete(&self.ctx.nested(), &req),
        )
        .await
        .map_err(|_| "judge timed out".to_string())?
        .map_err(|e| e.to_string())?;
        add(
            &mut report.usage.judge,
            &completion.usage.unwrap_or_default(),
        );
        let reply = completion
            .choices
            .first()
            .map(|c| c.message.text())
            .unwrap_or_default();
        select::parse(&reply, labels).ok_or_else(|| format!("no answer named in {reply:?}"))
    }

    /// One judge model: a call, and one repair call if the reply is not a valid analysis.
    async fn judge_with(
        &self,
        model: &str,
        answers: &[AnswerView],
        deadline: Instant,
        verdict: &mut Verdict,
    ) -> Result<Analysis, FailureReason> {
        let labels: Vec<String> = answers.iter().map(|a| a.label.clone()).collect();
        let cap = self.judge_max_tokens(model);
        let conversation = conversation(&self.request.messages);
        let budget = self.answer_budget(model, answers.len(), cap as usize, &conversation);
        let prompt = self
            .prompts
            .render(
                prompts::JUDGE,
                json!({"conversation": conversation, "question": question(&self.request.messages),
                   "answers": clipped(answers, budget), "compact": self.is_local(model)}),
            )
            .map_err(|e| self.judge_error(verdict, model, false, &e.to_string()))?;
        let format = analysis::response_format(self.is_local(model).then_some(&labels[..]));
        let mut messages = vec![Message::new(Role::User, prompt)];
        let mut last = Invalid::Empty;
        for repair in [false, true] {
            if repair {
                let fix = self
                    .prompts
                    .render(prompts::JUDGE_REPAIR, json!({"error": last.to_string()}))
                    .map_err(|e| self.judge_error(verdict, model, true, &e.to_string()))?;
                messages.push(Message::new(Role::User, fix));
            }
            let mut req = ModelRequest::new(model, messages.clone());
            req.temperature = Some(0.0);
            req.max_tokens = Some(cap);
            req.response_format = Some(format.clone());
            let completion = match tokio::time::timeout_at(
                deadline,
                self.router.complete(&self.ctx.nested(), &req),
            )
            .await
            {
                Err(_) => {
                    self.judge_error(verdict, model, repair, "judge timed out");
                    return Err(FailureReason::Timeout);
                }
                Ok(Err(e)) => {
                    self.judge_error(verdict, model, repair, &e.to_string());
                    return Err(FailureReason::JudgeUpstreamError);
                }
                Ok(Ok(c)) => c,
            };
            add(&mut verdict.usage, &completion.usage.unwrap_or_default());
            let reply = completion
                .choices
                .first()
                .map(|c| c.message.text())
                .unwrap_or_default();
            match Analysis::parse(&reply) {
                Ok(analysis) => {
                    verdict.attempts.push(JudgeAttempt {
                        model: model.to_string(),
                        repair,
                        ok: true,
                        error: None,
                    });
                    return Ok(analysis);
                }
                Err(invalid) => {
                    self.judge_error(verdict, model, repair, &invalid.to_string());
                    messages.push(Message::new(Role::Assistant, reply));
                    last = invalid;
                }
            }
        }
        Err(match last {
            Invalid::Empty => FailureReason::JudgeEmptyCompletion,
            Invalid::NotJson(_) => FailureReason::JudgeNotValidJson,
            Invalid::Schema(_) => FailureReason::JudgeSchemaMismatch,
        })
    }

    /// Records a failed judge attempt; returns the reason for template errors.
    fn judge_error(
        &self,
        verdict: &mut Verdict,
        model: &str,
        repair: bool,
        error: &str,
    ) -> FailureReason {
        verdict.attempts.push(JudgeAttempt {
            model: model.to_string(),
            repair,
            ok: false,
            error: Some(error.to_string()),
        });
        FailureReason::JudgeUpstreamError
    }

    fn judge_max_tokens(&self, model: &str) -> u32 {
        let context = self
            .router
            .config()
            .resolve(model)
            .and_then(|m| m.context_length);
        context.map_or(JUDGE_MAX_TOKENS, |c| {
            (c / 3).min(u64::from(JUDGE_MAX_TOKENS)) as u32
        })
    }

    // ---- synthesis ----

    fn synthesis_request(
        &self,
        report: &mut FusionReport,
        answers: &[AnswerView],
    ) -> Result<ModelRequest, FusionError> {
        report.sources = citations::number(&all_sources(&report.panel));
        let mut req = inner_request(&self.request, true);
        req.model.clone_from(&self.plan.synthesizer);
        req.temperature = None;
        self.plan.cap(&mut req);
        let analysis_json = serde_json::to_string(&report.analysis).unwrap_or_default();
        let output = self.plan.max_completion_tokens.unwrap_or(1024) as usize;
        let budget = self.answer_budget(
            &req.model,
            answers.len(),
            output + analysis_json.len() / CHARS_PER_TOKEN,
            &conversation(&self.request.messages),
        );
        let text = self.prompts.render(
            prompts::SYNTHESIS,
            json!({
                "question": question(&self.request.messages),
                "answers": clipped(answers, budget),
                "analysis": report.analysis,
                "judge_failure": report.failure_reason.map(FailureReason::as_str),
                "degraded": report.degraded,
                "answered": answers.len(),
                "panel_size": report.panel.len(),
                "sources": report.sources,
                "compact": self.is_local(&req.model),
            }),
        )?;
        if req.messages.last().is_some_and(|m| m.role == Role::User) {
            req.messages.pop();
        }
        req.messages.push(Message::new(Role::User, text));
        Ok(req)
    }

    /// A final answer streamed under the run's deadline: its content chunks, then its usage.
    pub(crate) fn streamed<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        req: ModelRequest,
    ) -> impl Stream<Item = Result<Streamed, Error>> + Send + 'a {
        async_stream::stream! {
            let opened = tokio::time::timeout_at(self.deadline, self.router.stream(ctx, req)).await;
            let mut chunks = match opened.unwrap_or_else(|_| Err(self.timeout())) {
                Ok(s) => s,
                Err(e) => { yield Err(e); return; }
            };
            loop {
                match tokio::time::timeout_at(self.deadline, chunks.next()).await {
                    Err(_) => { yield Err(self.timeout()); return; }
                    Ok(None) => return,
                    Ok(Some(Err(e))) => { yield Err(e); return; }
                    Ok(Some(Ok(mut chunk))) => {
                        if let Some(usage) = chunk.usage.take() {
                            yield Ok(Streamed::Usage(usage));
                        }
                        if !chunk.choices.is_empty() {
                            chunk.model.clone_from(&self.request.model);
                            yield Ok(Streamed::Chunk(Box::new(chunk)));
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn synthesis_failure(&self, mut report: FusionReport, error: Error) -> FusionError {
        let reason =
            if matches!(error.cause(), Error::Timeout(_)) && Instant::now() >= self.deadline {
                FailureReason::Timeout
            } else {
                FailureReason::SynthesisFailed
            };
        if !report.failed_models.contains(&self.plan.synthesizer) {
            report.failed_models.push(self.plan.synthesizer.clone());
        }
        report.failure_reason = Some(reason);
        FusionError {
            error: error.context("fusion synthesis"),
            reason: Some(reason),
            report: Some(Box::new(report)),
        }
    }

    /// The final stage gave no text, even when asked again: a failure, never an empty answer.
    pub(crate) fn empty_synthesis(&self, report: FusionReport) -> FusionError {
        let error = Error::InvalidResponse("the final answer came back empty twice".into());
        let mut failure = self.synthesis_failure(report, error);
        failure.reason = Some(FailureReason::EmptyCompletion);
        if let Some(report) = failure.report.as_mut() {
            report.failure_reason = failure.reason;
        }
        failure
    }

    pub(crate) fn timeout(&self) -> Error {
        Error::Timeout(format!(
            "the fusion run passed its total_timeout_s of {}s",
            self.plan.total_timeout.as_secs_f64()
        ))
    }

    // ---- helpers ----

    fn supports_tools(&self, model: &str) -> bool {
        self.router
            .config()
            .resolve(model)
            .is_some_and(|m| m.supports_tools)
    }

    /// Whether a member researches by calling the tools itself. A local model does so only
    /// when it can search: given nothing but `web_fetch`, a small model invents URLs to fetch.
    fn agentic(&self, model: &str) -> bool {
        self.supports_tools(model) && (!self.is_local(model) || self.tools.has_search())
    }

    fn is_local(&self, model: &str) -> bool {
        research::is_local(self.router.config(), model)
    }

    /// How many characters each answer may keep so that the prompt fits `model`'s context with
    /// `reserve` tokens to spare; `None` when the context is unknown (frontier models).
    pub(crate) fn answer_budget(
        &self,
        model: &str,
        answers: usize,
        reserve: usize,
        conversation: &[Value],
    ) -> Option<usize> {
        let context = self.router.config().resolve(model)?.context_length? as usize;
        let asked: usize = conversation
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .sum();
        // The template's own text is about 400 tokens.
        let free = context.saturating_sub(reserve + 400 + asked / CHARS_PER_TOKEN);
        Some((free * CHARS_PER_TOKEN / answers.max(1)).max(200))
    }
}

/// Streams a member's answer, reporting its token count as it grows.
async fn answer(
    router: &Router,
    ctx: &RequestCtx,
    slot: usize,
    req: ModelRequest,
    events: &Events,
) -> Result<(String, Usage), Error> {
    let mut chunks = router.stream(ctx, req).await?;
    let mut text = String::new();
    let mut usage = Usage::default();
    let mut tokens = 0u64;
    let mut reported = Instant::now();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        for choice in &chunk.choices {
            if let Some(piece) = choice.delta.content.as_deref().filter(|p| !p.is_empty()) {
                text.push_str(piece);
                tokens += 1;
            }
        }
        if let Some(u) = chunk.usage {
            usage = u;
        }
        if reported.elapsed() >= TOKEN_EVENT_EVERY {
            reported = Instant::now();
            let _ = events.send(FusionEvent::MemberTokens { slot, tokens });
        }
    }
    Ok((text, usage))
}

/// The caller's request as an inner call starts from: no fusion, no client tools, no fallbacks.
/// `response_format` is kept only for the synthesis.
fn inner_request(req: &ModelRequest, keep_format: bool) -> ModelRequest {
    let mut inner = req.clone();
    inner.stream = false;
    inner.fallbacks = None;
    inner.tools = Vec::new();
    inner.tool_choice = None;
    inner.seed = None;
    if !keep_format {
        inner.response_format = None;
    }
    inner
        .plugins
        .retain(|p| p.get("id").and_then(Value::as_str) != Some("fusion"));
    inner
}

fn answers(panel: &[MemberReport]) -> Vec<AnswerView> {
    panel
        .iter()
        .filter_map(|m| {
            Some(AnswerView {
                slot: m.slot,
                label: format!("#{}", m.slot + 1),
                model: m.model.clone(),
                content: m.content.clone()?,
            })
        })
        .collect()
}

pub(crate) fn clipped(answers: &[AnswerView], budget: Option<usize>) -> Vec<AnswerView> {
    answers
        .iter()
        .map(|a| AnswerView {
            slot: a.slot,
            label: a.label.clone(),
            model: a.model.clone(),
            content: match budget {
                Some(max) if a.content.len() > max => {
                    let mut end = max;
                    while !a.content.is_char_boundary(end) {
                        end -= 1;
                    }
                    format!("{} […]", &a.content[..end])
                }
                _ => a.content.clone(),
            },
        })
        .collect()
}

pub(crate) fn conversation(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.text()}))
        .collect()
}

fn question(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(Message::text)
        .unwrap_or_default()
}

/// Too few members answered: the reason says whether they all failed the same way.
fn panel_failure(mut report: FusionReport, quorum: usize) -> FusionError {
    let errors: Vec<&MemberError> = report
        .panel
        .iter()
        .filter_map(|m| m.error.as_ref())
        .collect();
    let all = |reason: &str| !errors.is_empty() && errors.iter().all(|e| e.reason == reason);
    let reason = if all("rate_limited") {
        FailureReason::RateLimited
    } else if all("insufficient_credits") {
        FailureReason::InsufficientCredits
    } else if all("timeout") {
        FailureReason::Timeout
    } else {
        FailureReason::AllPanelsFailed
    };
    let details: Vec<String> = report
        .panel
        .iter()
        .filter_map(|m| {
            let e = m.error.as_ref()?;
            Some(format!("#{} {}: {}", m.slot + 1, m.model, e.message))
        })
        .collect();
    let answered = report.panel.iter().filter(|m| m.content.is_some()).count();
    report.failure_reason = Some(reason);
    FusionError {
        error: Error::Upstream {
            status: None,
            message: format!(
                "fusion: {answered} of {} panel members answered, {quorum} needed ({})",
                report.panel.len(),
                details.join("; ")
            ),
        },
        reason: Some(reason),
        report: Some(Box::new(report)),
    }
}

/// Every member's sources, in slot order.
pub(crate) fn all_sources(panel: &[MemberReport]) -> Vec<Source> {
    panel
        .iter()
        .flat_map(|m| m.sources.iter().cloned())
        .collect()
}

/// A whole answer as one chunk (the text held back for strict citations).
fn whole_chunk(model: &str, text: String, finish: Option<String>) -> ChatChunk {
    let mut chunk = ChatChunk::empty(model);
    chunk.choices.push(ChunkChoice {
        index: 0,
        delta: Delta {
            role: Some(Role::Assistant),
            content: Some(text),
            ..Delta::default()
        },
        finish_reason: finish.or_else(|| Some("stop".into())),
        extra: Default::default(),
    });
    chunk
}

pub(crate) fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
