//! Model ids to providers: the configured table first, then `provider/upstream` pass-through.

use rust_decimal::Decimal;

use crate::{Config, ModelConfig, ProviderKind};

/// Everything needed to send one model's request upstream and price it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub id: String,
    pub provider: String,
    pub upstream: String,
    pub context_length: Option<u64>,
    pub input_usd_per_mtok: Option<Decimal>,
    pub output_usd_per_mtok: Option<Decimal>,
    pub fallbacks: Vec<String>,
    pub max_output_tokens: Option<u32>,
    /// Local models: the GGUF path or known name.
    pub gguf: Option<String>,
    /// Whether the model may be given functions to call.
    pub supports_tools: bool,
}

impl Config {
    /// A configured model, or `provider/rest` for any configured provider (sent as `rest`).
    pub fn resolve(&self, id: &str) -> Option<ResolvedModel> {
        if let Some(m) = self.models.get(id) {
            let mut resolved = from_config(id, m);
            resolved.supports_tools = m
                .supports_tools
                .unwrap_or_else(|| self.is_api_provider(&m.provider));
            return Some(resolved);
        }
        // Not a configured model: `provider_of` found the `provider/` prefix of `id`.
        let provider = self.provider_of(id)?;
        let upstream = &id[provider.len() + 1..];
        Some(ResolvedModel {
            id: id.to_string(),
            provider: provider.to_string(),
            upstream: upstream.to_string(),
            context_length: None,
            input_usd_per_mtok: None,
            output_usd_per_mtok: None,
            fallbacks: Vec::new(),
            max_output_tokens: None,
            gguf: None,
            supports_tools: self.is_api_provider(provider),
        })
    }

    /// The provider that serves `id` (as `resolve` finds it), without building the model: for
    /// checks on every request that need only the provider.
    pub fn provider_of<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        if let Some(m) = self.models.get(id) {
            return Some(&m.provider);
        }
        let (provider, upstream) = id.split_once('/')?;
        (!upstream.is_empty() && self.providers.contains_key(provider)).then_some(provider)
    }

    fn is_api_provider(&self, provider: &str) -> bool {
        self.providers
            .get(provider)
            .is_some_and(|p| p.kind != ProviderKind::Local)
    }
}

fn from_config(id: &str, m: &ModelConfig) -> ResolvedModel {
    let upstream = m.upstream.clone().unwrap_or_else(|| {
        id.strip_prefix(&format!("{}/", m.provider))
            .unwrap_or(id)
            .to_string()
    });
    ResolvedModel {
        id: id.to_string(),
        provider: m.provider.clone(),
        upstream,
        context_length: m.context_length,
        input_usd_per_mtok: m.input_usd_per_mtok.map(|p| p.0),
        output_usd_per_mtok: m.output_usd_per_mtok.map(|p| p.0),
        fallbacks: m.fallbacks.clone(),
        max_output_tokens: m.max_output_tokens,
        gguf: m.gguf.clone(),
        supports_tools: false,
    }
}
