//! Progress events of a run, as types. Their JSON (`{"type": "member_done", ...}`) is part of the
//! API: it is what `fusion_event` chunks carry when a client asks for `stream_progress`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::Analysis;
use crate::report::FailureReason;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FusionEvent {
    /// The fusion tool's model chose to call fusion.
    FusionCalled {
        model: String,
    },
    /// Search for the members that cannot call tools began (once per run).
    PrefetchStarted,
    PrefetchDone {
        sources: usize,
        error: Option<String>,
        latency_ms: u64,
    },
    MemberStarted {
        slot: usize,
        model: String,
    },
    /// The member's answer so far, in tokens (sent at most every 250 ms).
    MemberTokens {
        slot: usize,
        tokens: u64,
    },
    MemberToolCall {
        slot: usize,
        tool: String,
        arguments: Value,
    },
    MemberDone {
        slot: usize,
        model: String,
        tokens: u64,
        latency_ms: u64,
        tool_calls: u32,
        sources: usize,
        /// The answer, so a watcher can show it before the run ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
    },
    MemberFailed {
        slot: usize,
        model: String,
        /// A stable reason (`timeout`, `rate_limited`, `empty_completion`, ...).
        reason: String,
        error: String,
        latency_ms: u64,
    },
    /// The strategy decided before every member finished; the slots still running were cancelled.
    PanelStopped {
        reason: String,
        cancelled: Vec<usize>,
    },
    JudgeStarted {
        model: String,
    },
    JudgeDone {
        model: String,
        ok: bool,
        failure_reason: Option<FailureReason>,
        latency_ms: u64,
        /// The analysis, when this judge gave a valid one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<Box<Analysis>>,
    },
    SynthesisStarted {
        model: String,
    },
}

impl FusionEvent {
    /// The JSON a `fusion_event` chunk carries.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The wire shape clients read is the one the untyped events had.
    #[test]
    fn events_keep_their_wire_json() {
        let cases = [
            (
                FusionEvent::PrefetchStarted,
                json!({"type": "prefetch_started"}),
            ),
            (
                FusionEvent::PrefetchDone {
                    sources: 2,
                    error: None,
                    latency_ms: 5,
                },
                json!({"type": "prefetch_done", "sources": 2, "error": null, "latency_ms": 5}),
            ),
            (
                FusionEvent::MemberFailed {
                    slot: 1,
                    model: "m".into(),
                    reason: "timeout".into(),
                    error: "late".into(),
                    latency_ms: 9,
                },
                json!({"type": "member_failed", "slot": 1, "model": "m", "reason": "timeout",
                       "error": "late", "latency_ms": 9}),
            ),
            (
                FusionEvent::JudgeDone {
                    model: "j".into(),
                    ok: false,
                    failure_reason: Some(FailureReason::JudgeNotValidJson),
                    latency_ms: 3,
                    analysis: None,
                },
                json!({"type": "judge_done", "model": "j", "ok": false,
                       "failure_reason": "judge_not_valid_json", "latency_ms": 3}),
            ),
        ];
        for (event, wire) in cases {
            assert_eq!(event.to_value(), wire);
            let back: FusionEvent = serde_json::from_value(wire).unwrap();
            assert_eq!(back, event);
        }
    }
}
