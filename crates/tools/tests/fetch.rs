//! `web_fetch` against a fixture site on loopback: reachable only through the explicit
//! allowlist, and refused everywhere an attacker would point it.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use quorate_tools::{DomainFilter, FetchConfig, FetchError, Fetcher};

const ARTICLE: &str = r#"<html><head><title>Tides</title></head><body>
<header><nav><a href="https://example.org/">Home</a> Subscribe</nav></header>
<article><h1>How tides work</h1><p>The <em>Moon</em> pulls the oceans.</p></article>
<footer>Cookie settings</footer></body></html>"#;

async fn site() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let app =
        axum::Router::new()
            .route("/article", get(|| async { html(ARTICLE) }))
            .route(
                "/redirect",
                get(|| async { Redirect::temporary("/article") }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route(
                "/to-private",
                get(move || async move {
                    Redirect::temporary(&format!("http://127.0.0.2:{port}/article"))
                }),
            )
            .route(
                "/to-excluded",
                get(|| async { Redirect::temporary("https://huggingface.co/datasets/draco") }),
            )
            .route("/huge", get(|| async { "x".repeat(3 * 1024 * 1024) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            )
            .route(
                "/binary",
                get(|| async {
                    (
                        [("content-type", "application/octet-stream")],
                        vec![0u8; 64],
                    )
                }),
            )
            .route(
                "/data.json",
                get(|| async {
                    (
                        [("content-type", "application/json")],
                        "{\"tide\": \"high\"}",
                    )
                }),
            );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn html(body: &'static str) -> Response {
    ([("content-type", "text/html; charset=utf-8")], body).into_response()
}

fn fetcher(allow: &[String]) -> Fetcher {
    Fetcher::new(FetchConfig {
        max_bytes: 1024 * 1024,
        timeout: Duration::from_secs(2),
        max_redirects: 5,
        allow_hosts: allow.to_vec(),
    })
}

#[tokio::test]
async fn the_allowlisted_fixture_site_is_fetched_cleanly() {
    let addr = site().await;
    let f = fetcher(&[addr.to_string()]);
    let none = DomainFilter::default();
    let page = f
        .fetch(&format!("http://{addr}/redirect"), &none)
        .await
        .unwrap();
    assert_eq!(page.final_url, format!("http://{addr}/article"));
    assert_eq!(page.title.as_deref(), Some("Tides"));
    assert_eq!(
        page.content,
        "# How tides work\n\nThe *Moon* pulls the oceans."
    );
    let json = f
        .fetch(&format!("http://{addr}/data.json"), &none)
        .await
        .unwrap();
    assert_eq!(json.content, "{\"tide\": \"high\"}");
    let huge = f
        .fetch(&format!("http://{addr}/huge"), &none)
        .await
        .unwrap();
    assert!(huge.truncated && huge.content.len() == 1024 * 1024);
    assert_eq!(
        f.fetch(&format!("http://{addr}/slow"), &none).await,
        Err(FetchError::Timeout(Duration::from_secs(2)))
    );
    assert_eq!(
        f.fetch(&format!("http://{addr}/binary"), &none).await,
        Err(FetchError::ContentType("application/octet-stream".into()))
    );
    assert_eq!(
        f.fetch(&format!("http://{addr}/loop"), &none).await,
        Err(FetchError::TooManyRedirects(5))
    );
    assert!(matches!(
        f.fetch(&format!("http://{addr}/missing"), &none).await,
        Err(FetchError::Status(404))
    ));
}

#[tokio::test]
async fn internal_targets_are_refused_without_the_allowlist() {
    let addr = site().await;
    let port = addr.port();
    let open = fetcher(&[]);
    let none = DomainFilter::default();
    for url in [
        format!("http://{addr}/article"),
        format!("http://localhost:{port}/article"),
        format!("http://[::1]:{port}/article"),
        format!("http://[::ffff:127.0.0.1]:{port}/article"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.0.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[fd00::1]/".to_string(),
    ] {
        let result = open.fetch(&url, &none).await;
        assert!(
            matches!(result, Err(FetchError::Refused(_))),
            "{url}: {result:?}"
        );
    }
    // Allowed in, but redirected to another loopback address that is not: refused at the hop.
    let allowed = fetcher(&[addr.to_string()]);
    let result = allowed
        .fetch(&format!("http://{addr}/to-private"), &none)
        .await;
    assert!(
        matches!(&result, Err(FetchError::Refused(why)) if why.contains("127.0.0.2")),
        "{result:?}"
    );
    for url in ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/"] {
        assert!(
            matches!(open.fetch(url, &none).await, Err(FetchError::Refused(_))),
            "{url}"
        );
    }
}

#[tokio::test]
async fn domain_filters_apply_to_targets_and_redirects() {
    let addr = site().await;
    let f = fetcher(&[addr.to_string()]);
    let excluded = DomainFilter::new(&["huggingface.co".to_string()], &[]).unwrap();
    let result = f
        .fetch(&format!("http://{addr}/to-excluded"), &excluded)
        .await;
    assert_eq!(
        result,
        Err(FetchError::Filtered(
            "https://huggingface.co/datasets/draco".into()
        ))
    );
    let result = f.fetch("https://huggingface.co/", &excluded).await;
    assert!(matches!(result, Err(FetchError::Filtered(_))));
    let only_docs = DomainFilter::new(&[], &["docs.rs".to_string()]).unwrap();
    assert!(matches!(
        f.fetch(&format!("http://{addr}/article"), &only_docs).await,
        Err(FetchError::Filtered(_))
    ));
}
