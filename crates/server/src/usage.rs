//! `GET /v1/usage`: tokens, cost and failures per day and model from the run store, fusion and
//! pass-through apart, and the tokens early exits saved (what the web UI's Usage page charts).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::chat::unix_millis;
use crate::runs::{store_and_query, unavailable, Refusal};
use crate::AppState;

const DEFAULT_DAYS: i64 = 30;
const DAY_S: i64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Unix seconds, inclusive; default: 30 days before `until`.
    since: Option<i64>,
    /// Unix seconds, exclusive; default: now.
    until: Option<i64>,
}

pub async fn summary(
    State(state): State<Arc<AppState>>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let (store, query) = match store_and_query(&state, query) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let until = query.until.unwrap_or(unix_millis() as i64 / 1000 + 1);
    let since = query.since.unwrap_or(until - DEFAULT_DAYS * DAY_S);
    if since >= until {
        return Refusal(400, "since: must be before until".into()).into_response();
    }
    let usage = match store
        .reader()
        .usage(since.saturating_mul(1000), until.saturating_mul(1000))
        .await
    {
        Ok(usage) => usage,
        Err(e) => return unavailable(&e).into_response(),
    };
    let rows: Vec<_> = usage
        .rows
        .iter()
        .map(|row| {
            let mut value = json!(row);
            value["day"] = json!(quorate_api::time::iso_date(row.day * DAY_S));
            value
        })
        .collect();
    axum::Json(json!({"since": since, "until": until, "rows": rows, "failures": usage.failures}))
        .into_response()
}
