//! Built-in values: what Quorate does with no configuration at all.

use std::collections::BTreeMap;

use crate::{ModelConfig, Price, ProviderConfig, ProviderKind};

/// The embedded default: a real model that runs in-process with no key and no network.
/// Qwen2.5-Coder 1.5B: the smallest known model whose answers are mostly right (GSM8K 54 % against
/// the 0.5B's 20 %) and that still fuses the README question in seconds on 2 cores.
pub const LOCAL_MODEL: &str = "local/qwen2.5-coder-1.5b";

pub fn yes() -> bool {
    true
}

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

pub fn header_timeout_s() -> f64 {
    10.0
}

pub fn body_timeout_s() -> f64 {
    30.0
}

pub fn idle_timeout_s() -> f64 {
    60.0
}

/// Lowered at start-up when the open-file limit leaves no room for this many.
pub fn max_connections() -> usize {
    4096
}

pub fn max_header_bytes() -> usize {
    32 * 1024
}

/// Enough to absorb a burst's reconnects to one provider; past it, connections close once idle.
pub fn upstream_idle_per_host() -> usize {
    32
}

pub fn upstream_idle_s() -> f64 {
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

pub fn slots() -> u32 {
    3
}

pub fn queue() -> u32 {
    32
}

fn provider(kind: ProviderKind, base_url: Option<&str>, key_env: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: base_url.map(str::to_string),
        api_key_env: key_env.map(str::to_string),
        timeout_s: timeout_s(),
        max_retries: max_retries(),
        backoff_ms: backoff_ms(),
        max_retry_after_s: max_retry_after_s(),
        headers: BTreeMap::new(),
        threads: None,
        slots: slots(),
        queue: queue(),
    }
}

/// The well-known APIs, usable as soon as their key is in the environment (a model id
/// `openrouter/<slug>` routes to OpenRouter with `<slug>` upstream, and so on), and the local
/// provider with its known models.
pub fn add_builtins(
    providers: &mut BTreeMap<String, ProviderConfig>,
    models: &mut BTreeMap<String, ModelConfig>,
) {
    let apis = [
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
    for (name, kind, base_url, key_env) in apis {
        providers.insert(
            name.to_string(),
            provider(kind, Some(base_url), Some(key_env)),
        );
    }
    let mut local = provider(ProviderKind::Local, None, None);
    // A local generation is CPU-bound: it gets no timeout of its own beyond a generous one.
    local.timeout_s = 600.0;
    local.max_retries = 0;
    providers.insert("local".to_string(), local);
    let local_models = [
        (
            "local/smollm2-135m",
            "smollm2-135m",
            "SmolLM2 135M Instruct (Q4_1, in-process)",
            4096,
            false,
        ),
        // Trained with 32k tokens of context; 8k keeps the cache of all sequences together
        // (shared by every request on the model) at 96 MiB for the 0.5B, 224 MiB for the 1.5B.
        // Their chat template renders tools: they research by calling web_search themselves.
        (
            "local/qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder 0.5B Instruct (Q4_K_M, in-process)",
            8192,
            true,
        ),
        (
            "local/qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder 1.5B Instruct (Q4_K_M, in-process)",
            8192,
            true,
        ),
    ];
    for (id, gguf, name, context_length, tools) in local_models {
        models.insert(
            id.to_string(),
            local_model(gguf, name, context_length, tools),
        );
    }
}

/// A model of the `local` provider: free; it calls tools when its chat template renders them.
fn local_model(gguf: &str, name: &str, context_length: u64, tools: bool) -> ModelConfig {
    ModelConfig {
        provider: "local".to_string(),
        upstream: None,
        name: Some(name.to_string()),
        context_length: Some(context_length),
        input_usd_per_mtok: Some(Price(Default::default())),
        output_usd_per_mtok: Some(Price(Default::default())),
        fallbacks: Vec::new(),
        max_output_tokens: Some(512),
        gguf: Some(gguf.to_string()),
        supports_tools: Some(tools),
    }
}
