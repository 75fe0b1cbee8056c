//! What the simulator does for one request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Fixed answer text. Without it (and without `json` or `tool_call`) the sim echoes the last
    /// user message.
    #[serde(default)]
    pub reply: Option<String>,
    /// Answer with this value as JSON text.
    #[serde(default)]
    pub json: Option<Value>,
    /// Answer with a tool call instead of text.
    #[serde(default)]
    pub tool_call: Option<ToolCallScript>,
    /// Answer with several tool calls at once (parallel calls), after `tool_call` if both.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallScript>,
    /// Time to first token, in milliseconds.
    #[serde(default)]
    pub ttft_ms: u64,
    /// Delay between tokens while streaming, in milliseconds.
    #[serde(default)]
    pub token_ms: u64,
    #[serde(default)]
    pub fault: Option<Fault>,
    /// HTTP status for `fault = "status"` (default 500).
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with a `status` fault.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// The fault hits only the first N requests for this model; later ones succeed.
    #[serde(default)]
    pub fail_first: Option<u64>,
    /// Tokens streamed before a `cut` or `error_event` fault strikes (default 2).
    #[serde(default)]
    pub cut_after: Option<usize>,
    /// Delay between single bytes for `fault = "drip"`, in milliseconds (default 1).
    #[serde(default)]
    pub drip_ms: Option<u64>,
    /// Report this `usage.cost`, as OpenRouter does.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Scripts for successive requests to this model: the n-th request gets `sequence[n]`, and
    /// requests past the end get the last one (e.g. an invalid answer, then a valid one).
    #[serde(default)]
    pub sequence: Vec<Script>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer with an HTTP error status (and `Retry-After` when set).
    Status,
    /// Never answer.
    Hang,
    /// A 200 whose body (or first stream event) is not valid JSON.
    Malformed,
    /// Stream some tokens, then close the connection in the middle of an event.
    Cut,
    /// Stream some tokens, then an in-stream error event.
    ErrorEvent,
    /// Send the whole answer one byte at a time (frames split across every read).
    Drip,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolCallScript {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// The answer a script gives to a conversation whose last user text is `last_user`.
pub enum Answer {
    Text(String),
    ToolCalls(Vec<Call>),
}

/// One tool call of an answer.
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Script {
    /// The script for the request that is number `seen` (0-based) for its model.
    pub fn nth(self, seen: u64) -> Script {
        match self.sequence.len() {
            0 => self,
            n => self.sequence[(seen as usize).min(n - 1)].clone(),
        }
    }

    pub fn answer(&self, last_user: &str) -> Answer {
        let calls: Vec<Call> = self
            .tool_call
            .iter()
            .chain(&self.tool_calls)
            .enumerate()
            .map(|(i, call)| Call {
                id: format!("call_sim_{}", i + 1),
                name: call.name.clone(),
                arguments: if call.arguments.is_null() {
                    "{}".to_string()
                } else {
                    call.arguments.to_string()
                },
            })
            .collect();
        if !calls.is_empty() {
            return Answer::ToolCalls(calls);
        }
        if let Some(json) = &self.json {
            return Answer::Text(json.to_string());
        }
        Answer::Text(
            self.reply
                .clone()
                .unwrap_or_else(|| format!("echo: {last_user}")),
        )
    }

    pub fn ttft(&self) -> Duration {
        Duration::from_millis(self.ttft_ms)
    }

    pub fn token_delay(&self) -> Duration {
        Duration::from_millis(self.token_ms)
    }

    pub fn cut_after(&self) -> usize {
        self.cut_after.unwrap_or(2)
    }
}

/// Splits text into "tokens": words with their trailing space, so they concatenate back.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        current.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A deterministic stand-in for a tokenizer: whitespace-separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back() {
        let text = "the  quick brown fox ";
        assert_eq!(tokens(text).concat(), text);
        assert_eq!(tokens("a b").len(), 2);
    }
}
