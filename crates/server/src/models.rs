//! `GET /v1/models`: every configured model, OpenRouter-style.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use quorate_api::{ModelInfo, ModelList, Pricing};
use quorate_config::{Config, ProviderKind};
use rust_decimal::Decimal;

use crate::AppState;

const COMMON_PARAMETERS: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
];
const OPENAI_PARAMETERS: &[&str] = &[
    "seed",
    "response_format",
    "logprobs",
    "frequency_penalty",
    "presence_penalty",
];
const ANTHROPIC_PARAMETERS: &[&str] = &["top_k"];
const LOCAL_PARAMETERS: &[&str] = &["seed", "response_format", "top_k"];

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(model_list(state.router.config()))
}

fn per_token(per_mtok: Option<Decimal>) -> String {
    let per_token = per_mtok.unwrap_or(Decimal::ZERO) / Decimal::from(1_000_000);
    per_token.normalize().to_string()
}

pub fn model_list(config: &Config) -> ModelList {
    let data = config
        .models
        .keys()
        .filter_map(|id| {
            let model = config.resolve(id)?;
            let kind = config.providers.get(&model.provider)?.kind;
            let extra = match kind {
                ProviderKind::Openai => OPENAI_PARAMETERS,
                ProviderKind::Anthropic => ANTHROPIC_PARAMETERS,
                ProviderKind::Local => LOCAL_PARAMETERS,
            };
            Some(ModelInfo {
                id: id.clone(),
                object: "model".into(),
                created: 0,
                owned_by: model.provider.clone(),
                name: config.models[id].name.clone().unwrap_or_else(|| id.clone()),
                context_length: model.context_length,
                pricing: Pricing {
                    prompt: per_token(model.input_usd_per_mtok),
                    completion: per_token(model.output_usd_per_mtok),
                },
                supported_parameters: COMMON_PARAMETERS
                    .iter()
                    .chain(extra)
                    .map(|s| s.to_string())
                    .collect(),
            })
        })
        .collect();
    ModelList::new(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_usd_per_token_strings() {
        let config = Config::from_toml(
            "[models.\"openai/m\"]\nprovider = \"openai\"\ninput_usd_per_mtok = 0.5\noutput_usd_per_mtok = 15\ncontext_length = 8192\n",
            "t",
        )
        .unwrap();
        let list = model_list(&config);
        let m = list.data.iter().find(|m| m.id == "openai/m").unwrap();
        assert_eq!(m.pricing.prompt, "0.0000005");
        assert_eq!(m.pricing.completion, "0.000015");
        assert_eq!(m.context_length, Some(8192));
        assert!(m.supported_parameters.contains(&"seed".to_string()));
    }
}
