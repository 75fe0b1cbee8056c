//! The `[tools]` section: which web search backend the panel uses, how web fetch is capped, and
//! the domain filters that keep benchmark answers out of the panel's reach.

use std::path::PathBuf;

use serde::Deserialize;

/// The most tool calls one member may make in a run: each is a round trip and a bigger prompt.
pub const MAX_TOOL_CALLS: u32 = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Domains no tool may return or fetch (`example.com`, `*.example.com`, `example.com/blog`).
    #[serde(default)]
    pub excluded_domains: Vec<String>,
    /// When set, the only domains tools may return or fetch; exclusive with `excluded_domains`.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Tool calls an agentic member may make before it must answer.
    #[serde(default = "max_tool_calls")]
    pub max_tool_calls: u32,
    #[serde(default)]
    pub web_search: WebSearchConfig,
    #[serde(default)]
    pub web_fetch: WebFetchConfig,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            excluded_domains: Vec::new(),
            allowed_domains: Vec::new(),
            max_tool_calls: max_tool_calls(),
            web_search: WebSearchConfig::default(),
            web_fetch: WebFetchConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackend {
    /// The tantivy index built by `quorate index add`.
    Local,
    /// A self-hosted SearXNG instance's JSON API (`base_url` required).
    Searxng,
    Brave,
    Tavily,
    Exa,
    /// No search.
    Off,
}

impl SearchBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Searxng => "searxng",
            Self::Brave => "brave",
            Self::Tavily => "tavily",
            Self::Exa => "exa",
            Self::Off => "off",
        }
    }

    /// The public API's base URL, for the backends that have one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::Brave => Some("https://api.search.brave.com"),
            Self::Tavily => Some("https://api.tavily.com"),
            Self::Exa => Some("https://api.exa.ai"),
            _ => None,
        }
    }

    /// The env var that holds the API key, for the backends that need one.
    pub fn default_key_env(self) -> Option<&'static str> {
        match self {
            Self::Brave => Some("BRAVE_API_KEY"),
            Self::Tavily => Some("TAVILY_API_KEY"),
            Self::Exa => Some("EXA_API_KEY"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSearchConfig {
    /// Default: `local` when the index folder holds an index, else search is off.
    #[serde(default)]
    pub backend: Option<SearchBackend>,
    /// The API's base URL; required for `searxng`, an override for the others.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Env var holding the API key (default `BRAVE_API_KEY`, `TAVILY_API_KEY`, `EXA_API_KEY`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The local index folder; default `<data dir>/index`, where `quorate index add` writes.
    #[serde(default)]
    pub index_dir: Option<PathBuf>,
    /// Results one search returns (1 to 20).
    #[serde(default)]
    pub max_results: Option<usize>,
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

impl WebSearchConfig {
    pub fn max_results(&self) -> usize {
        self.max_results.unwrap_or(5)
    }

    pub fn timeout_s(&self) -> f64 {
        self.timeout_s.unwrap_or(15.0)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.index_dir
            .clone()
            .unwrap_or_else(|| crate::data_dir().join("index"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFetchConfig {
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default = "max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "fetch_timeout_s")]
    pub timeout_s: f64,
    #[serde(default = "max_redirects")]
    pub max_redirects: usize,
    /// `host:port` pairs fetchable even though they resolve to internal addresses (tests,
    /// intranets). Empty by default: internal addresses are refused.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

impl Default for WebFetchConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            max_bytes: max_bytes(),
            timeout_s: fetch_timeout_s(),
            max_redirects: max_redirects(),
            allow_hosts: Vec::new(),
        }
    }
}

fn max_tool_calls() -> u32 {
    8
}

fn enabled() -> bool {
    true
}

fn max_bytes() -> usize {
    2 * 1024 * 1024
}

fn fetch_timeout_s() -> f64 {
    20.0
}

fn max_redirects() -> usize {
    5
}

impl ToolsConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if !self.excluded_domains.is_empty() && !self.allowed_domains.is_empty() {
            return Err((
                "allowed_domains".into(),
                "give excluded_domains or allowed_domains, not both".into(),
            ));
        }
        for (key, list) in [
            ("excluded_domains", &self.excluded_domains),
            ("allowed_domains", &self.allowed_domains),
        ] {
            for (i, rule) in list.iter().enumerate() {
                check_domain_rule(rule).map_err(|m| (format!("{key}[{i}]"), m))?;
            }
        }
        if self.max_tool_calls > MAX_TOOL_CALLS {
            return Err(("max_tool_calls".into(), format!("at most {MAX_TOOL_CALLS}")));
        }
        self.web_search
            .validate()
            .map_err(|(k, m)| (format!("web_search.{k}"), m))?;
        self.web_fetch
            .validate()
            .map_err(|(k, m)| (format!("web_fetch.{k}"), m))
    }
}

impl WebSearchConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.backend == Some(SearchBackend::Searxng) && self.base_url.is_none() {
            return Err((
                "base_url".into(),
                "required for the searxng backend (your instance's URL)".into(),
            ));
        }
        if let Some(url) = &self.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    "base_url".into(),
                    format!("want an http(s) URL, got {url:?}"),
                ));
            }
        }
        if let Some(env) = &self.api_key_env {
            if env.is_empty() || env.contains(['=', '\0']) {
                return Err(("api_key_env".into(), "not a valid env var name".into()));
            }
        }
        if !(1..=20).contains(&self.max_results()) {
            return Err(("max_results".into(), "must be 1 to 20".into()));
        }
        if !(self.timeout_s() > 0.0 && self.timeout_s() <= 300.0) {
            return Err(("timeout_s".into(), "must be in (0, 300]".into()));
        }
        Ok(())
    }
}

impl WebFetchConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.max_bytes == 0 || self.max_bytes > 64 * 1024 * 1024 {
            return Err(("max_bytes".into(), "must be 1 byte to 64 MiB".into()));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s <= 300.0) {
            return Err(("timeout_s".into(), "must be in (0, 300]".into()));
        }
        if self.max_redirects > 10 {
            return Err(("max_redirects".into(), "at most 10".into()));
        }
        for (i, host) in self.allow_hosts.iter().enumerate() {
            let port = host.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) || host.contains(['/', ' ']) {
                return Err((
                    format!("allow_hosts[{i}]"),
                    format!("want host:port, got {host:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The syntax the domain filter accepts: a host, `*.` prefix allowed, optional path.
fn check_domain_rule(rule: &str) -> Result<(), String> {
    let text = rule.trim();
    let text = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let host = text.split('/').next().unwrap_or_default();
    let host = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty() || host.contains(['*', ' ', ':']) {
        return Err(format!(
            "{rule:?} is not a domain rule (want example.com, *.example.com or example.com/path)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn tools_errors_name_the_key() {
        let err = |toml: &str| Config::from_toml(toml, "t").unwrap_err().to_string();
        let e = err("[tools]\nexcluded_domains = [\"a.com\"]\nallowed_domains = [\"b.com\"]\n");
        assert!(
            e.contains("tools.allowed_domains") && e.contains("not both"),
            "{e}"
        );
        let e = err("[tools]\nexcluded_domains = [\"a.com\", \"*\"]\n");
        assert!(e.contains("tools.excluded_domains[1]"), "{e}");
        let e = err("[tools.web_search]\nbackend = \"searxng\"\n");
        assert!(e.contains("tools.web_search.base_url"), "{e}");
        let e = err("[tools.web_search]\nbackend = \"bing\"\n");
        assert!(e.contains("tools.web_search.backend"), "{e}");
        let e = err("[tools.web_search]\nmax_results = 50\n");
        assert!(e.contains("tools.web_search.max_results"), "{e}");
        let e = err("[tools.web_fetch]\nallow_hosts = [\"localhost\"]\n");
        assert!(e.contains("tools.web_fetch.allow_hosts[0]"), "{e}");
        let e = err("[tools]\nmax_tool_calls = 17\n");
        assert!(e.contains("tools.max_tool_calls"), "{e}");
        let ok = Config::from_toml(
            "[tools]\nexcluded_domains = [\"*.hf.co\", \"example.com/blog\"]\n[tools.web_search]\nbackend = \"brave\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.tools.web_search.max_results(), 5);
        assert_eq!(ok.tools.max_tool_calls, 8);
    }
}
