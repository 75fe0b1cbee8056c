//! Reading the run store: `GET /v1/runs` (filtered pages, newest first), `GET /v1/runs/{id}`
//! (the whole record) and OpenRouter's `GET /api/v1/generation?id=` (a generation's tokens and
//! cost). Gateway keys apply as on every API route.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use quorate_api::ErrorBody;
use quorate_store::{Cursor, Filter, Run, Store, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    model: Option<String>,
    status: Option<u16>,
    caller: Option<String>,
    /// Unix seconds, inclusive.
    since: Option<i64>,
    /// Unix seconds, exclusive.
    until: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let (store, query) = match store_and_query(&state, query) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let cursor = match query.cursor.as_deref().map(Cursor::decode) {
        Some(None) => return error(400, "cursor: not one this server gave".into()),
        Some(cursor) => cursor,
        None => None,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(400, format!("limit: must be 1 to {MAX_LIMIT}"));
    }
    let filter = Filter {
        model: query.model,
        status: query.status,
        caller: query.caller,
        since_ms: query.since.map(|s| s.saturating_mul(1000)),
        until_ms: query.until.map(|s| s.saturating_mul(1000)),
        cursor,
        limit,
    };
    match store.reader().list(&filter).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => unavailable(&e).into_response(),
    }
}

pub async fn show(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match find(&state, &id).await {
        Ok(run) => axum::Json(run).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct GenerationQuery {
    id: Option<String>,
}

/// OpenRouter's generation record: what a client that already reads it needs.
pub async fn generation(
    State(state): State<Arc<AppState>>,
    Query(query): Query<GenerationQuery>,
) -> Response {
    let Some(id) = query.id.filter(|id| !id.is_empty()) else {
        return error(
            400,
            "id: the generation id is required (?id=gen-...)".into(),
        );
    };
    let run = match find(&state, &id).await {
        Ok(run) => run,
        Err(refusal) => return refusal.into_response(),
    };
    let s = &run.summary;
    let provider = run
        .detail
        .attempts
        .iter()
        .rev()
        .find(|a| a.status == 200)
        .map(|a| a.provider.clone());
    axum::Json(json!({"data": {
        "id": s.id,
        "model": s.answered_by.as_deref().unwrap_or(&s.model),
        "created_at": quorate_api::time::rfc3339_ms(s.created_ms),
        "total_cost": s.cost_usd.unwrap_or(0.0),
        "usage": s.cost_usd.unwrap_or(0.0),
        "tokens_prompt": s.prompt_tokens,
        "tokens_completion": s.completion_tokens,
        "native_tokens_prompt": s.prompt_tokens,
        "native_tokens_completion": s.completion_tokens,
        "latency": s.first_token_ms.unwrap_or(s.latency_ms),
        "generation_time": s.latency_ms,
        "streamed": s.stream,
        "cancelled": s.status == 499,
        "provider_name": provider,
        "is_byok": false,
        "origin": "",
        "status": s.status,
        "error_kind": s.error_kind,
    }}))
    .into_response()
}

async fn find(state: &AppState, id: &str) -> Result<Run, Refusal> {
    let store = store(state)?;
    match fetch(store, id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(Refusal(404, format!("no run {id:?} in the run store"))),
        Err(e) => Err(unavailable(&e)),
    }
}

/// A run by id. The record of a request answered a moment ago may still be on its way to the
/// database (written in batches, off the request path), so a run made in the last few seconds
/// (its id says when: `gen-<ms>-...`) is looked for a little longer; an old id is not.
pub(crate) async fn fetch(store: &Store, id: &str) -> Result<Option<Run>, StoreError> {
    const FRESH_MS: u64 = 10_000;
    const TRIES: usize = 40;
    let made_ms = id
        .strip_prefix("gen-")
        .and_then(|rest| rest.split('-').next()?.parse::<u64>().ok());
    let fresh = made_ms.is_some_and(|ms| crate::chat::unix_millis().saturating_sub(ms) < FRESH_MS);
    let tries = if fresh { TRIES } else { 1 };
    for attempt in 1..=tries {
        if let Some(run) = store.reader().get(id).await? {
            return Ok(Some(run));
        }
        if attempt < tries {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    Ok(None)
}

/// The store and the parsed query string, or the refusal to answer with.
pub(crate) fn store_and_query<T>(
    state: &AppState,
    query: Result<Query<T>, QueryRejection>,
) -> Result<(&Arc<Store>, T), Refusal> {
    let store = store(state)?;
    let Query(query) =
        query.map_err(|e| Refusal(400, format!("invalid query: {}", e.body_text())))?;
    Ok((store, query))
}

fn store(state: &AppState) -> Result<&Arc<Store>, Refusal> {
    state.store.as_ref().ok_or_else(|| {
        Refusal(
            404,
            "the run store is off ([store] enabled = false): no runs are kept".into(),
        )
    })
}

pub(crate) fn unavailable(e: &quorate_store::StoreError) -> Refusal {
    tracing::warn!(error = %e, "run store read failed");
    Refusal(503, format!("the run store cannot be read now: {e}"))
}

/// A status and why, answered in the API's error shape.
pub(crate) struct Refusal(pub u16, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        crate::error::respond(self.0, ErrorBody::new(self.0, self.1), None)
    }
}

fn error(status: u16, message: String) -> Response {
    Refusal(status, message).into_response()
}
