//! The `brave` backend: Brave's Web Search API (`GET /res/v1/web/search`, key in
//! `X-Subscription-Token`).

use super::http::{Api, Backend, Fields};
use super::SearchError;

pub(crate) const BRAVE: Backend = Backend {
    name: "brave",
    request,
    list: "/web/results",
    fields: Fields {
        snippet: &["description"],
        date: &["page_age", "age"],
    },
};

fn request(api: &Api, query: &str, max: usize) -> Result<reqwest::RequestBuilder, SearchError> {
    let count = max.clamp(1, 20).to_string();
    Ok(api
        .client
        .get(api.url("/res/v1/web/search"))
        .header("x-subscription-token", api.key()?)
        .header("accept", "application/json")
        .query(&[("q", query), ("count", count.as_str())]))
}
