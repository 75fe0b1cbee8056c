//! The gateway's own request: what every surface (chat completions, Messages, Responses, the CLI,
//! eval) converts its input into, and what every provider converts into its upstream's wire
//! request. It is never read from or written to JSON as a whole: wire details (`stream_options`,
//! OpenRouter's `models`, the two names of the output cap) are settled at the edge.

use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::chat::{Message, ResponseFormat};

/// The sampling temperatures accepted wherever one is set (a request, a preset, a fusion plugin,
/// an eval system), so all of them refuse the same values.
pub const TEMPERATURES: RangeInclusive<f64> = 0.0..=2.0;

/// What the caller asked of a model, a preset or a fusion slug.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// As the caller named it: a configured model, a preset or a fusion slug.
    pub model: String,
    /// The models to try in order after `model` (OpenRouter's `models`); `None`: the model's
    /// configured fallbacks.
    pub fallbacks: Option<Vec<String>>,
    pub messages: Vec<Message>,
    /// Whether the caller reads the answer as it is written. Providers go by the method called.
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The output cap in tokens.
    pub max_tokens: Option<u32>,
    pub cap_name: CapName,
    /// Sequences that end the answer.
    pub stop: Vec<String>,
    /// Sampling seed: where the model allows, the same seed and request give the same answer.
    pub seed: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    /// OpenAI-shaped tool definitions (`{"type": "function", "function": {...}}`) and Quorate's
    /// server tools (`{"type": "quorate:fusion", ...}`).
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    /// OpenRouter plugins (`{"id": "fusion", ...}`): fusion reads its own; others go upstream.
    pub plugins: Vec<Value>,
    /// What Quorate does not read (`n`, `top_k`, `logprobs`, provider extras), forwarded as it
    /// came.
    pub extra: Map<String, Value>,
}

/// Which of OpenAI's two names an OpenAI-compatible upstream gets the output cap under: the one
/// the caller used, so a request that works against the upstream directly works through
/// Quorate (reasoning models refuse `max_tokens`; older compatible servers know only it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CapName {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl CapName {
    pub fn as_str(self) -> &'static str {
        match self {
            CapName::MaxTokens => "max_tokens",
            CapName::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

impl ModelRequest {
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            fallbacks: None,
            messages,
            stream: false,
            temperature: None,
            top_p: None,
            max_tokens: None,
            cap_name: CapName::default(),
            stop: Vec::new(),
            seed: None,
            response_format: None,
            tools: Vec::new(),
            tool_choice: None,
            plugins: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Checks every surface shares. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("model: required (or `models`, the models to try in order)".into());
        }
        if self.messages.is_empty() {
            return Err("messages: must hold at least one message".into());
        }
        check_range("temperature", self.temperature, TEMPERATURES)?;
        check_range("top_p", self.top_p, 0.0..=1.0)?;
        if self.max_tokens == Some(0) {
            return Err(format!("{}: must be at least 1", self.cap_name.as_str()));
        }
        if let Some(models) = &self.fallbacks {
            if let Some(i) = models.iter().position(|m| m.trim().is_empty()) {
                return Err(format!("models[{i}]: must not be empty"));
            }
        }
        for (i, message) in self.messages.iter().enumerate() {
            message
                .validate()
                .map_err(|e| format!("messages[{i}].{e}"))?;
        }
        Ok(())
    }
}

fn check_range(name: &str, value: Option<f64>, range: RangeInclusive<f64>) -> Result<(), String> {
    in_range(value, range).map_err(|e| format!("{name}: {e}"))
}

/// `Err("must be between LOW and HIGH, got V")` when `value` is set and outside `range` (NaN is
/// outside every range).
pub fn in_range(value: Option<f64>, range: RangeInclusive<f64>) -> Result<(), String> {
    match value {
        Some(v) if !range.contains(&v) => Err(format!(
            "must be between {} and {}, got {v}",
            range.start(),
            range.end()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temperature_outside_the_range_is_refused_with_the_range() {
        assert_eq!(in_range(None, TEMPERATURES), Ok(()));
        assert_eq!(in_range(Some(2.0), TEMPERATURES), Ok(()));
        assert_eq!(
            in_range(Some(2.5), TEMPERATURES),
            Err("must be between 0 and 2, got 2.5".into())
        );
        assert!(in_range(Some(f64::NAN), TEMPERATURES).is_err());
        assert!(in_range(Some(-0.1), 0.0..=1.0).is_err());
    }
}
