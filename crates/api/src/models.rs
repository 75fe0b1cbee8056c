//! `GET /v1/models`, OpenRouter-style: prices are strings of USD per token.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub name: String,
    pub context_length: Option<u64>,
    pub pricing: Pricing,
    pub supported_parameters: Vec<String>,
    /// OpenRouter's fields, for clients that read its model list.
    #[serde(default)]
    pub canonical_slug: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub architecture: Architecture,
    #[serde(default)]
    pub top_provider: TopProvider,
    #[serde(default)]
    pub per_request_limits: Option<serde_json::Value>,
}

/// What a model reads and writes: `modality` is `text->text` or `text+image->text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub modality: String,
    pub input_modalities: Vec<String>,
    pub output_modalities: Vec<String>,
    pub tokenizer: String,
}

impl Architecture {
    pub fn new(input_modalities: &[&str], tokenizer: &str) -> Self {
        Self {
            modality: format!("{}->text", input_modalities.join("+")),
            input_modalities: input_modalities.iter().map(|m| m.to_string()).collect(),
            output_modalities: vec!["text".into()],
            tokenizer: tokenizer.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopProvider {
    pub context_length: Option<u64>,
    pub max_completion_tokens: Option<u32>,
    pub is_moderated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    pub prompt: String,
    pub completion: String,
}

impl ModelList {
    pub fn new(data: Vec<ModelInfo>) -> Self {
        Self {
            object: "list".to_string(),
            data,
        }
    }
}
