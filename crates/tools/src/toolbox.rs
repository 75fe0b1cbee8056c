//! The research tools as a model sees them: `web_search` and `web_fetch` functions, executed by
//! the gateway. A [`Toolbox`] is built once from the config; a [`Session`] is one run's view of
//! it, with the request's own tool choice and filters, and records every URL a call returned.

use std::sync::Arc;
use std::time::Duration;

use quorate_config::{Secrets, ToolsConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fetch::{FetchConfig, Fetcher};
use crate::filter::DomainFilter;
use crate::search::{self, LocalIndex, Search, SearchResult};

/// Characters of a fetched page a model gets back: enough for an article, bounded so a few
/// fetches do not crowd out the conversation.
const FETCH_CHARS: usize = 24_000;

pub struct Toolbox {
    search: Result<Arc<dyn Search>, String>,
    local: Option<LocalIndex>,
    fetcher: Option<Fetcher>,
    filter: DomainFilter,
    max_results: usize,
    /// Tool calls a member may make when the request does not say.
    pub max_tool_calls: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolName {
    WebSearch,
    WebFetch,
}

impl ToolName {
    pub const ALL: [ToolName; 2] = [ToolName::WebSearch, ToolName::WebFetch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSearch => "web_search",
            Self::WebFetch => "web_fetch",
        }
    }

    /// `web_search`, or its server-tool type `quorate:web_search` / `openrouter:web_search`.
    pub fn parse(text: &str) -> Option<Self> {
        let name = text
            .strip_prefix("quorate:")
            .or_else(|| text.strip_prefix("openrouter:"))
            .unwrap_or(text);
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A request's settings for one tool (its `parameters`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolParameters {
    #[serde(default)]
    pub excluded_domains: Vec<String>,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// `web_search` only: results per search (1 to 20).
    #[serde(default)]
    pub max_results: Option<usize>,
}

/// One tool a request turns on, with its parameters checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: ToolName,
    /// The request's own domain filter for this tool (the config's applies as well).
    pub filter: DomainFilter,
    pub max_results: Option<usize>,
}

impl ToolSpec {
    /// Both tools with no parameters of their own: what a run gets unless it says otherwise.
    pub fn defaults() -> Vec<ToolSpec> {
        ToolName::ALL
            .into_iter()
            .map(|name| ToolSpec {
                name,
                filter: DomainFilter::default(),
                max_results: None,
            })
            .collect()
    }

    /// A plugin's `tools` list: names (`"web_search"`) or objects (`{"type": "web_search",
    /// "parameters": {...}}`). `field` names the list in errors.
    pub fn parse_list(value: &Value, field: &str) -> Result<Vec<ToolSpec>, String> {
        let items = value
            .as_array()
            .ok_or_else(|| format!("{field}: must be an array of tool names or objects"))?;
        let mut specs: Vec<ToolSpec> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let spec = Self::parse(item, &format!("{field}[{i}]"))?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(format!(
                    "{field}[{i}]: {} is listed twice",
                    spec.name.as_str()
                ));
            }
            specs.push(spec);
        }
        Ok(specs)
    }

    /// One tool: a name, or an object with `type` (or `id`) and optional `parameters`.
    pub fn parse(item: &Value, field: &str) -> Result<ToolSpec, String> {
        let name = item
            .as_str()
            .or_else(|| item.get("type").and_then(Value::as_str))
            .or_else(|| item.get("id").and_then(Value::as_str))
            .unwrap_or_default();
        let name = ToolName::parse(name).ok_or_else(|| {
            format!("{field}: unknown tool {name:?} (tools: web_search, web_fetch)")
        })?;
        let parameters: ToolParameters = match item.get("parameters") {
            None | Some(Value::Null) => ToolParameters::default(),
            Some(p) => {
                serde_json::from_value(p.clone()).map_err(|e| format!("{field}.parameters: {e}"))?
            }
        };
        if parameters
            .max_results
            .is_some_and(|n| !(1..=20).contains(&n))
        {
            return Err(format!("{field}.parameters.max_results: must be 1 to 20"));
        }
        let filter = DomainFilter::new(&parameters.excluded_domains, &parameters.allowed_domains)
            .map_err(|e| format!("{field}.parameters: {e}"))?;
        Ok(ToolSpec {
            name,
            filter,
            max_results: parameters.max_results,
        })
    }
}

/// Where a member's information came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub url: String,
    pub title: String,
    /// `web_search`, `web_fetch` or `prefetch`.
    pub via: &'static str,
}

/// What one tool call gave back: the text for the model, and the URLs it returned.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub content: String,
    pub sources: Vec<Source>,
    pub error: Option<String>,
}

/// A fetched document, from the web or from the local index.
#[derive(Debug, Clone)]
pub struct Document {
    pub url: String,
    pub title: String,
    pub content: String,
    pub truncated: bool,
}

impl Toolbox {
    /// The tools the config describes. Search that cannot run (no backend, no key) is off with
    /// a reason rather than an error: the gateway still answers, and says why research was off.
    /// `secrets` are scrubbed from a search backend's errors.
    pub fn from_config(config: &ToolsConfig, secrets: &Secrets) -> Result<Self, String> {
        let filter = DomainFilter::new(&config.excluded_domains, &config.allowed_domains)
            .map_err(|e| format!("tools: {e}"))?;
        let opened = search::open(&config.web_search, secrets);
        if let Err(why) = &opened.search {
            tracing::info!("{why}");
        }
        let fetch = &config.web_fetch;
        let fetcher = fetch.enabled.then(|| {
            Fetcher::new(FetchConfig {
                max_bytes: fetch.max_bytes,
                timeout: Duration::from_secs_f64(fetch.timeout_s),
                max_redirects: fetch.max_redirects,
                allow_hosts: fetch.allow_hosts.clone(),
            })
        });
        Ok(Self {
            search: opened.search,
            local: opened.local,
            fetcher,
            filter,
            max_results: config.web_search.max_results(),
            max_tool_calls: config.max_tool_calls,
        })
    }

    /// One run's tools: those in `specs` that are available, with their filters.
    pub fn session(self: &Arc<Self>, specs: &[ToolSpec]) -> Session {
        let mut session = Session {
            toolbox: self.clone(),
            search_filter: None,
            fetch_filter: None,
            max_results: self.max_results,
            notes: Vec::new(),
        };
        for spec in specs {
            let filter = Some(self.filter.clone().and(spec.filter.clone()));
            match spec.name {
                ToolName::WebSearch => match &self.search {
                    Ok(_) => {
                        session.search_filter = filter;
                        session.max_results = spec.max_results.unwrap_or(self.max_results);
                    }
                    Err(why) => session.notes.push(why.clone()),
                },
                ToolName::WebFetch if self.fetcher.is_some() => session.fetch_filter = filter,
                ToolName::WebFetch => session
                    .notes
                    .push("web_fetch is off in the config ([tools.web_fetch] enabled)".into()),
            }
        }
        session
    }
}

/// One run's tools. Cheap to clone: members share it.
#[derive(Clone)]
pub struct Session {
    toolbox: Arc<Toolbox>,
    /// `Some` when the tool is on.
    search_filter: Option<DomainFilter>,
    fetch_filter: Option<DomainFilter>,
    max_results: usize,
    notes: Vec<String>,
}

impl Session {
    /// No tool is on.
    pub fn is_empty(&self) -> bool {
        self.search_filter.is_none() && self.fetch_filter.is_none()
    }

    pub fn has_search(&self) -> bool {
        self.search_filter.is_some()
    }

    /// Why a tool that was asked for is off, if one is.
    pub fn note(&self) -> Option<String> {
        (!self.notes.is_empty()).then(|| self.notes.join("; "))
    }

    /// The tools as OpenAI function definitions.
    pub fn functions(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.search_filter.is_some() {
            out.push(json!({"type": "function", "function": {
                "name": "web_search",
                "description": "Search the web. Returns results with url, title, snippet and date. \
                    Search again with other words when results are thin.",
                "parameters": {"type": "object", "properties": {
                    "query": {"type": "string", "description": "What to search for"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 20,
                        "description": "How many results (default: the gateway's setting)"}},
                    "required": ["query"], "additionalProperties": false}}}));
        }
        if self.fetch_filter.is_some() {
            out.push(json!({"type": "function", "function": {
                "name": "web_fetch",
                "description": "Fetch a page (an http(s) URL, or a URL from web_search results) \
                    and return its main text as markdown.",
                "parameters": {"type": "object", "properties": {
                    "url": {"type": "string", "description": "The page's URL"}},
                    "required": ["url"], "additionalProperties": false}}}));
        }
        out
    }

    /// Runs one tool call. Failures are results too: the model reads why and tries otherwise.
    pub async fn call(&self, name: &str, arguments: &str) -> Outcome {
        let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
        let result = match (ToolName::parse(name), self.available(name)) {
            (Some(ToolName::WebSearch), true) => match text("query") {
                Some(q) => {
                    let n = args.get("max_results").and_then(Value::as_u64);
                    self.search_outcome(&q, n.map(|n| n.clamp(1, 20) as usize))
                        .await
                }
                None => Err("web_search needs {\"query\": \"...\"}".to_string()),
            },
            (Some(ToolName::WebFetch), true) => match text("url") {
                Some(url) => self.fetch_outcome(&url).await,
                None => Err("web_fetch needs {\"url\": \"...\"}".to_string()),
            },
            _ => Err(format!("no tool named {name:?} is available")),
        };
        result.unwrap_or_else(|error| Outcome {
            content: json!({"error": error}).to_string(),
            sources: Vec::new(),
            error: Some(error),
        })
    }

    fn available(&self, name: &str) -> bool {
        match ToolName::parse(name) {
            Some(ToolName::WebSearch) => self.search_filter.is_some(),
            Some(ToolName::WebFetch) => self.fetch_filter.is_some(),
            None => false,
        }
    }

    async fn search_outcome(&self, query: &str, max: Option<usize>) -> Result<Outcome, String> {
        let results = self.search_at_most(query, max).await?;
        let sources = results
            .iter()
            .map(|r| Source {
                url: r.url.clone(),
                title: r.title.clone(),
                via: "web_search",
            })
            .collect();
        Ok(Outcome {
            content: json!({"query": query, "results": results}).to_string(),
            sources,
            error: None,
        })
    }

    async fn fetch_outcome(&self, url: &str) -> Result<Outcome, String> {
        let doc = self.fetch(url).await?;
        let (content, clipped) = clip(&doc.content, FETCH_CHARS);
        let mut sources = vec![Source {
            url: doc.url.clone(),
            title: doc.title.clone(),
            via: "web_fetch",
        }];
        if doc.url != url {
            sources.push(Source {
                url: url.to_string(),
                title: doc.title.clone(),
                via: "web_fetch",
            });
        }
        Ok(Outcome {
            content: json!({"url": doc.url, "title": doc.title, "content": content,
                "truncated": doc.truncated || clipped})
            .to_string(),
            sources,
            error: None,
        })
    }

    /// Searches with the session's filter applied to the results. Asks the backend for a few
    /// more than needed, so filtered results leave the list full.
    pub async fn search(&self, query: &str) -> Result<Vec<SearchResult>, String> {
        self.search_at_most(query, None).await
    }

    /// `search` with the model's own result count, when it asked for one.
    async fn search_at_most(
        &self,
        query: &str,
        max: Option<usize>,
    ) -> Result<Vec<SearchResult>, String> {
        let (Some(filter), Ok(backend)) = (&self.search_filter, &self.toolbox.search) else {
            return Err("web_search is not available".into());
        };
        let wanted = max.unwrap_or(self.max_results);
        let asked = if filter.is_empty() {
            wanted
        } else {
            (wanted * 2).min(20)
        };
        let results = backend
            .search(query, asked)
            .await
            .map_err(|e| e.to_string())?;
        Ok(results
            .into_iter()
            .filter(|r| filter.permits_str(&r.url))
            .take(wanted)
            .collect())
    }

    /// Fetches a page, or reads an indexed document for a `file://` URL from the local index.
    pub async fn fetch(&self, url: &str) -> Result<Document, String> {
        let Some(filter) = &self.fetch_filter else {
            return Err("web_fetch is not available".into());
        };
        if url.starts_with("file://") {
            return self.indexed(url, filter);
        }
        let fetcher = self
            .toolbox
            .fetcher
            .as_ref()
            .ok_or("web_fetch is off in the config")?;
        let page = fetcher
            .fetch(url, filter)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Document {
            title: page.title.unwrap_or_else(|| page.final_url.clone()),
            url: page.final_url,
            content: page.content,
            truncated: page.truncated,
        })
    }

    fn indexed(&self, url: &str, filter: &DomainFilter) -> Result<Document, String> {
        let not_indexed = || format!("{url} is not a document of the local index");
        if !filter.permits_str(url) {
            return Err(format!("excluded by the domain filter: {url}"));
        }
        let index = self.toolbox.local.as_ref().ok_or_else(not_indexed)?;
        let (title, content) = index
            .read(url)
            .map_err(|e| e.to_string())?
            .ok_or_else(not_indexed)?;
        Ok(Document {
            url: url.to_string(),
            title,
            content,
            truncated: false,
        })
    }
}

/// `text` cut to at most `max` bytes at a character boundary, and whether it was cut.
pub fn clip(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_lists_take_names_objects_and_server_types() {
        let specs = ToolSpec::parse_list(
            &json!(["web_search", {"type": "quorate:web_fetch",
                "parameters": {"excluded_domains": ["huggingface.co"]}}]),
            "plugins[0].tools",
        )
        .unwrap();
        assert_eq!(specs[0].name, ToolName::WebSearch);
        assert_eq!(specs[1].name, ToolName::WebFetch);
        assert!(!specs[1]
            .filter
            .permits_str("https://huggingface.co/datasets/x"));
        assert!(specs[0].filter.is_empty());
        assert!(ToolSpec::parse_list(&json!([]), "t").unwrap().is_empty());
        let err = |v: Value| ToolSpec::parse_list(&v, "t").unwrap_err();
        assert!(err(json!(["web_browse"])).starts_with("t[0]: unknown tool"));
        assert!(err(json!(["web_search", "web_search"])).contains("twice"));
        assert!(
            err(json!([{"type": "web_search", "parameters": {"colour": 1}}]))
                .starts_with("t[0].parameters: unknown field")
        );
        assert!(
            err(json!([{"type": "web_search", "parameters": {"max_results": 0}}]))
                .contains("max_results")
        );
        assert!(err(json!("web_search")).contains("must be an array"));
        assert!(err(
            json!([{"type": "web_fetch", "parameters": {"excluded_domains": ["a.com"],
            "allowed_domains": ["b.com"]}}])
        )
        .contains("not both"));
    }

    #[tokio::test]
    async fn with_no_backend_search_is_off_with_a_reason_and_calls_fail_softly() {
        let mut config = ToolsConfig::default();
        config.web_search.index_dir = Some(std::env::temp_dir().join("quorate-no-index-here"));
        let toolbox = Arc::new(Toolbox::from_config(&config, &Secrets::default()).unwrap());
        let session = toolbox.session(&ToolSpec::defaults());
        assert!(!session.has_search());
        assert!(session.note().unwrap().contains("web_search is off"));
        let names: Vec<Value> = session
            .functions()
            .iter()
            .map(|f| f["function"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("web_fetch")]);
        let outcome = session.call("web_search", r#"{"query": "x"}"#).await;
        assert!(outcome.error.unwrap().contains("no tool named"));
        let outcome = session.call("web_fetch", "{}").await;
        assert!(outcome.content.contains("needs"), "{}", outcome.content);
        let outcome = session
            .call("web_fetch", r#"{"url": "http://127.0.0.1:1/"}"#)
            .await;
        assert!(
            outcome.error.unwrap().starts_with("refused"),
            "loopback is refused"
        );
        assert!(toolbox.session(&[]).is_empty());
    }
}
