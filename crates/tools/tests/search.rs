//! The HTTP search backends against fake APIs on loopback that check what a real one would: the
//! path, the query, the key header. Results come back normalized, filtered by domain, and a bad
//! key is an error that never repeats the key.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use quorate_config::{SearchBackend, Secrets, ToolsConfig};
use quorate_tools::{ToolSpec, Toolbox};
use serde_json::{json, Value};
use std::collections::HashMap;

const KEY: &str = "secret-key-123";

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn brave(
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    if header(&headers, "x-subscription-token") != KEY {
        return Err(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(q["q"], "tides");
    Ok(Json(json!({"web": {"results": [
        {"url": "https://huggingface.co/tides", "title": "Leak", "description": "rubric"},
        {"url": "https://ocean.example/tides", "title": "How <strong>tides</strong> work",
         "description": "The <strong>Moon</strong> pulls &amp; the Sun helps.", "page_age": "2024-05-01T00:00:00"},
        {"url": "https://sea.example/", "title": "Sea", "description": "waves"}
    ]}})))
}

async fn tavily(headers: HeaderMap, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
    if header(&headers, "authorization") != format!("Bearer {KEY}") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(body["query"], "tides");
    assert!(body["max_results"].as_u64().unwrap() >= 1);
    Ok(Json(json!({"query": "tides", "results": [
        {"url": "https://ocean.example/tides", "title": "Tides", "content": "The Moon pulls.",
         "published_date": "2024-05-01", "score": 0.9}
    ]})))
}

async fn exa(headers: HeaderMap, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
    if header(&headers, "x-api-key") != KEY {
        return Err(StatusCode::UNAUTHORIZED);
    }
    assert!(body["numResults"].as_u64().is_some());
    assert!(body.pointer("/contents/highlights").is_some());
    Ok(Json(json!({"results": [
        {"url": "https://ocean.example/tides", "title": "Tides",
         "highlights": ["The Moon pulls.", "Twice a day."], "publishedDate": "2024-05-01T00:00:00.000Z"}
    ]})))
}

async fn searxng(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    assert_eq!(q["format"], "json");
    Json(json!({"query": q["q"], "results": [
        {"url": "https://ocean.example/tides", "title": "Tides", "content": "The Moon pulls.", "engine": "x"}
    ]}))
}

async fn api() -> SocketAddr {
    let app = axum::Router::new()
        .route("/res/v1/web/search", get(brave))
        .route("/search", post(tavily).get(searxng))
        .route("/exa/search", post(exa));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn session(backend: SearchBackend, base: String, key_env: &str) -> quorate_tools::Session {
    let mut config = ToolsConfig {
        excluded_domains: vec!["huggingface.co".into()],
        ..ToolsConfig::default()
    };
    config.web_search.backend = Some(backend);
    config.web_search.base_url = Some(base);
    config.web_search.api_key_env = Some(key_env.into());
    config.web_search.max_results = Some(2);
    let toolbox = Arc::new(Toolbox::from_config(&config, &Secrets::default()).unwrap());
    toolbox.session(&ToolSpec::defaults())
}

#[tokio::test]
async fn every_backend_returns_normalized_filtered_results() {
    let addr = api().await;
    std::env::set_var("QUORATE_TEST_SEARCH_KEY", KEY);
    let base = format!("http://{addr}");
    let cases = [
        (SearchBackend::Brave, base.clone()),
        (SearchBackend::Tavily, base.clone()),
        (SearchBackend::Exa, format!("{base}/exa")),
        (SearchBackend::Searxng, base.clone()),
    ];
    for (backend, url) in cases {
        let s = session(backend, url, "QUORATE_TEST_SEARCH_KEY");
        let results = s.search("tides").await.unwrap();
        let name = backend.as_str();
        assert!(
            results.iter().all(|r| !r.url.contains("huggingface.co")),
            "{name}: excluded domain"
        );
        assert_eq!(results[0].url, "https://ocean.example/tides", "{name}");
        assert!(
            results[0].snippet.contains("Moon pulls"),
            "{name}: {:?}",
            results[0]
        );
        assert!(results.len() <= 2, "{name}: max_results");
        if backend == SearchBackend::Brave {
            assert_eq!(results[0].title, "How tides work");
            assert_eq!(results[0].snippet, "The Moon pulls & the Sun helps.");
            assert_eq!(results[0].date.as_deref(), Some("2024-05-01T00:00:00"));
            assert_eq!(
                results.len(),
                2,
                "the excluded result leaves room for the next"
            );
        }
        if backend == SearchBackend::Exa {
            assert_eq!(results[0].snippet, "The Moon pulls. … Twice a day.");
        }
        let outcome = s
            .call("web_search", r#"{"query": "tides", "max_results": 1}"#)
            .await;
        assert!(outcome.error.is_none(), "{name}: {:?}", outcome.error);
        assert_eq!(outcome.sources.len(), 1, "{name}: the model's max_results");
        assert_eq!(outcome.sources[0].url, "https://ocean.example/tides");
        assert_eq!(outcome.sources[0].via, "web_search");
    }
}

#[tokio::test]
async fn a_refused_key_is_an_error_that_does_not_repeat_it_and_a_missing_one_turns_search_off() {
    let addr = api().await;
    std::env::set_var("QUORATE_TEST_WRONG_KEY", "wrong-key-456");
    let s = session(
        SearchBackend::Brave,
        format!("http://{addr}"),
        "QUORATE_TEST_WRONG_KEY",
    );
    let e = s.search("tides").await.unwrap_err();
    assert!(e.contains("brave") && e.contains("refused"), "{e}");
    assert!(!e.contains("wrong-key-456"));
    let outcome = s.call("web_search", r#"{"query": "tides"}"#).await;
    assert!(!outcome.content.contains("wrong-key-456"));

    let s = session(
        SearchBackend::Tavily,
        format!("http://{addr}"),
        "QUORATE_TEST_UNSET_KEY",
    );
    assert!(!s.has_search());
    let note = s.note().unwrap();
    assert!(note.contains("QUORATE_TEST_UNSET_KEY"), "{note}");
}
