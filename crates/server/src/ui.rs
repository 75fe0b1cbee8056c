//! The web UI: one HTML shell for every page (`/`, `/runs`, `/runs/{id}`, `/usage`) and the
//! scripts and styles under `/ui/`, embedded at build time. Its data comes from the API, behind
//! the gateway keys like any client's; the shell itself holds none.
//!
//! Model output is shown in this page, so the page may run only its own scripts: a strict
//! Content-Security-Policy backs up the sanitising the scripts do (an answer's `<script>` or
//! `onerror` cannot run, and its images cannot call out).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// `(path under /ui/, bytes)`, written by build.rs.
static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

const SHELL: &str = "index.html";

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Set while developing the UI: assets are read from this folder on every request.
const DEV_DIR_ENV: &str = "QUORATE_UI_DIR";

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/", get(shell))
        .route("/runs", get(shell))
        .route("/runs/{id}", get(shell))
        .route("/usage", get(shell))
        .route("/ui/{*path}", get(asset))
}

async fn shell() -> Response {
    serve(SHELL)
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some(bytes) = read(path) else {
        return crate::error::respond(
            404,
            quorate_api::ErrorBody::new(404, format!("no UI file {path:?}")),
            None,
        );
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (StatusCode::OK, headers, bytes).into_response()
}

/// The embedded file, or with `QUORATE_UI_DIR` set the file on disk (edits show on reload, new
/// files too). A name with `..`, a leading dot or more than one folder is never read.
fn read(path: &str) -> Option<Bytes> {
    match std::env::var_os(DEV_DIR_ENV) {
        Some(dir) if plain(path) => std::fs::read(PathBuf::from(dir).join(path))
            .ok()
            .map(Bytes::from),
        Some(_) => None,
        None => ASSETS
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, bytes)| Bytes::from_static(bytes)),
    }
}

fn plain(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    }
}
