//! What the HTTP search backends share: one client with the configured timeout, errors that name
//! the backend but never carry its key, and plain-text snippets. Each backend's file says only
//! how to ask ([`Backend`]) and where its answer keeps the results.

use std::time::Duration;

use quorate_config::Secrets;
use serde_json::Value;

use super::{Search, SearchError, SearchResult};

/// One search API: how to build its request, and where its answer keeps the result list (a
/// JSON pointer) and each result's snippet and date.
pub(crate) struct Backend {
    pub name: &'static str,
    pub request: fn(&Api, &str, usize) -> Result<reqwest::RequestBuilder, SearchError>,
    pub list: &'static str,
    pub fields: Fields,
}

/// A search backend over an HTTP API.
pub(crate) struct ApiSearch {
    pub api: Api,
    pub backend: &'static Backend,
    /// Scrubbed from errors: where the backend's text enters the process.
    pub secrets: Secrets,
}

#[async_trait::async_trait]
impl Search for ApiSearch {
    fn name(&self) -> &str {
        self.backend.name
    }

    async fn search(
        &self,
        query: &str,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, SearchError> {
        let request = (self.backend.request)(&self.api, query, max_results)?;
        let backend = self.backend;
        let results = self
            .api
            .search(request, backend.list, backend.fields, max_results);
        results
            .await
            .map_err(|SearchError::Backend { backend, message }| {
                let message = self.secrets.scrub(message);
                SearchError::Backend { backend, message }
            })
    }
}

pub struct Api {
    pub backend: &'static str,
    pub base_url: String,
    pub key: Option<String>,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(
        backend: &'static str,
        base_url: &str,
        key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, SearchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                "Quorate/",
                env!("CARGO_PKG_VERSION"),
                " (web_search)"
            ))
            .build()
            .map_err(|e| error(backend, e))?;
        Ok(Self {
            backend,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            client,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The key, or an error saying the backend needs one.
    pub fn key(&self) -> Result<&str, SearchError> {
        self.key
            .as_deref()
            .ok_or_else(|| error(self.backend, "no API key configured"))
    }

    /// Sends the request and reads a JSON body; statuses and transport errors become messages
    /// without the URL (a query string may carry a key).
    pub async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, SearchError> {
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if !status.is_success() {
            let why = match status.as_u16() {
                401 | 403 => "the API key was refused",
                429 => "rate limited",
                _ => "request failed",
            };
            return Err(error(self.backend, format!("HTTP {status}: {why}")));
        }
        response.json().await.map_err(|e| {
            error(
                self.backend,
                format!("not a JSON answer: {}", e.without_url()),
            )
        })
    }

    fn transport(&self, e: &reqwest::Error) -> SearchError {
        let what = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            format!("transfer failed: {}", strip_url(e))
        };
        error(self.backend, what)
    }

    /// Sends a search and reads the result list at `list` (a JSON pointer), given how the
    /// backend names its fields. An answer without the list has no results (Brave leaves `web`
    /// out when nothing matched).
    pub async fn search(
        &self,
        request: reqwest::RequestBuilder,
        list: &str,
        fields: Fields,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, SearchError> {
        let body = self.json(request).await?;
        let Some(items) = body.pointer(list).and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        let text = |item: &Value, keys: &[&str]| {
            keys.iter()
                .find_map(|k| item.get(*k).and_then(snippet_text))
                .unwrap_or_default()
        };
        Ok(items
            .iter()
            .filter_map(|item| {
                let url = item.get("url")?.as_str()?.to_string();
                let date = text(item, fields.date);
                Some(SearchResult {
                    url,
                    title: plain(&text(item, &["title"])),
                    snippet: plain(&text(item, fields.snippet)),
                    date: (!date.is_empty()).then_some(date),
                })
            })
            .take(max_results)
            .collect())
    }
}

/// Where a backend keeps a result's snippet and date, in order of preference.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    pub snippet: &'static [&'static str],
    pub date: &'static [&'static str],
}

pub(crate) fn error(backend: &str, message: impl std::fmt::Display) -> SearchError {
    SearchError::Backend {
        backend: backend.to_string(),
        message: message.to_string(),
    }
}

fn strip_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(url.as_str(), "<url>");
    }
    message
}

/// A string, or the strings of an array joined (Exa's highlights).
fn snippet_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(items) => {
            let parts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            (!parts.is_empty()).then(|| parts.join(" … "))
        }
        _ => None,
    }
}

/// Snippets come with markup (`<strong>`) and entities; the model needs plain text.
pub(crate) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for ch in text.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(ch),
            _ => {}
        }
    }
    let out = out
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_lose_markup_and_entities() {
        assert_eq!(
            plain("The <strong>oldest</strong>  lighthouse &amp; more"),
            "The oldest lighthouse & more"
        );
    }
}
