//! The `searxng` backend: a self-hosted SearXNG instance's JSON API
//! (`GET /search?q=...&format=json`; the instance must enable the json format).

use super::http::{Api, Backend, Fields};
use super::SearchError;

pub(crate) const SEARXNG: Backend = Backend {
    name: "searxng",
    request,
    list: "/results",
    fields: Fields {
        snippet: &["content"],
        date: &["publishedDate"],
    },
};

fn request(api: &Api, query: &str, _max: usize) -> Result<reqwest::RequestBuilder, SearchError> {
    Ok(api
        .client
        .get(api.url("/search"))
        .query(&[("q", query), ("format", "json")]))
}
