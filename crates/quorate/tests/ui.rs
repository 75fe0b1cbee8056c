//! The web UI as the server serves it: one shell for every page, its scripts from the binary,
//! a policy that lets only those scripts run, and no data without a key. What the pages do in a
//! browser is tested with headless Chromium in tests/python/test_ui.py.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, start};

const KEY: &str = "sk-ui-test";

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

#[tokio::test]
async fn pages_share_one_shell_under_a_strict_policy() {
    let (_sim, addr) = common::sim(&[]).await;
    let gw = start(&config(addr, ""), &[]).await;
    let shell = get(&gw.url("/")).await;
    assert_eq!(shell.status(), 200);
    let policy = shell.headers()["content-security-policy"].to_str().unwrap();
    for rule in [
        "script-src 'self'",
        "default-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(rule), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(shell.headers()["x-content-type-options"], "nosniff");
    let html = shell.text().await.unwrap();
    assert!(html.contains("/ui/app.js"), "{html}");
    for page in ["/runs", "/runs/gen-1-abc-2", "/usage"] {
        assert_eq!(
            get(&gw.url(page)).await.text().await.unwrap(),
            html,
            "{page}"
        );
    }

    let script = get(&gw.url("/ui/app.js")).await;
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let vendored = get(&gw.url("/ui/vendor/purify.es.mjs")).await;
    assert_eq!(vendored.status(), 200);
    assert!(vendored.text().await.unwrap().contains("DOMPurify"));

    for missing in [
        "/ui/nothing.js",
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/vendor/x/y.js",
    ] {
        let response = get(&gw.url(missing)).await;
        assert_eq!(response.status(), 404, "{missing}");
    }
}

#[tokio::test]
async fn with_keys_the_shell_loads_but_its_data_needs_a_key() {
    let (_sim, addr) = common::sim(&[]).await;
    let keyed = config(addr, "").replace(
        "[server]\n",
        "[server]\napi_keys_env = \"QUORATE_TEST_UI_KEYS\"\n",
    );
    let gw = start(&keyed, &[("QUORATE_TEST_UI_KEYS", KEY)]).await;
    assert_eq!(get(&gw.url("/")).await.status(), 200);
    for data in ["/v1/models", "/v1/runs", "/v1/usage"] {
        assert_eq!(get(&gw.url(data)).await.status(), 401, "{data}");
    }
    let usage = reqwest::Client::new()
        .get(gw.url("/v1/usage"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
}

#[tokio::test]
async fn the_ui_can_be_turned_off() {
    let (_sim, addr) = common::sim(&[]).await;
    let off = config(addr, "").replace("[server]\n", "[server]\nui = false\n");
    let gw = start(&off, &[]).await;
    for page in ["/", "/runs", "/ui/app.js"] {
        assert_eq!(get(&gw.url(page)).await.status(), 404, "{page}");
    }
    assert_eq!(get(&gw.url("/v1/models")).await.status(), 200);
}
