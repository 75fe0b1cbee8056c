//! The secrets a configuration points at, read from the environment, so that text an upstream
//! sends back can be scrubbed of them before it reaches a response or a log line: some APIs echo
//! the key they were given in their error messages.

use std::sync::Arc;

use crate::Config;

/// What a secret becomes in scrubbed text.
const REDACTED: &str = "[redacted]";

/// Shorter values are not treated as secrets: replacing a short word everywhere would mangle
/// ordinary text, and a key that short protects nothing anyway.
const MIN_LEN: usize = 8;

/// Provider keys, the search backend's key and the gateway keys. `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct Secrets(Arc<[String]>);

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .map(|v| v.trim().to_string())
            .filter(|v| v.len() >= MIN_LEN)
            .collect();
        // Longest first, so that a secret containing another is replaced whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self(values.into())
    }

    /// Reads every variable the config names for a secret. Gateway keys share one variable,
    /// comma-separated: each part counts, and so does the whole value.
    pub fn from_env(config: &Config) -> Self {
        let values = config
            .secret_envs()
            .into_iter()
            .filter_map(|env| std::env::var(env).ok());
        Self::new(values.flat_map(|value| {
            let parts: Vec<String> = value.split(',').map(str::to_string).collect();
            std::iter::once(value).chain(parts)
        }))
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn scrub(&self, mut text: String) -> String {
        for secret in self.0.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Config {
    /// The env vars that hold secrets: each provider's key, the search backend's, the gateway's.
    fn secret_envs(&self) -> Vec<&str> {
        let search = &self.tools.web_search;
        let search_key = search
            .api_key_env
            .as_deref()
            .or_else(|| search.backend.and_then(|b| b.default_key_env()));
        self.providers
            .values()
            .filter_map(|p| p.api_key_env.as_deref())
            .chain(search_key)
            .chain(self.server.api_keys_env.as_deref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_replaced_and_short_values_are_not_secrets() {
        let secrets = Secrets::new([
            "sk-live-1234567890".to_string(),
            "sk-live-1234567890-extended".to_string(),
            "short".to_string(),
        ]);
        let text = "keys sk-live-1234567890-extended and sk-live-1234567890, short".to_string();
        assert_eq!(secrets.scrub(text), "keys [redacted] and [redacted], short");
        assert_eq!(format!("{secrets:?}"), "Secrets(2 values)");
    }

    #[test]
    fn the_config_names_provider_search_and_gateway_key_variables() {
        let config = Config::from_toml(
            r#"
            [server]
            api_keys_env = "GATEWAY_KEYS"
            [tools.web_search]
            backend = "brave"
            "#,
            "t",
        )
        .unwrap();
        let envs = config.secret_envs();
        for env in [
            "OPENROUTER_API_KEY",
            "ANTHROPIC_API_KEY",
            "BRAVE_API_KEY",
            "GATEWAY_KEYS",
        ] {
            assert!(envs.contains(&env), "{env} missing from {envs:?}");
        }
    }
}
