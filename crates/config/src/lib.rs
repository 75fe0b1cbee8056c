//! Quorate's configuration: one TOML file plus environment variables.
//!
//! Loading is two steps, as in TensorZero: a strict parse (unknown keys are errors, every error
//! names its key path) and then validation of what serde cannot check (references between
//! sections, ranges, addresses). Built-in providers are merged under the file's own.

mod defaults;
mod presets;
mod routing;
mod secrets;
mod store;
mod telemetry;
mod tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::Deserialize;

pub use presets::{
    check_exit_quorum, fusion_slug, majority, FusionConfig, PresetConfig, Strategy, FUSION_SLUGS,
    MAX_PANEL,
};
pub use routing::ResolvedModel;
pub use secrets::Secrets;
pub use store::StoreConfig;
pub use telemetry::TelemetryConfig;
pub use tools::{SearchBackend, ToolsConfig, WebFetchConfig, WebSearchConfig, MAX_TOOL_CALLS};

/// Quorate's data folder (models, the local search index): `$QUORATE_HOME`, else
/// `$XDG_DATA_HOME/quorate`, else `~/.local/share/quorate`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("QUORATE_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("quorate")
}

/// Where a configuration came from, for messages.
pub const CONFIG_ENV: &str = "QUORATE_CONFIG";
pub const LISTEN_ENV: &str = "QUORATE_LISTEN";
/// Overrides `[store] url` (replicas sharing one database, tests).
pub const STORE_URL_ENV: &str = "QUORATE_STORE_URL";
pub const DEFAULT_FILE: &str = "quorate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model `quorate ask` uses when no `--model` is given.
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub fusion: FusionConfig,
    /// Fusion presets by name; built-ins (`local`, `quality`, `budget`) are merged under these.
    #[serde(default)]
    pub presets: BTreeMap<String, PresetConfig>,
    /// Research tools: web search backend, web fetch caps, domain filters.
    #[serde(default)]
    pub tools: ToolsConfig,
    /// The run store: every request and fusion run kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Span export (OpenTelemetry), off unless an endpoint is given.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Name of an env var holding comma-separated gateway keys; when set, requests need one.
    #[serde(default)]
    pub api_keys_env: Option<String>,
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds between SSE keep-alive comments while a stream waits on upstream.
    #[serde(default = "defaults::keepalive_s")]
    pub keepalive_s: f64,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(default = "defaults::shutdown_grace_s")]
    pub shutdown_grace_s: f64,
    /// A request's headers must arrive within this; so must a new connection's first request.
    #[serde(default = "defaults::header_timeout_s")]
    pub header_timeout_s: f64,
    /// A request's whole body must arrive within this, counted from its headers.
    #[serde(default = "defaults::body_timeout_s")]
    pub body_timeout_s: f64,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive
    /// connections meet `header_timeout_s` first: the next request's headers must come within it).
    #[serde(default = "defaults::idle_timeout_s")]
    pub idle_timeout_s: f64,
    /// Connections served at once; past it, /health still answers and the rest get a 503.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// The largest request line and headers, in bytes (431 beyond).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Idle connections kept open to each upstream host; the rest close when a burst ends.
    #[serde(default = "defaults::upstream_idle_per_host")]
    pub upstream_idle_per_host: usize,
    /// An idle upstream connection is closed after this long.
    #[serde(default = "defaults::upstream_idle_s")]
    pub upstream_idle_s: f64,
    /// Serve the web UI (`/`, `/runs`, `/usage`); its data comes from the API, behind the keys.
    #[serde(default = "defaults::yes")]
    pub ui: bool,
    /// Browser origins allowed to call the API (`https://app.example`, or `*` for any); none by
    /// default, so a web page elsewhere cannot read answers with a user's browser.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            api_keys_env: None,
            max_body_bytes: defaults::max_body_bytes(),
            keepalive_s: defaults::keepalive_s(),
            shutdown_grace_s: defaults::shutdown_grace_s(),
            header_timeout_s: defaults::header_timeout_s(),
            body_timeout_s: defaults::body_timeout_s(),
            idle_timeout_s: defaults::idle_timeout_s(),
            max_connections: defaults::max_connections(),
            max_header_bytes: defaults::max_header_bytes(),
            upstream_idle_per_host: defaults::upstream_idle_per_host(),
            upstream_idle_s: defaults::upstream_idle_s(),
            ui: true,
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat completions API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// GGUF models run in-process on llama.cpp.
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// The API's base URL; required for `openai` and `anthropic`, unused by `local`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Env var holding the upstream API key. Keys never live in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "defaults::timeout_s")]
    pub timeout_s: f64,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// First retry delay; it doubles on each retry, with jitter.
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_ms: u64,
    /// The longest `Retry-After` worth waiting for; longer ones go to the next fallback.
    #[serde(default = "defaults::max_retry_after_s")]
    pub max_retry_after_s: f64,
    /// Extra headers sent on every upstream request (e.g. OpenRouter's `X-Title`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `local` only: CPU threads per generation.
    #[serde(default)]
    pub threads: Option<u32>,
    /// `local` only: generations that run at once; more wait in the queue.
    #[serde(default = "defaults::slots")]
    pub slots: u32,
    /// `local` only: requests that may wait for a slot; beyond that the answer is 503.
    #[serde(default = "defaults::queue")]
    pub queue: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: String,
    /// The model name sent upstream; defaults to the part of the id after `provider/`.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub input_usd_per_mtok: Option<Price>,
    #[serde(default)]
    pub output_usd_per_mtok: Option<Price>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Output cap sent when the caller gives none (Anthropic requires one).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// `local` models: a GGUF file path, or a known name that `quorate models pull` can fetch.
    #[serde(default)]
    pub gguf: Option<String>,
    /// Whether the model can call functions (agentic research). Default: true for API
    /// providers, false for local models (they get prefetched sources instead) except the
    /// built-in ones whose chat template renders tools. A local model given tools whose
    /// template has none answers 400.
    #[serde(default)]
    pub supports_tools: Option<bool>,
}

/// A price in USD, kept as the exact decimal the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(pub Decimal);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            // Rust prints the shortest text that reads back as the same f64: what the user wrote.
            Raw::Float(f) => f.to_string(),
            Raw::Text(s) => s,
        };
        let value: Decimal = text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("not a decimal price: {text}")))?;
        if value.is_sign_negative() {
            return Err(serde::de::Error::custom("a price cannot be negative"));
        }
        Ok(Price(value))
    }
}

impl Config {
    /// What `quorate ask` runs when no model is named: `default_model`, else fusion on the
    /// default preset.
    pub fn default_model(&self) -> &str {
        self.default_model.as_deref().unwrap_or(FUSION_SLUGS[0])
    }

    /// Built-in defaults only (no file).
    pub fn builtin() -> Self {
        let mut config = Self {
            default_model: None,
            server: ServerConfig::default(),
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            fusion: FusionConfig::default(),
            presets: BTreeMap::new(),
            tools: ToolsConfig::default(),
            store: StoreConfig::default(),
            telemetry: TelemetryConfig::default(),
        };
        defaults::add_builtins(&mut config.providers, &mut config.models);
        presets::add_builtins(&mut config.presets);
        config
    }

    /// Finds the file the usual way: explicit path, else `$QUORATE_CONFIG`, else `./quorate.toml`
    /// when present, else built-in defaults. Then applies env overrides and validates.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = explicit
            .map(Path::to_path_buf)
            .or(env_path)
            .or_else(|| Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()));
        let mut config = match path {
            Some(path) => Self::from_file(&path)?,
            None => Self::builtin(),
        };
        let mut from_env = false;
        if let Ok(listen) = std::env::var(LISTEN_ENV) {
            config.server.listen = listen;
            from_env = true;
        }
        if let Ok(url) = std::env::var(STORE_URL_ENV) {
            config.store.url = Some(url);
            from_env = true;
        }
        if from_env {
            config.validate("environment")?;
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().message().to_string();
            ConfigError::Invalid {
                origin: origin.to_string(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })?;
        let (mut providers, mut models) = (BTreeMap::new(), BTreeMap::new());
        defaults::add_builtins(&mut providers, &mut models);
        providers.append(&mut config.providers);
        models.append(&mut config.models);
        config.providers = providers;
        config.models = models;
        let mut presets = BTreeMap::new();
        presets::add_builtins(&mut presets);
        presets.append(&mut config.presets);
        config.presets = presets;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        self.server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| fail("server.listen".into(), format!("{e} (want HOST:PORT)")))?;
        if !(self.server.keepalive_s > 0.0 && self.server.keepalive_s <= 60.0) {
            return Err(fail(
                "server.keepalive_s".into(),
                "must be in (0, 60]".into(),
            ));
        }
        if self.server.shutdown_grace_s < 0.0 {
            return Err(fail(
                "server.shutdown_grace_s".into(),
                "must not be negative".into(),
            ));
        }
        validate_limits(&self.server).map_err(|(k, m)| fail(format!("server.{k}"), m))?;
        self.store
            .validate()
            .map_err(|(k, m)| fail(format!("store.{k}"), m))?;
        self.telemetry
            .validate()
            .map_err(|(k, m)| fail(format!("telemetry.{k}"), m))?;
        for (name, p) in &self.providers {
            validate_provider(p).map_err(|(k, m)| fail(format!("providers.{name}.{k}"), m))?;
        }
        if let Some(model) = &self.default_model {
            let known = match fusion_slug(model) {
                Some(preset) => preset.is_none_or(|p| self.presets.contains_key(p)),
                None => self.resolve(model).is_some(),
            };
            if !known {
                return Err(fail(
                    "default_model".into(),
                    format!("unknown model or preset {model:?}"),
                ));
            }
        }
        for (id, m) in &self.models {
            self.validate_model(id, m)
                .map_err(|(k, msg)| fail(format!("models.\"{id}\".{k}"), msg))?;
        }
        self.validate_fusion().map_err(|(k, m)| fail(k, m))?;
        self.tools
            .validate()
            .map_err(|(k, m)| fail(format!("tools.{k}"), m))
    }

    fn validate_model(&self, id: &str, m: &ModelConfig) -> Result<(), (String, String)> {
        if id.trim().is_empty() {
            return Err(("provider".into(), "a model id must not be empty".into()));
        }
        if !self.providers.contains_key(&m.provider) {
            let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            return Err((
                "provider".into(),
                format!(
                    "unknown provider {:?} (configured: {})",
                    m.provider,
                    known.join(", ")
                ),
            ));
        }
        let local = self.providers[&m.provider].kind == ProviderKind::Local;
        match (&m.gguf, local) {
            (None, true) => {
                return Err((
                    "gguf".into(),
                    "required for a local model (a .gguf path or a known name)".into(),
                ))
            }
            (Some(_), false) => {
                return Err((
                    "gguf".into(),
                    format!(
                        "only local models take a GGUF file; {} is not local",
                        m.provider
                    ),
                ))
            }
            _ => {}
        }
        if m.upstream.is_none() && !id.starts_with(&format!("{}/", m.provider)) {
            return Err((
                "upstream".into(),
                format!(
                    "required unless the id starts with \"{}/\" (the name sent upstream)",
                    m.provider
                ),
            ));
        }
        for (i, fallback) in m.fallbacks.iter().enumerate() {
            if fallback == id {
                return Err((
                    format!("fallbacks[{i}]"),
                    "a model cannot fall back to itself".into(),
                ));
            }
            if self.resolve(fallback).is_none() {
                return Err((
                    format!("fallbacks[{i}]"),
                    format!("unknown model {fallback:?}"),
                ));
            }
        }
        Ok(())
    }
}

fn validate_limits(s: &ServerConfig) -> Result<(), (String, String)> {
    let timeouts = [
        ("header_timeout_s", s.header_timeout_s),
        ("body_timeout_s", s.body_timeout_s),
        ("idle_timeout_s", s.idle_timeout_s),
        ("upstream_idle_s", s.upstream_idle_s),
    ];
    for (key, value) in timeouts {
        if !(value > 0.0 && value <= 3600.0) {
            return Err((key.into(), "must be in (0, 3600]".into()));
        }
    }
    if s.upstream_idle_per_host > 100_000 {
        return Err((
            "upstream_idle_per_host".into(),
            "must be 0 to 100000".into(),
        ));
    }
    if !(1..=1_000_000).contains(&s.max_connections) {
        return Err(("max_connections".into(), "must be 1 to 1000000".into()));
    }
    // hyper's read buffer, which bounds the headers, cannot be smaller than 8 KiB.
    if !(8192..=1 << 20).contains(&s.max_header_bytes) {
        return Err(("max_header_bytes".into(), "must be 8192 to 1048576".into()));
    }
    validate_origins(&s.cors_origins)
}

/// Each origin as a browser sends it (`scheme://host[:port]`, no path), or `*` alone.
fn validate_origins(origins: &[String]) -> Result<(), (String, String)> {
    if origins.iter().any(|o| o == "*") && origins.len() > 1 {
        return Err((
            "cors_origins".into(),
            "\"*\" allows every origin: list it alone".into(),
        ));
    }
    for (i, origin) in origins.iter().enumerate() {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let plain = rest.is_some_and(|r| !r.is_empty() && !r.contains('/') && r.is_ascii());
        if origin != "*" && !plain {
            return Err((
                format!("cors_origins[{i}]"),
                format!(
                    "{origin:?}: want an origin like \"https://app.example\" (no path), or \"*\""
                ),
            ));
        }
    }
    Ok(())
}

fn validate_provider(p: &ProviderConfig) -> Result<(), (String, String)> {
    match (p.kind, &p.base_url) {
        (ProviderKind::Local, Some(_)) => {
            return Err(("base_url".into(), "a local provider has no base URL".into()))
        }
        (ProviderKind::Local, None) => {}
        (_, None) => return Err(("base_url".into(), "required".into())),
        (_, Some(url)) => {
            let has_scheme = url.starts_with("http://") || url.starts_with("https://");
            if !has_scheme || url.contains(char::is_whitespace) {
                return Err((
                    "base_url".into(),
                    format!("want an http(s) URL, got {url:?}"),
                ));
            }
        }
    }
    if p.slots == 0 || p.slots > 64 {
        return Err(("slots".into(), "must be 1 to 64".into()));
    }
    if p.threads == Some(0) {
        return Err(("threads".into(), "must be at least 1".into()));
    }
    if !(p.timeout_s > 0.0 && p.timeout_s <= 3600.0) {
        return Err(("timeout_s".into(), "must be in (0, 3600]".into()));
    }
    if p.max_retries > 10 {
        return Err(("max_retries".into(), "at most 10".into()));
    }
    if p.max_retry_after_s < 0.0 {
        return Err(("max_retry_after_s".into(), "must not be negative".into()));
    }
    if let Some(env) = &p.api_key_env {
        if env.is_empty() || env.contains(['=', '\0']) {
            return Err(("api_key_env".into(), "not a valid env var name".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
