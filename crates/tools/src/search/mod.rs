//! `web_search`: one trait, one file per backend.

mod brave;
mod exa;
mod http;
pub mod local;
mod searxng;
mod tavily;

use std::sync::Arc;
use std::time::Duration;

use quorate_config::{SearchBackend, Secrets, WebSearchConfig};
use serde::Serialize;

pub use local::LocalIndex;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    pub url: String,
    pub title: String,
    pub snippet: String,
    /// The backend's date for the result, if it has one (ISO 8601).
    pub date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error("search backend {backend}: {message}")]
    Backend { backend: String, message: String },
}

/// A search backend. `max_results` caps what one call returns.
#[async_trait::async_trait]
pub trait Search: Send + Sync {
    fn name(&self) -> &str;
    async fn search(
        &self,
        query: &str,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, SearchError>;
}

/// The configured backend, and the local index when that is the backend (its documents are
/// what `web_fetch` reads for `file://` results). `Err` says why search is off.
pub struct Opened {
    pub search: Result<Arc<dyn Search>, String>,
    pub local: Option<LocalIndex>,
}

/// Opens the backend `config` names; with none named, the local index if one was built.
pub fn open(config: &WebSearchConfig, secrets: &Secrets) -> Opened {
    let off = |why: String| Opened {
        search: Err(why),
        local: None,
    };
    let dir = config.index_dir();
    let backend = match config.backend {
        Some(backend) => backend,
        None if dir.join("meta.json").is_file() => SearchBackend::Local,
        None => {
            return off(format!(
                "web_search is off: no backend configured ([tools.web_search] backend) and no \
                 local index at {} (build one with `quorate index add DIR`)",
                dir.display()
            ))
        }
    };
    if backend == SearchBackend::Off {
        return off(
            "web_search is off in the config ([tools.web_search] backend = \"off\")".into(),
        );
    }
    if backend == SearchBackend::Local {
        return match LocalIndex::open(&dir) {
            Ok(index) => Opened {
                search: Ok(Arc::new(index.clone())),
                local: Some(index),
            },
            Err(e) => off(format!("web_search is off: {e}")),
        };
    }
    match api_backend(backend, config, secrets) {
        Ok(search) => Opened {
            search: Ok(search),
            local: None,
        },
        Err(why) => off(format!("web_search is off: {why}")),
    }
}

fn api_backend(
    backend: SearchBackend,
    config: &WebSearchConfig,
    secrets: &Secrets,
) -> Result<Arc<dyn Search>, String> {
    let name = backend.as_str();
    let base_url = config
        .base_url
        .as_deref()
        .or(backend.default_base_url())
        .ok_or_else(|| format!("the {name} backend needs [tools.web_search] base_url"))?;
    let key_env = config.api_key_env.as_deref().or(backend.default_key_env());
    let key = key_env
        .and_then(|env| std::env::var(env).ok())
        .filter(|k| !k.is_empty());
    if let (None, Some(env)) = (&key, key_env) {
        return Err(format!("the {name} backend needs an API key in ${env}"));
    }
    let timeout = Duration::from_secs_f64(config.timeout_s());
    let api = http::Api::new(name, base_url, key, timeout).map_err(|e| e.to_string())?;
    let backend = match backend {
        SearchBackend::Brave => &brave::BRAVE,
        SearchBackend::Tavily => &tavily::TAVILY,
        SearchBackend::Exa => &exa::EXA,
        SearchBackend::Searxng => &searxng::SEARXNG,
        SearchBackend::Local | SearchBackend::Off => return Err(format!("{name} has no API")),
    };
    Ok(Arc::new(http::ApiSearch {
        api,
        backend,
        secrets: secrets.clone(),
    }))
}
