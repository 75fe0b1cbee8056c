//! Errors as HTTP responses: the status of the error kind and the JSON envelope, never HTML.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quorate_api::ErrorBody;
use quorate_providers::Error;

pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        respond(self.0.status(), self.0.to_body(), self.0.retry_after())
    }
}

/// Tells SDKs not to retry on their own.
pub(crate) fn no_retry(response: &mut Response) {
    response
        .headers_mut()
        .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
}

/// Read by the official OpenAI SDKs: `false` stops their automatic retries.
const SHOULD_RETRY: &str = "x-should-retry";

/// Client errors a retry cannot fix (a timeout, a conflict and a rate limit can pass).
fn retry_cannot_help(status: StatusCode) -> bool {
    status.is_client_error()
        && ![
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&status)
}

/// An error whose body the edge writes ([`in_dialect`]): the typed body rides on the response
/// as an extension, so it is serialized once, in the dialect of the path that was asked.
pub(crate) fn respond(status: u16, body: ErrorBody, retry_after: Option<Duration>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = status.into_response();
    error_headers(&mut response, status, retry_after);
    response.extensions_mut().insert(body);
    response
}

/// The edge decides the error dialect: OpenRouter's under `/api/` (`code` is the status),
/// OpenAI's everywhere else (`code` is a name such as `rate_limit_exceeded`, the status is
/// `status`), so frameworks that match on either find what they look for.
pub fn in_dialect(mut response: Response, openrouter: bool) -> Response {
    let Some(body) = response.extensions_mut().remove::<ErrorBody>() else {
        return response;
    };
    let json = if openrouter {
        serde_json::to_vec(&body)
    } else {
        serde_json::to_vec(&body.openai())
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json.unwrap_or_default()))
}

/// An error response in another surface's body shape (Anthropic's), with the headers every
/// error carries.
pub(crate) fn respond_with(
    status: u16,
    body: impl serde::Serialize,
    retry_after: Option<Duration>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, axum::Json(body)).into_response();
    error_headers(&mut response, status, retry_after);
    response
}

/// `x-should-retry: false` where a retry cannot help, `Retry-After` where it is known.
fn error_headers(response: &mut Response, status: StatusCode, retry_after: Option<Duration>) {
    if retry_cannot_help(status) {
        response
            .headers_mut()
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    if let Some(after) = retry_after {
        let seconds = after.as_secs_f64().ceil() as u64;
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
    }
}

pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let message = format!(
        "not implemented: this gateway does not serve {method} {}. It serves POST \
         /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST \
         /v1/responses, GET /v1/models, GET \
         /v1/models/{{id}}, GET /v1/runs, GET /v1/runs/{{id}}, GET /v1/usage, GET /metrics and \
         GET /health (each also under /api/v1), and the web UI at /",
        uri.path()
    );
    respond(404, ErrorBody::new(404, message), None)
}

/// The 413 for a declared body larger than `server.max_body_bytes`, given before reading any of
/// it: a client that sent `Expect: 100-continue` gets it without uploading.
pub fn declared_oversize(headers: &HeaderMap, max_body: usize) -> Option<Response> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())?;
    (declared > max_body as u64).then(|| {
        ApiError(Error::PayloadTooLarge(format!(
            "request body of {declared} bytes is larger than server.max_body_bytes ({max_body})"
        )))
        .into_response()
    })
}

/// The answer past `server.max_connections`, in the default (OpenAI's) dialect: this lane has no
/// edge middleware to choose one.
pub async fn over_connection_limit(max_connections: usize) -> Response {
    let message = format!(
        "the server is at its connection limit (server.max_connections = {max_connections}); \
         retry shortly"
    );
    let body = ErrorBody::new(503, message);
    in_dialect(respond(503, body, Some(Duration::from_secs(1))), false)
}

pub async fn method_not_allowed() -> Response {
    respond(
        405,
        ErrorBody::new(405, "method not allowed on this route"),
        None,
    )
}
