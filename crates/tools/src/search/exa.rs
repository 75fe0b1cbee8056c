//! The `exa` backend: Exa's search API (`POST /search`, key in `x-api-key`), asking for
//! highlights so each result carries a snippet.

use serde_json::json;

use super::http::{Api, Backend, Fields};
use super::SearchError;

/// Highlight characters asked for per result: a snippet, not the page.
const HIGHLIGHT_CHARS: u32 = 400;

pub(crate) const EXA: Backend = Backend {
    name: "exa",
    request,
    list: "/results",
    fields: Fields {
        snippet: &["highlights", "text", "summary"],
        date: &["publishedDate"],
    },
};

fn request(api: &Api, query: &str, max: usize) -> Result<reqwest::RequestBuilder, SearchError> {
    Ok(api
        .client
        .post(api.url("/search"))
        .header("x-api-key", api.key()?)
        .json(&json!({"query": query, "numResults": max.clamp(1, 20),
            "contents": {"highlights": {"maxCharacters": HIGHLIGHT_CHARS}}})))
}
