//! Errors as HTTP responses: the status of the error kind and the JSON envelope, never HTML.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quorate_providers::Error;

pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = (status, axum::Json(self.0.to_body())).into_response();
        if let Some(after) = self.0.retry_after() {
            let seconds = after.as_secs_f64().ceil() as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
        }
        response
    }
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    let message = format!(
        "no route {}: the API is under /v1 (POST /v1/chat/completions, GET /v1/models)",
        uri.path()
    );
    let body = quorate_api::ErrorBody::new(404, message);
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

pub async fn method_not_allowed() -> Response {
    let body = quorate_api::ErrorBody::new(405, "method not allowed on this route");
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
