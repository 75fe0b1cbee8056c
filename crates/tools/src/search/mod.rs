//! `web_search`: one trait, one file per backend.

pub mod local;

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
