//! The live fusion display of `quorate ask` on stderr: a line per panel member (status, tokens,
//! research tool calls, elapsed time) and one for the judge, redrawn in place on a terminal,
//! printed as events otherwise; then the sources, the cost line and, on request, the panel's
//! answers and the analysis.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use quorate_fusion::{FusionEvent, FusionReport, MemberStatus, Plan, Strategy, VoteOutcome};

enum State {
    Waiting,
    Working,
    Done,
    Failed(String),
    Cancelled,
}

struct Line {
    label: String,
    state: State,
    tokens: u64,
    tool_calls: u64,
    started: Option<Instant>,
    took: Option<Duration>,
}

impl Line {
    fn new(label: String) -> Self {
        Self {
            label,
            state: State::Waiting,
            tokens: 0,
            tool_calls: 0,
            started: None,
            took: None,
        }
    }

    fn start(&mut self) {
        self.state = State::Working;
        self.started = Some(Instant::now());
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        self.took = self.started.map(|s| s.elapsed());
    }

    fn render(&self) -> String {
        let elapsed = self
            .took
            .or(self.started.map(|s| s.elapsed()))
            .map_or(String::new(), |d| format!("{:>6.1}s", d.as_secs_f64()));
        let tokens = if self.tokens > 0 {
            format!("{:>5} tok", self.tokens)
        } else {
            " ".repeat(9)
        };
        let status = match &self.state {
            State::Waiting => "waiting".to_string(),
            State::Working if self.tool_calls > 0 => {
                format!("researching ({} tool calls)", self.tool_calls)
            }
            State::Working => "working".to_string(),
            State::Done => "done".to_string(),
            State::Failed(why) => format!("failed: {why}"),
            State::Cancelled => "cancelled: the strategy decided without it".to_string(),
        };
        format!("  {:<40} {tokens} {elapsed}  {status}", self.label)
    }
}

pub struct Panel {
    enabled: bool,
    tty: bool,
    /// Panel members, then the judge.
    lines: Vec<Line>,
    /// Lines on screen to redraw; none before the first event or after the synthesis began.
    drawn: usize,
    live: bool,
}

impl Panel {
    pub fn new(plan: &Plan, enabled: bool) -> Self {
        let mut lines: Vec<Line> = plan
            .panel
            .iter()
            .enumerate()
            .map(|(slot, model)| Line::new(format!("#{} {model}", slot + 1)))
            .collect();
        lines.push(Line::new(format!("judge {}", plan.judges[0])));
        if enabled {
            eprintln!(
                "fusion: preset {}, {} panel members, synthesis by {}",
                plan.preset,
                plan.panel.len(),
                plan.synthesizer
            );
        }
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            lines,
            drawn: 0,
            live: true,
        }
    }

    pub fn event(&mut self, event: &FusionEvent) {
        let judge = self.lines.len() - 1;
        let line = match event {
            FusionEvent::MemberStarted { slot, .. } => self.member(*slot, Line::start),
            FusionEvent::MemberTokens { slot, tokens } => {
                self.member(*slot, |line| line.tokens = *tokens)
            }
            FusionEvent::MemberToolCall { slot, .. } => {
                self.member(*slot, |line| line.tool_calls += 1)
            }
            FusionEvent::MemberDone { slot, tokens, .. } => self.member(*slot, |line| {
                line.tokens = *tokens;
                line.finish(State::Done);
            }),
            FusionEvent::MemberFailed { slot, reason, .. } => {
                self.member(*slot, |line| line.finish(State::Failed(reason.clone())))
            }
            FusionEvent::PanelStopped { cancelled, .. } => {
                for &slot in cancelled {
                    self.member(slot, |line| line.finish(State::Cancelled));
                }
                self.redraw();
                None
            }
            FusionEvent::JudgeStarted { model } => {
                self.lines[judge] = Line::new(format!("judge {model}"));
                self.lines[judge].start();
                Some(judge)
            }
            FusionEvent::JudgeDone { failure_reason, .. } => {
                let state = match failure_reason {
                    Some(reason) => State::Failed(reason.as_str().to_string()),
                    None => State::Done,
                };
                self.lines[judge].finish(state);
                Some(judge)
            }
            FusionEvent::SynthesisStarted { .. } => {
                self.redraw();
                self.live = false;
                if self.enabled {
                    eprintln!();
                }
                None
            }
            FusionEvent::FusionCalled { .. }
            | FusionEvent::PrefetchStarted
            | FusionEvent::PrefetchDone { .. } => None,
        };
        if let Some(index) = line {
            self.changed(index, event);
        }
    }

    /// Applies `change` to a panel member's line; `None` for a slot the plan does not have.
    fn member(&mut self, slot: usize, change: impl FnOnce(&mut Line)) -> Option<usize> {
        let judge = self.lines.len() - 1;
        let line = self.lines[..judge].get_mut(slot)?;
        change(line);
        Some(slot)
    }

    /// Called every few hundred milliseconds so elapsed times move on a terminal.
    pub fn tick(&mut self) {
        if self.drawn > 0 {
            self.redraw();
        }
    }

    /// The run failed: leave the last state on screen.
    pub fn failed(&mut self) {
        self.redraw();
        self.live = false;
    }

    fn changed(&mut self, index: usize, event: &FusionEvent) {
        if !self.enabled || !self.live {
            return;
        }
        let finished = matches!(
            event,
            FusionEvent::MemberDone { .. }
                | FusionEvent::MemberFailed { .. }
                | FusionEvent::JudgeDone { .. }
        );
        if self.tty {
            self.redraw();
        } else if finished {
            eprintln!("{}", self.lines[index].render());
        }
    }

    fn redraw(&mut self) {
        if !self.enabled || !self.tty || !self.live {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for line in &self.lines {
            let _ = writeln!(err, "\r\x1b[2K{}", line.render());
        }
        self.drawn = self.lines.len();
    }
}

/// Tokens, cost, how the panel fared, what decided the answer, and the time taken.
pub fn cost_line(report: &FusionReport) -> String {
    let usage = report.total_usage();
    let answered = report
        .panel
        .iter()
        .filter(|m| m.status == MemberStatus::Ok)
        .count();
    let cancelled = report.early_exit.as_ref().map_or(String::new(), |e| {
        format!(" ({} cancelled)", e.cancelled.len())
    });
    let agreed = report.agreement.as_ref().filter(|a| a.agreed);
    let decided = match (
        agreed,
        &report.selection,
        &report.vote,
        report.failure_reason,
    ) {
        (Some(a), ..) => format!(
            "{} agree, judge and synthesis skipped (~{} tokens saved)",
            a.group.len(),
            a.saved.prompt_tokens + a.saved.completion_tokens
        ),
        (_, Some(chosen), ..) => format!("judge chose {}", chosen.label),
        (_, _, Some(vote), _) if vote.outcome == VoteOutcome::Majority => {
            format!(
                "vote: {} for {}",
                vote.votes,
                vote.winner.as_deref().unwrap_or_default()
            )
        }
        (.., Some(reason)) => format!("judge failed ({})", reason.as_str()),
        _ if report.strategy == Strategy::Mixture => "no judge (mixture)".to_string(),
        _ => "judge ok".to_string(),
    };
    format!(
        "cost ${} · {} prompt + {} completion tokens · panel {answered}/{} answered{cancelled} · {decided} · {:.1}s",
        usage.cost.unwrap_or_default().normalize(),
        usage.prompt_tokens,
        usage.completion_tokens,
        report.panel.len(),
        report.timings.total_ms as f64 / 1000.0
    )
}

/// The numbered sources the answer may cite, and why research was off if it was, to stderr.
pub fn show_sources(report: &FusionReport) {
    if let Some(note) = &report.tools_note {
        eprintln!("research: {note}");
    }
    if !report.sources.is_empty() {
        eprintln!("sources:");
        for source in &report.sources {
            eprintln!("  [{}] {} — {}", source.n, source.title, source.url);
        }
    }
    if !report.unverified_citations.is_empty() {
        eprintln!(
            "unverified citations (no panel member retrieved them): {}",
            report.unverified_citations.join(", ")
        );
    }
}

/// Each member's answer (or why it has none), then the analysis, to stdout.
pub fn show_panel(report: &FusionReport) {
    println!("\n── panel ──");
    for member in &report.panel {
        println!(
            "\n#{} {} ({:?}, {} ms)",
            member.slot + 1,
            member.model,
            member.status,
            member.latency_ms
        );
        match (&member.content, &member.error) {
            (Some(content), _) => println!("{}", content.trim()),
            (None, Some(e)) => println!("[{}] {}", e.reason, e.message),
            (None, None) => {}
        }
    }
    println!("\n── analysis ({}) ──", report.judge);
    match &report.analysis {
        Some(analysis) => println!(
            "{}",
            serde_json::to_string_pretty(analysis).unwrap_or_default()
        ),
        None => println!(
            "none: {}",
            report.failure_reason.map_or("no judge ran", |r| r.as_str())
        ),
    }
}
