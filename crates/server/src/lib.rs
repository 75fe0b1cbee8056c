//! Quorate's HTTP server: the OpenAI-compatible API over the provider router.
//!
//! Every route answers JSON, errors included (`{"error": {"code", "message", "metadata"}}`), and
//! the OpenRouter paths (`/api/v1/...`) serve the same handlers, so clients switch by base URL.

mod answer;
mod auth;
mod body;
mod chat;
mod conn;
mod context;
mod error;
mod fusion;
mod messages;
mod metrics;
mod models;
mod record;
mod rejection;
mod responses;
mod runs;
mod ui;
mod usage;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use quorate_fusion::Fusion;
use quorate_providers::Router;
use quorate_store::Store;
use tokio::net::TcpListener;

pub use error::ApiError;

pub struct AppState {
    pub router: Router,
    pub fusion: Fusion,
    /// Gateway keys and their names; `None` means the gateway is open.
    keys: Option<Arc<Vec<auth::Key>>>,
    /// Where every request is recorded; `None` when `[store] enabled = false`.
    pub store: Option<Arc<Store>>,
    pub keepalive: Duration,
    /// How long a request's whole body may take to arrive.
    pub body_timeout: Duration,
    request_ids: AtomicU64,
    /// This process's part of every request id, so replicas sharing a store never collide.
    instance: String,
}

impl AppState {
    /// Reads gateway keys from the env var the config names (an empty or missing variable is an
    /// error rather than a silently open gateway) and loads the fusion prompt templates.
    pub fn new(router: Router) -> Result<Self, String> {
        let server = &router.config().server;
        let keys = match &server.api_keys_env {
            None => None,
            Some(env) => {
                let raw = std::env::var(env).unwrap_or_default();
                let keys = auth::parse_keys(&raw);
                if keys.is_empty() {
                    return Err(format!(
                        "server.api_keys_env names {env}, but {env} holds no keys (comma-separated)"
                    ));
                }
                Some(Arc::new(keys))
            }
        };
        metrics::install();
        Ok(Self {
            keepalive: Duration::from_secs_f64(server.keepalive_s),
            body_timeout: Duration::from_secs_f64(server.body_timeout_s),
            fusion: Fusion::new(router.clone())?,
            router,
            keys,
            store: None,
            request_ids: AtomicU64::new(0),
            instance: format!("{:08x}", rand::random::<u32>()),
        })
    }

    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }
}

/// Request bodies are read by `chat::read_body` (within `server.max_body_bytes` and
/// `body_timeout_s`), not by axum's extractors, so there is no `DefaultBodyLimit` layer. A new
/// handler must read its body through `read_body` too: a body extractor (`Json`, `Bytes`) would
/// get axum's default 2 MB limit instead of the configured one.
pub fn app(state: Arc<AppState>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/api/v1/chat/completions", post(chat::completions))
        .route("/v1/messages", post(messages::create))
        .route("/api/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route(
            "/api/v1/messages/count_tokens",
            post(messages::count_tokens),
        )
        .route("/v1/responses", post(responses::create))
        .route("/api/v1/responses", post(responses::create))
        .route("/v1/models", get(models::list))
        .route("/api/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/api/v1/models/{*id}", get(models::retrieve))
        .route("/v1/runs", get(runs::list))
        .route("/api/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/generation", get(runs::generation))
        .route("/metrics", get(metrics::render))
        .route("/v1/generation", get(runs::generation))
        .route("/v1/usage", get(usage::summary))
        .route("/api/v1/usage", get(usage::summary));
    // Only with keys configured: a layer costs every request a boxed future.
    let api = match &state.keys {
        Some(keys) => api.route_layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            auth::require_key,
        )),
        None => api,
    };
    let mut routes = axum::Router::new().route("/health", get(health)).merge(api);
    if state.router.config().server.ui {
        routes = routes.merge(ui::routes());
    }
    let cors = cors(&state.router.config().server.cors_origins);
    let app = routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::attach,
        ))
        .with_state(state);
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// Browser access from `[server] cors_origins`, outermost so preflights are answered before keys
/// are asked for; `None` (no CORS headers at all) when the list is empty.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                name("x-api-key"),
                name("anthropic-version"),
                name("x-request-id"),
            ])
            .expose_headers([
                name("x-request-id"),
                name("x-quorate-run-id"),
                name("server-timing"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// What connections past `server.max_connections` get: /health, and a 503 for anything else.
fn overflow_app(max_connections: usize) -> axum::Router {
    let refuse = move || error::over_connection_limit(max_connections);
    axum::Router::new()
        .route("/health", get(health))
        .fallback(refuse)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Serves until `shutdown` resolves; then stops accepting and lets in-flight requests finish for
/// at most `grace`. Slow clients are cut off and connections limited as `[server]` says.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let server = state.router.config().server.clone();
    let overflow = overflow_app(server.max_connections);
    let lanes = conn::Lanes::new(app(state), overflow, &server);
    conn::serve(listener, lanes, shutdown, grace).await;
}
