//! What a run reports back: the `fusion` extension object on the completion, exact usage summed
//! over every inner call, and typed failures.

use quorate_api::{ErrorBody, Usage};
use quorate_providers::Error;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use quorate_tools::Source;

use crate::analysis::Analysis;
use crate::citations::Numbered;
use crate::strategy::{Agreement, Selection, Strategy, VoteTally};

/// Why a run (or its judge) did not go as planned. The names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    AllPanelsFailed,
    RateLimited,
    InsufficientCredits,
    JudgeNotValidJson,
    JudgeSchemaMismatch,
    JudgeUpstreamError,
    JudgeEmptyCompletion,
    Timeout,
    SynthesisFailed,
    /// The final answer was empty, twice.
    EmptyCompletion,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllPanelsFailed => "all_panels_failed",
            Self::RateLimited => "rate_limited",
            Self::InsufficientCredits => "insufficient_credits",
            Self::JudgeNotValidJson => "judge_not_valid_json",
            Self::JudgeSchemaMismatch => "judge_schema_mismatch",
            Self::JudgeUpstreamError => "judge_upstream_error",
            Self::JudgeEmptyCompletion => "judge_empty_completion",
            Self::Timeout => "timeout",
            Self::SynthesisFailed => "synthesis_failed",
            Self::EmptyCompletion => "empty_completion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Ok,
    Failed,
    Timeout,
    /// Stopped by the strategy: the answer was decided without it.
    Cancelled,
}

/// A member's failure: a stable `reason`, the upstream status if any, and the message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberError {
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
}

impl MemberError {
    pub fn from_error(e: &Error) -> Self {
        Self {
            reason: e.reason(),
            status: Some(e.status()),
            message: e.to_string(),
        }
    }

    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            status: None,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberReport {
    pub slot: usize,
    pub model: String,
    pub status: MemberStatus,
    pub content: Option<String>,
    pub usage: Usage,
    pub latency_ms: u64,
    pub seed: u64,
    pub error: Option<MemberError>,
    /// Every URL this member's searches returned or its fetches read (or prefetch gave it).
    pub sources: Vec<Source>,
    /// Research tool calls the member made.
    pub tool_calls: u32,
}

/// One judge call's outcome (a repair is a second attempt on the same model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeAttempt {
    pub model: String,
    pub repair: bool,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub panel_ms: u64,
    pub judge_ms: u64,
    pub synthesis_ms: u64,
    pub total_ms: u64,
}

/// Usage per stage; the completion's `usage` is their sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageUsage {
    pub panel: Usage,
    pub judge: Usage,
    pub synthesis: Usage,
}

/// The panel stopped before every member finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlyExit {
    pub reason: String,
    /// The slots cancelled.
    pub cancelled: Vec<usize>,
}

/// The `fusion` object on the completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FusionReport {
    pub preset: String,
    /// The strategy asked for (`vote` may hand over to the judge and synthesis; `vote` says so).
    pub strategy: Strategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote: Option<VoteTally>,
    /// `select`: the answer the judge chose, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// `auto`: whether the panel agreed, and what skipping the rest saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_exit: Option<EarlyExit>,
    pub panel: Vec<MemberReport>,
    pub analysis: Option<Analysis>,
    /// The judge whose analysis was used (the first one when none succeeded).
    pub judge: String,
    pub judge_attempts: Vec<JudgeAttempt>,
    pub synthesizer: String,
    pub failed_models: Vec<String>,
    pub failure_reason: Option<FailureReason>,
    /// Fewer members answered than the panel has slots.
    pub degraded: bool,
    /// The sources the synthesizer was given, numbered as the answer cites them.
    pub sources: Vec<Numbered>,
    /// URLs (or `[n]` markers) the answer cites that no member retrieved.
    pub unverified_citations: Vec<String>,
    /// Why research was off or limited (no search backend, a failed prefetch), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_note: Option<String>,
    pub usage: StageUsage,
    pub timings: Timings,
}

impl FusionReport {
    /// The caller's `usage`: every inner call summed exactly, with `cost_details` per stage.
    pub fn total_usage(&self) -> Usage {
        let stages = &self.usage;
        let mut total = Usage {
            cost: Some(Default::default()),
            ..Usage::default()
        };
        for stage in [&stages.panel, &stages.judge, &stages.synthesis] {
            add(&mut total, stage);
        }
        let cost = |u: &Usage| u.cost.unwrap_or_default().to_f64().unwrap_or(0.0);
        total.extra.insert(
            "cost_details".into(),
            json!({"panel": cost(&stages.panel), "judge": cost(&stages.judge),
                   "synthesis": cost(&stages.synthesis)}),
        );
        total
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Adds `u` into `total`: tokens and exact-decimal cost.
pub fn add(total: &mut Usage, u: &Usage) {
    total.prompt_tokens += u.prompt_tokens;
    total.completion_tokens += u.completion_tokens;
    total.total_tokens += u.total_tokens.max(u.prompt_tokens + u.completion_tokens);
    total.cost = Some(total.cost.unwrap_or_default() + u.cost.unwrap_or_default());
}

/// A run that produced no answer: the error decides the HTTP status; the reason and the report
/// so far go into the error's metadata.
#[derive(Debug, Clone)]
pub struct FusionError {
    pub error: Error,
    pub reason: Option<FailureReason>,
    pub report: Option<Box<FusionReport>>,
}

impl FusionError {
    pub fn plain(error: Error) -> Self {
        Self {
            error,
            reason: None,
            report: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.error.status()
    }

    pub fn to_body(&self) -> ErrorBody {
        let mut body = self.error.to_body();
        if let Some(reason) = self.reason {
            body = body.with_metadata("failure_reason", reason.as_str());
        }
        if let Some(report) = &self.report {
            body = body.with_metadata("fusion", report.to_value());
        }
        body
    }
}

impl std::fmt::Display for FusionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Some(reason) => write!(f, "{} ({})", self.error, reason.as_str()),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for FusionError {}

impl From<Error> for FusionError {
    fn from(error: Error) -> Self {
        Self::plain(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn usage_sums_exactly_with_cost_details() {
        let usage = |p, c, cost: i64| Usage {
            cost: Some(Decimal::new(cost, 7)),
            ..Usage::new(p, c)
        };
        let report = FusionReport {
            usage: StageUsage {
                panel: usage(10, 20, 1),
                judge: usage(30, 5, 2),
                synthesis: usage(40, 8, 3),
            },
            ..FusionReport::default()
        };
        let total = report.total_usage();
        assert_eq!(
            (
                total.prompt_tokens,
                total.completion_tokens,
                total.total_tokens
            ),
            (80, 33, 113)
        );
        assert_eq!(
            total.cost,
            Some(Decimal::new(6, 7)),
            "0.1 + 0.2 + 0.3 µ$ exactly"
        );
        assert_eq!(total.extra["cost_details"]["judge"], json!(0.0000002));
    }

    #[test]
    fn errors_carry_reason_and_report() {
        let e = FusionError {
            error: Error::Upstream {
                status: None,
                message: "all failed".into(),
            },
            reason: Some(FailureReason::AllPanelsFailed),
            report: Some(Box::default()),
        };
        let body = e.to_body();
        assert_eq!(body.error.code, 502);
        assert_eq!(body.error.metadata["failure_reason"], "all_panels_failed");
        assert!(body.error.metadata["fusion"]["panel"].is_array());
    }
}
