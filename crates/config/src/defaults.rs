//! Built-in values: what Quorate does with no configuration at all.

use std::collections::BTreeMap;

use crate::{ProviderConfig, ProviderKind};

pub fn listen() -> String {
    "127.0.0.1:8787".to_string()
}

pub fn max_body_bytes() -> usize {
    16 * 1024 * 1024
}

pub fn keepalive_s() -> f64 {
    5.0
}

pub fn shutdown_grace_s() -> f64 {
    30.0
}

pub fn timeout_s() -> f64 {
    120.0
}

pub fn max_retries() -> u32 {
    2
}

pub fn backoff_ms() -> u64 {
    250
}

pub fn max_retry_after_s() -> f64 {
    30.0
}

/// The well-known APIs, usable as soon as their key is in the environment: a model id
/// `openrouter/<slug>` routes to OpenRouter with `<slug>` upstream, and so on.
pub fn add_builtin_providers(providers: &mut BTreeMap<String, ProviderConfig>) {
    let builtins = [
        (
            "openrouter",
            ProviderKind::Openai,
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
        ),
        (
            "openai",
            ProviderKind::Openai,
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
        ),
        (
            "anthropic",
            ProviderKind::Anthropic,
            "https://api.anthropic.com/v1",
            "ANTHROPIC_API_KEY",
        ),
    ];
    for (name, kind, base_url, key_env) in builtins {
        providers.insert(
            name.to_string(),
            ProviderConfig {
                kind,
                base_url: base_url.to_string(),
                api_key_env: Some(key_env.to_string()),
                timeout_s: timeout_s(),
                max_retries: max_retries(),
                backoff_ms: backoff_ms(),
                max_retry_after_s: max_retry_after_s(),
                headers: BTreeMap::new(),
            },
        );
    }
}
