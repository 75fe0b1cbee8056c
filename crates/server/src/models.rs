//! `GET /v1/models`: every configured model, OpenRouter-style.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorate_api::{Architecture, ErrorBody, ModelInfo, ModelList, Pricing, TopProvider};
use quorate_config::{Config, ProviderKind, FUSION_SLUGS};
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
const LOCAL_PARAMETERS: &[&str] = &[
    "seed",
    "response_format",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
];

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(model_list(state.router.config()))
}

/// `GET /v1/models/{id}` (ids hold slashes: `sim/a`, `quorate/fusion:budget`).
pub async fn retrieve(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match model_list(state.router.config())
        .data
        .into_iter()
        .find(|m| m.id == id)
    {
        Some(model) => Json(model).into_response(),
        None => crate::error::respond(
            404,
            ErrorBody::new(404, format!("no model {id:?}: GET /v1/models lists them")),
            None,
        ),
    }
}

fn per_token(per_mtok: Option<Decimal>) -> String {
    let per_token = per_mtok.unwrap_or(Decimal::ZERO) / Decimal::from(1_000_000);
    per_token.normalize().to_string()
}

/// What a fusion slug accepts on top of the common parameters.
const FUSION_PARAMETERS: &[&str] = &["seed", "response_format", "plugins"];

pub fn model_list(config: &Config) -> ModelList {
    let models = configured_models(config);
    let mut data = fusion_entries(config, &models);
    data.extend(models);
    ModelList::new(data)
}

/// Local models read text only; other upstreams get image parts as sent.
fn input_modalities(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Local => &["text"],
        ProviderKind::Openai | ProviderKind::Anthropic => &["text", "image"],
    }
}

/// A fusion run's limits are its stages' tightest: the smallest context any stage has, and only
/// what every stage reads.
fn fusion_limits(
    config: &Config,
    preset: &str,
    models: &[ModelInfo],
) -> (Option<u64>, Architecture) {
    let stages: Vec<&ModelInfo> = config
        .presets
        .get(preset)
        .map(|p| {
            p.panel
                .iter()
                .chain(p.judge.as_ref())
                .chain([&p.synthesizer])
                .filter_map(|id| models.iter().find(|m| &m.id == id))
                .collect()
        })
        .unwrap_or_default();
    let context = stages.iter().filter_map(|m| m.context_length).min();
    let reads_images = !stages.is_empty()
        && stages
            .iter()
            .all(|m| m.architecture.input_modalities.iter().any(|i| i == "image"));
    let inputs: &[&str] = if reads_images {
        &["text", "image"]
    } else {
        &["text"]
    };
    (context, Architecture::new(inputs, "Other"))
}

/// `quorate/fusion` (the default preset) and `quorate/fusion:<preset>` for every preset. Their
/// price is the sum of the inner calls, so it is given as "-1" (variable), as OpenRouter does.
fn fusion_entries(config: &Config, models: &[ModelInfo]) -> Vec<ModelInfo> {
    let default = config.default_preset().to_string();
    let presets = config.presets.iter().map(|(name, p)| {
        let about = p.description.clone().unwrap_or_else(|| p.panel.join(", "));
        (
            format!("{}:{name}", FUSION_SLUGS[0]),
            format!("Quorate Fusion: {name} ({about})"),
            name.clone(),
        )
    });
    std::iter::once((
        FUSION_SLUGS[0].to_string(),
        format!("Quorate Fusion (default preset: {default})"),
        default.clone(),
    ))
    .chain(presets)
    .map(|(id, name, preset)| {
        let (context_length, architecture) = fusion_limits(config, &preset, models);
        fusion_entry(id, name, context_length, architecture)
    })
    .collect()
}

fn fusion_entry(
    id: String,
    name: String,
    context_length: Option<u64>,
    architecture: Architecture,
) -> ModelInfo {
    ModelInfo {
        canonical_slug: id.clone(),
        description: "A panel of models answers, a judge compares the answers, a synthesizer \
            writes one answer from them."
            .into(),
        architecture,
        top_provider: TopProvider {
            context_length,
            max_completion_tokens: None,
            is_moderated: false,
        },
        per_request_limits: None,
        id,
        object: "model".into(),
        created: 0,
        owned_by: "quorate".into(),
        name,
        context_length,
        pricing: Pricing {
            prompt: "-1".into(),
            completion: "-1".into(),
        },
        supported_parameters: COMMON_PARAMETERS
            .iter()
            .filter(|p| !p.starts_with("tool"))
            .chain(FUSION_PARAMETERS)
            .map(|s| s.to_string())
            .collect(),
    }
}

fn configured_models(config: &Config) -> Vec<ModelInfo> {
    config
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
            let name = config.models[id].name.clone().unwrap_or_else(|| id.clone());
            Some(ModelInfo {
                canonical_slug: id.clone(),
                description: format!("{name}, served by the {} provider", model.provider),
                architecture: Architecture::new(input_modalities(kind), "Other"),
                top_provider: TopProvider {
                    context_length: model.context_length,
                    max_completion_tokens: model.max_output_tokens,
                    is_moderated: false,
                },
                per_request_limits: None,
                id: id.clone(),
                object: "model".into(),
                created: 0,
                owned_by: model.provider.clone(),
                name,
                context_length: model.context_length,
                pricing: Pricing {
                    prompt: per_token(model.input_usd_per_mtok),
                    completion: per_token(model.output_usd_per_mtok),
                },
                // Function calling only where the model can call functions (not local models).
                supported_parameters: COMMON_PARAMETERS
                    .iter()
                    .filter(|p| model.supports_tools || !p.starts_with("tool"))
                    .chain(extra)
                    .map(|s| s.to_string())
                    .collect(),
            })
        })
        .collect()
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
        assert!(m.supported_parameters.contains(&"tools".to_string()));
        let local = list
            .data
            .iter()
            .find(|m| m.id == "local/smollm2-135m")
            .unwrap();
        assert!(
            !local.supported_parameters.contains(&"tools".to_string()),
            "local models cannot call functions"
        );
        let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
        for id in [
            "quorate/fusion",
            "quorate/fusion:local",
            "quorate/fusion:budget",
        ] {
            assert!(ids.contains(&id), "{id} listed");
        }
        let fusion = &list.data[0];
        assert_eq!(
            (fusion.pricing.prompt.as_str(), fusion.owned_by.as_str()),
            ("-1", "quorate")
        );
    }

    #[test]
    fn a_fusion_entry_has_its_stages_tightest_limits() {
        let config = Config::from_toml(
            r#"
[models."openai/a"]
provider = "openai"
context_length = 8192
[models."openai/b"]
provider = "openai"
context_length = 4096
max_output_tokens = 1000
[presets.p]
panel = ["openai/a", "openai/b"]
synthesizer = "openai/a"
"#,
            "t",
        )
        .unwrap();
        let list = model_list(&config);
        let find = |id: &str| list.data.iter().find(|m| m.id == id).unwrap();
        let fused = find("quorate/fusion:p");
        assert_eq!(fused.context_length, Some(4096));
        assert_eq!(fused.top_provider.context_length, Some(4096));
        assert_eq!(fused.architecture.modality, "text+image->text");
        let b = find("openai/b");
        assert_eq!(
            (
                b.canonical_slug.as_str(),
                b.top_provider.max_completion_tokens
            ),
            ("openai/b", Some(1000))
        );
        let local = find("quorate/fusion:local");
        assert_eq!(local.architecture.input_modalities, ["text"]);
        assert_eq!(
            find("local/smollm2-135m").architecture.modality,
            "text->text"
        );
    }
}
