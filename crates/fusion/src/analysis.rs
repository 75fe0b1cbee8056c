//! The judge's structured analysis: its JSON schema (sent as `response_format`, turned into a
//! grammar by local models) and the validation of what came back.

use quorate_api::ResponseFormat;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Claims all or most answers make: the higher-confidence core.
    pub consensus: Vec<String>,
    pub contradictions: Vec<Contradiction>,
    pub partial_coverage: Vec<Coverage>,
    pub unique_insights: Vec<Insight>,
    /// What the question needs that no answer addressed.
    pub blind_spots: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contradiction {
    pub topic: String,
    pub stances: Vec<Stance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stance {
    pub model: String,
    pub stance: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub point: String,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub insight: String,
    pub model: String,
}

/// Why a judge's reply is not an analysis.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("the reply was empty")]
    Empty,
    #[error("the reply is not valid JSON ({0})")]
    NotJson(String),
    #[error("the JSON does not match the analysis schema ({0})")]
    Schema(String),
}

impl Analysis {
    /// Parses a judge's reply. Code fences around the JSON are tolerated (models without
    /// enforced output like to add them); anything else invalid is reported by kind.
    pub fn parse(reply: &str) -> Result<Self, Invalid> {
        let text = quorate_api::text::unfenced(reply.trim());
        if text.is_empty() {
            return Err(Invalid::Empty);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| Invalid::NotJson(e.to_string()))?;
        let analysis: Analysis =
            serde_json::from_value(value).map_err(|e| Invalid::Schema(e.to_string()))?;
        Ok(analysis.tidy())
    }

    /// Drops blank entries a model may pad lists with.
    fn tidy(mut self) -> Self {
        let filled = |s: &String| !s.trim().is_empty();
        self.consensus.retain(filled);
        self.blind_spots.retain(filled);
        self.contradictions.retain(|c| filled(&c.topic));
        self.partial_coverage.retain(|c| filled(&c.point));
        self.unique_insights.retain(|i| filled(&i.insight));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.consensus.is_empty()
            && self.contradictions.is_empty()
            && self.partial_coverage.is_empty()
            && self.unique_insights.is_empty()
            && self.blind_spots.is_empty()
    }
}

/// The analysis schema. With `labels` (for local models, which enforce it as a grammar) lists and
/// strings are capped and answer references must be one of the labels: a small model must finish
/// inside its output budget, or the JSON would be cut off.
pub fn schema(labels: Option<&[String]>) -> Value {
    let bounded = labels.is_some();
    let text = if bounded {
        json!({"type": "string", "maxLength": 100})
    } else {
        json!({"type": "string"})
    };
    let label = match labels {
        Some(labels) => json!({"type": "string", "enum": labels}),
        None => text.clone(),
    };
    let list = |items: Value| {
        if bounded {
            json!({"type": "array", "items": items, "maxItems": 2})
        } else {
            json!({"type": "array", "items": items})
        }
    };
    let object = |fields: &[(&str, Value)]| {
        let properties: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let required: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        json!({"type": "object", "properties": properties, "required": required,
               "additionalProperties": false})
    };
    object(&[
        ("consensus", list(text.clone())),
        (
            "contradictions",
            list(object(&[
                ("topic", text.clone()),
                (
                    "stances",
                    list(object(&[
                        ("model", label.clone()),
                        ("stance", text.clone()),
                    ])),
                ),
            ])),
        ),
        (
            "partial_coverage",
            list(object(&[
                ("point", text.clone()),
                ("models", list(label.clone())),
            ])),
        ),
        (
            "unique_insights",
            list(object(&[("insight", text.clone()), ("model", label)])),
        ),
        ("blind_spots", list(text)),
    ])
}

/// `response_format` asking for the analysis schema.
pub fn response_format(labels: Option<&[String]>) -> ResponseFormat {
    ResponseFormat::json_schema("fusion_analysis", schema(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r##"{"consensus": ["Paris is the capital", " "],
        "contradictions": [{"topic": "population", "stances": [{"model": "#1", "stance": "2.1M"}]}],
        "partial_coverage": [{"point": "history", "models": ["#2"]}],
        "unique_insights": [{"insight": "Seine", "model": "#3"}], "blind_spots": []}"##;

    #[test]
    fn parses_valid_analysis_and_tidies_blanks() {
        let a = Analysis::parse(VALID).unwrap();
        assert_eq!(a.consensus, ["Paris is the capital"]);
        assert_eq!(a.contradictions[0].stances[0].stance, "2.1M");
        let fenced = format!("```json\n{VALID}\n```");
        assert_eq!(Analysis::parse(&fenced).unwrap(), a);
    }

    #[test]
    fn invalid_replies_are_typed() {
        assert_eq!(Analysis::parse("  "), Err(Invalid::Empty));
        assert!(matches!(
            Analysis::parse("Sure! Here is"),
            Err(Invalid::NotJson(_))
        ));
        assert!(matches!(
            Analysis::parse(r#"{"consensus": "yes"}"#),
            Err(Invalid::Schema(_))
        ));
        assert!(matches!(Analysis::parse("[]"), Err(Invalid::Schema(_))));
    }

    #[test]
    fn schema_requires_every_key_and_bounds_only_when_asked() {
        let s = schema(None);
        assert_eq!(s["required"].as_array().unwrap().len(), 5);
        assert!(s["properties"]["consensus"].get("maxItems").is_none());
        let b = schema(Some(&["#1".to_string(), "#2".to_string()]));
        assert_eq!(b["properties"]["consensus"]["maxItems"], 2);
        assert_eq!(
            b["properties"]["unique_insights"]["items"]["properties"]["model"]["enum"],
            json!(["#1", "#2"])
        );
        assert_eq!(
            b["properties"]["contradictions"]["items"]["properties"]["stances"]["items"]
                ["required"],
            json!(["model", "stance"])
        );
    }
}
