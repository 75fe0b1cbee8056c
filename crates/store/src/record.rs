//! What is kept of a request: the figures lists filter and sum on (`Summary`, one column each)
//! and the rest (`Detail`, one JSON column).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A kept request, as `GET /v1/runs/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(flatten)]
    pub detail: Detail,
}

/// A request's figures, as `GET /v1/runs` lists them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The completion's id (`gen-...`), the `x-request-id` of the response. Left empty when the
    /// gateway keeps no store (the record then only feeds the metrics).
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub created_ms: i64,
    /// The gateway key's name (never the key); none on an open gateway.
    pub caller: Option<String>,
    /// The API it came in through: `chat` (`/v1/chat/completions`). Borrowed when recorded
    /// (the surfaces' names are constants), owned when read back.
    pub surface: Cow<'static, str>,
    /// The model asked for.
    pub model: String,
    /// The model that answered (after fallbacks); for fusion, the synthesizer. Not set when the
    /// gateway keeps no store.
    pub answered_by: Option<String>,
    pub kind: Kind,
    pub stream: bool,
    /// The HTTP status answered (200 for a stream that broke off after it started: see
    /// `error_kind`).
    pub status: u16,
    /// The failure's stable name (`rate_limited`, `timeout`, `panel_failed`, ...).
    pub error_kind: Option<String>,
    pub latency_ms: u64,
    /// Streams: the time to the first content chunk.
    pub first_token_ms: Option<u64>,
    /// What the gateway itself spent: the latency less the time waiting on providers.
    pub gateway_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: Option<f64>,
    /// Tokens an early exit did not spend (estimated by the run).
    #[serde(default)]
    pub saved_tokens: u64,
}

/// What the gateway did with a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Passed to a model (with fallbacks).
    #[default]
    Completion,
    /// A fusion run: slug, plugin or the fusion tool.
    Fusion,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Completion => "completion",
            Kind::Fusion => "fusion",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "fusion" {
            Kind::Fusion
        } else {
            Kind::Completion
        }
    }
}

/// The rest of a request's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub error: Option<String>,
    /// Every try at a model, inner fusion calls included.
    pub attempts: Vec<Attempt>,
    /// The request's messages and parameters (dropped when `[store] content = false`).
    pub request: Option<Value>,
    /// The answer's text (dropped when `[store] content = false`).
    pub answer: Option<String>,
    /// The `fusion` object: plan, each member's answer, usage and sources, the analysis,
    /// failures (text dropped when `[store] content = false`).
    pub fusion: Option<Value>,
    /// The fusion's progress events, each with its time since the request arrived.
    pub events: Vec<TimedEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub model: String,
    pub provider: String,
    pub retry: u32,
    pub status: u16,
    /// `ok`, or the error's stable name: borrowed when recorded, owned when read back.
    pub reason: Cow<'static, str>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedEvent {
    pub t_ms: u64,
    pub event: Value,
}

impl Run {
    /// The record without prompt and answer text: the figures, attempts and the shape of the
    /// fusion (who answered, how long, how many tokens) stay.
    pub fn without_content(mut self) -> Self {
        let detail = &mut self.detail;
        detail.request = None;
        detail.answer = None;
        if let Some(fusion) = detail.fusion.as_mut() {
            strip_fusion_text(fusion);
        }
        for timed in &mut detail.events {
            // Tool calls carry the queries and URLs a member chose.
            if let Some(event) = timed.event.as_object_mut() {
                event.remove("arguments");
            }
        }
        self
    }
}

/// Removes what a model wrote or read from a `fusion` object: answers, the analysis, the
/// selection's reason, the sources, the vote's extracted answers.
fn strip_fusion_text(fusion: &mut Value) {
    let Some(object) = fusion.as_object_mut() else {
        return;
    };
    for key in ["analysis", "sources", "unverified_citations"] {
        object.remove(key);
    }
    if let Some(selection) = object.get_mut("selection").and_then(Value::as_object_mut) {
        selection.remove("reason");
    }
    if let Some(vote) = object.get_mut("vote").and_then(Value::as_object_mut) {
        vote.remove("answers");
        vote.remove("winner");
    }
    if let Some(panel) = object.get_mut("panel").and_then(Value::as_array_mut) {
        for member in panel.iter_mut().filter_map(Value::as_object_mut) {
            member.remove("content");
            member.remove("sources");
        }
    }
}

/// What `GET /v1/runs` filters on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub model: Option<String>,
    pub status: Option<u16>,
    pub caller: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// Where a page ended: the last row's time and id (rows are newest first, ties by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('.')?;
        Some(Self {
            created_ms: ms.parse().ok()?,
            id: id.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub data: Vec<Summary>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn without_content_keeps_figures_and_drops_text() {
        let run = Run {
            summary: Summary {
                id: "gen-1".into(),
                prompt_tokens: 12,
                ..Summary::default()
            },
            detail: Detail {
                request: Some(json!({"messages": [{"role": "user", "content": "secret q"}]})),
                answer: Some("secret a".into()),
                fusion: Some(json!({
                    "panel": [{"slot": 0, "model": "m", "content": "secret m", "latency_ms": 5,
                               "sources": [{"url": "https://x"}]}],
                    "analysis": {"consensus": ["secret c"]},
                    "selection": {"label": "#1", "reason": "secret r"},
                    "timings": {"total_ms": 9}
                })),
                events: vec![TimedEvent {
                    t_ms: 1,
                    event: json!({"type": "member_tool_call", "arguments": {"query": "secret s"}}),
                }],
                ..Detail::default()
            },
        };
        let kept = run.without_content();
        let text = serde_json::to_string(&kept).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(kept.summary.prompt_tokens, 12);
        let fusion = kept.detail.fusion.unwrap();
        assert_eq!(fusion["panel"][0]["latency_ms"], 5);
        assert_eq!(fusion["timings"]["total_ms"], 9);
    }

    #[test]
    fn cursors_round_trip_ids_with_dots() {
        let c = Cursor {
            created_ms: 1700,
            id: "gen-1.2".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
    }
}

/// Totals of one model's requests of one kind on one day (UTC), as the Usage page charts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub model: String,
    pub kind: Kind,
    pub requests: u64,
    /// Requests that answered an error status or broke off.
    pub failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub saved_tokens: u64,
}

/// How often requests failed for one reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub rows: Vec<UsageRow>,
    pub failures: Vec<FailureCount>,
}
