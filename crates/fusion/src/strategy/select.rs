//! `select`: the judge reads the answers and names the best one (its label and why, held to a
//! schema); that answer is returned verbatim (best-of-n). Cheap, and it cannot garble a right
//! answer. When no judge names one, the run goes on as `fuse`.

use quorate_api::ResponseFormat;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Variant;

/// The `selection` object of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// The chosen answer's label (`#2`) and slot.
    pub label: String,
    pub slot: usize,
    pub reason: String,
    /// The judge that chose.
    pub judge: String,
}

pub(crate) struct Select;

impl Variant for Select {
    fn selects(&self) -> bool {
        true
    }
}

/// The judge's reply: a label from `labels` and a reason.
pub(crate) fn response_format(labels: &[String]) -> ResponseFormat {
    ResponseFormat::json_schema(
        "fusion_selection",
        json!({"type": "object", "additionalProperties": false, "required": ["best", "reason"],
            "properties": {"best": {"type": "string", "enum": labels},
                "reason": {"type": "string"}}}),
    )
}

#[derive(Deserialize)]
struct Reply {
    best: String,
    #[serde(default)]
    reason: String,
}

/// The label and reason of a reply, when it names one of `labels` (`2` or `Answer #2` as well).
pub(crate) fn parse(reply: &str, labels: &[String]) -> Option<(String, String)> {
    let reply: Reply = serde_json::from_str(quorate_api::text::unfenced(reply)).ok()?;
    let named = reply.best.trim().trim_start_matches("Answer").trim();
    let label = labels
        .iter()
        .find(|l| *l == named || l.trim_start_matches('#') == named.trim_start_matches('#'))?;
    Some((label.clone(), reply.reason.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_a_label() {
        let labels = ["#1".to_string(), "#2".to_string(), "#3".to_string()];
        let parse = |r: &str| parse(r, &labels);
        assert_eq!(
            parse(r##"{"best": "#2", "reason": " It shows its work. "}"##),
            Some(("#2".into(), "It shows its work.".into()))
        );
        assert_eq!(
            parse("```json\n{\"best\": \"Answer 3\", \"reason\": \"r\"}\n```"),
            Some(("#3".into(), "r".into()))
        );
        assert_eq!(parse(r##"{"best": "#4", "reason": "r"}"##), None);
        assert_eq!(parse("the second one"), None);
    }
}
