//! The `tavily` backend: Tavily's search API (`POST /search`, bearer key).

use serde_json::json;

use super::http::{Api, Backend, Fields};
use super::SearchError;

pub(crate) const TAVILY: Backend = Backend {
    name: "tavily",
    request,
    list: "/results",
    fields: Fields {
        snippet: &["content"],
        date: &["published_date"],
    },
};

fn request(api: &Api, query: &str, max: usize) -> Result<reqwest::RequestBuilder, SearchError> {
    Ok(api
        .client
        .post(api.url("/search"))
        .bearer_auth(api.key()?)
        .json(&json!({"query": query, "max_results": max.clamp(1, 20)})))
}
