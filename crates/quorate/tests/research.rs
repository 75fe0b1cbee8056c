//! Research end to end: the real `quorate serve` in front of `quorate-sim`, whose scripted models
//! call `web_search` and `web_fetch`; the gateway runs those calls against a fixture site on
//! loopback (a SearXNG-style search API and real pages, reached through `allow_hosts`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Json;
use common::{config, sim, sse, start, Gateway};
use quorate_sim::Sim;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const TIDES: &str = r#"<html><head><title>How tides work</title></head><body>
<nav>Home · Subscribe · Log in</nav>
<article><h1>How tides work</h1><p>The Moon pulls the oceans, raising two bulges a day.</p></article>
<footer>Cookie settings</footer></body></html>"#;

const MOON: &str = r#"<html><head><title>The Moon</title></head><body>
<main><p>The Moon orbits 384,400 km from Earth.</p></main></body></html>"#;

/// The fixture site: two pages and a SearXNG-compatible `/search` that also returns a result on
/// an excluded domain.
async fn site() -> SocketAddr {
    site_with(Duration::ZERO).await
}

/// The fixture site whose search answers after `delay`.
async fn site_with(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let search = move |Query(q): Query<HashMap<String, String>>| async move {
        tokio::time::sleep(delay).await;
        Json(json!({"query": q["q"], "results": [
            {"url": format!("http://{addr}/tides"), "title": "How tides work", "content": "The Moon pulls."},
            {"url": "https://huggingface.co/datasets/draco", "title": "Rubric", "content": "the answers"},
            {"url": format!("http://{addr}/moon"), "title": "The Moon", "content": "384,400 km."}
        ]}))
    };
    let app = axum::Router::new()
        .route("/tides", get(|| async { Html(TIDES) }))
        .route("/moon", get(|| async { Html(MOON) }))
        .route("/search", get(search));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}

fn analysis() -> Value {
    json!({"consensus": ["the Moon causes tides"], "contradictions": [], "partial_coverage": [],
           "unique_insights": [], "blind_spots": []})
}

const SYNTHESIS: &str =
    "Tides are the Moon's pull [1], from 384,400 km away [2]; see https://made.up/tides-paper and [9].";

/// Panel `p1..p3` researching, a judge and a synthesizer that cites; `agent` for plain requests.
fn scripts(site: SocketAddr) -> Vec<(&'static str, Value)> {
    let tides = format!("http://{site}/tides");
    let moon = format!("http://{site}/moon");
    vec![
        (
            "p1",
            json!({"sequence": [
                {"tool_calls": [call("web_search", json!({"query": "tides"})),
                                call("web_fetch", json!({"url": tides}))], "cost": 0.001},
                {"reply": format!("The Moon's pull, see [How tides work]({tides})."), "cost": 0.001}
            ]}),
        ),
        (
            "p2",
            json!({"sequence": [
                {"tool_calls": [call("web_fetch", json!({"url": moon})),
                                call("web_fetch", json!({"url": tides}))], "cost": 0.001},
                {"tool_calls": [call("web_search", json!({"query": "moon distance"})),
                                call("web_search", json!({"query": "tide height"}))], "cost": 0.001},
                {"reply": "The Moon and the Sun.", "cost": 0.001}
            ]}),
        ),
        (
            "p3",
            json!({"reply": "The Moon causes tides.", "cost": 0.001}),
        ),
        ("judge", json!({"json": analysis()})),
        ("synth", json!({"reply": SYNTHESIS, "token_ms": 1})),
        (
            "agent",
            json!({"sequence": [
                {"tool_calls": [call("web_search", json!({"query": "tides"}))], "cost": 0.01},
                {"reply": format!("See [tides]({tides}) and https://fake.example/x ."), "cost": 0.01}
            ]}),
        ),
    ]
}

fn research_config(sim: SocketAddr, site: SocketAddr) -> String {
    config(
        sim,
        &format!(
            r#"
[tools]
excluded_domains = ["huggingface.co"]
max_tool_calls = 3

[tools.web_search]
backend = "searxng"
base_url = "http://{site}"

[tools.web_fetch]
allow_hosts = ["127.0.0.1:{port}"]

[fusion]
default_preset = "r"

[presets.r]
panel = ["sim/p1", "sim/p2", "sim/p3"]
judge = "sim/judge"
synthesizer = "sim/synth"
member_timeout_s = 5
total_timeout_s = 20
"#,
            port = site.port()
        ),
    )
}

async fn setup() -> (Sim, Gateway, SocketAddr) {
    let site = site().await;
    let (sim, addr) = sim(&scripts(site)).await;
    let gw = start(&research_config(addr, site), &[]).await;
    (sim, gw, site)
}

fn requests_for(sim: &Sim, model: &str) -> Vec<Value> {
    sim.requests()
        .into_iter()
        .filter(|r| r.body["model"] == model)
        .map(|r| r.body)
        .collect()
}

fn fusion_request(plugin: Value) -> Value {
    json!({"model": "quorate/fusion", "messages": [{"role": "user", "content": "Why are there tides?"}],
           "plugins": [plugin]})
}

/// Posts a request that must be refused with a 400; returns the error message.
async fn bad_request(gw: &Gateway, body: &Value) -> String {
    let response = gw.post(body).await;
    assert_eq!(response.status(), 400);
    let e: Value = response.json().await.unwrap();
    e["error"]["message"].as_str().unwrap().to_string()
}

fn urls(sources: &Value) -> Vec<String> {
    sources
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn agentic_members_research_within_their_budget_and_the_answer_cites_what_they_found() {
    let (sim, gw, site) = setup().await;
    let tides = format!("http://{site}/tides");
    let moon = format!("http://{site}/moon");
    let response = gw.post(&fusion_request(json!({"id": "fusion"}))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let fusion = &body["fusion"];

    // p1: one turn of two parallel calls, then its answer (the loop went on with tools on).
    let p1 = requests_for(&sim, "p1");
    assert_eq!(p1.len(), 2);
    let offered: Vec<&str> = p1[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["web_search", "web_fetch"]);
    assert_eq!(p1[0]["messages"][0]["role"], "system", "the research note");
    assert!(
        p1[1].get("tool_choice").is_none(),
        "budget left: tools stay on"
    );
    let results: Vec<&Value> = p1[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(results.len(), 2);
    let search = results[0]["content"].as_str().unwrap();
    assert!(
        search.contains(&tides) && !search.contains("huggingface"),
        "{search}"
    );
    let page = results[1]["content"].as_str().unwrap();
    assert!(page.contains("The Moon pulls the oceans"), "{page}");
    assert!(
        !page.contains("Subscribe"),
        "boilerplate is dropped: {page}"
    );

    // p2: 2 calls, then 2 more of which only 1 fits the budget of 3, then a last turn, tools off.
    let p2 = requests_for(&sim, "p2");
    assert_eq!(p2.len(), 3);
    assert_eq!(p2[2]["tool_choice"], "none");
    let last = p2[2]["messages"].as_array().unwrap();
    assert!(last.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .contains("all 3 of your tool calls"));
    let skipped = last
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter(|m| m["content"].as_str().unwrap().contains("not run"))
        .count();
    assert_eq!(skipped, 1);
    let panel = fusion["panel"].as_array().unwrap();
    let calls: Vec<u64> = panel
        .iter()
        .map(|m| m["tool_calls"].as_u64().unwrap())
        .collect();
    assert_eq!(calls, [2, 3, 0]);
    assert_eq!(
        panel[1]["usage"]["cost"].as_f64(),
        Some(0.003),
        "every turn counted"
    );

    // Sources per member, the excluded domain nowhere.
    let p1_sources = urls(&panel[0]["sources"]);
    assert!(p1_sources.contains(&tides) && p1_sources.contains(&moon));
    assert!(panel[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["via"] == "web_fetch" && s["url"] == tides.as_str()));
    assert!(!body.to_string().contains("huggingface.co/datasets"));

    // The synthesizer got the numbered list; the answer's citations are checked against it.
    assert_eq!(urls(&fusion["sources"]), [tides.clone(), moon.clone()]);
    let synth = requests_for(&sim, "synth");
    let prompt = synth[0]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        prompt.contains(&format!("[1] How tides work ({tides})")),
        "{prompt}"
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], SYNTHESIS);
    let annotations = message["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 2);
    assert_eq!(annotations[0]["type"], "url_citation");
    assert_eq!(annotations[0]["url_citation"]["url"], tides.as_str());
    assert_eq!(annotations[1]["url_citation"]["url"], moon.as_str());
    let start = annotations[0]["url_citation"]["start_index"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(&SYNTHESIS[start..start + 3], "[1]");
    assert_eq!(
        fusion["unverified_citations"],
        json!(["https://made.up/tides-paper", "[9]"])
    );
    assert!(fusion.get("tools_note").is_none());
}

#[tokio::test]
async fn strict_citations_remove_what_nobody_retrieved_and_streams_carry_annotations() {
    let (_sim, gw, _site) = setup().await;
    let mut request = fusion_request(json!({"id": "fusion", "citations": "strict"}));
    request["stream"] = json!(true);
    let response = gw.post(&request).await;
    assert_eq!(response.status(), 200);
    let (data, _) = sse(response).await;
    let text = common::content(&data);
    assert_eq!(
        text,
        "Tides are the Moon's pull [1], from 384,400 km away [2]; see  and ."
    );
    let chunks: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let annotated = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"].get("annotations").is_some())
        .unwrap();
    assert_eq!(
        annotated["choices"][0]["delta"]["annotations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last["fusion"]["unverified_citations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_empty_tools_list_turns_research_off() {
    let (sim, gw, _site) = setup().await;
    let body: Value = gw
        .post(&fusion_request(json!({"id": "fusion", "tools": []})))
        .await
        .json()
        .await
        .unwrap();
    let p3 = requests_for(&sim, "p3");
    assert!(p3[0].get("tools").is_none());
    assert_eq!(p3[0]["messages"][0]["role"], "user", "no research note");
    assert!(body["fusion"]["sources"].as_array().unwrap().is_empty());
    let e = bad_request(
        &gw,
        &fusion_request(
            json!({"id": "fusion", "tools": [{"type": "web_search", "parameters": {"colour": 1}}]}),
        ),
    )
    .await;
    assert!(
        e.starts_with("plugins[0].tools[0].parameters: unknown field"),
        "{e}"
    );
}

#[tokio::test]
async fn server_tools_run_the_loop_for_a_plain_model_and_sum_its_usage() {
    let (sim, gw, site) = setup().await;
    let tides = format!("http://{site}/tides");
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {}}}});
    let request = json!({"model": "sim/agent",
        "messages": [{"role": "user", "content": "Why are there tides?"}],
        "tools": [weather, {"type": "openrouter:web_search"}, {"type": "quorate:web_fetch"}]});
    let response = gw.post(&request).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let first = &requests_for(&sim, "agent")[0];
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["get_weather", "web_search", "web_fetch"]);
    let message = &body["choices"][0]["message"];
    assert!(message["content"]
        .as_str()
        .unwrap()
        .starts_with("See [tides]"));
    assert_eq!(
        message["annotations"][0]["url_citation"]["url"],
        tides.as_str()
    );
    let research = &body["research"];
    assert_eq!(research["tool_calls"], 1);
    assert!(urls(&research["sources"]).contains(&tides));
    assert_eq!(
        research["unverified_citations"],
        json!(["https://fake.example/x"])
    );
    assert_eq!(body["usage"]["cost"].as_f64(), Some(0.02), "both turns");

    let refused = gw
        .post(
            &json!({"model": "sim/agent", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "quorate:web_browse"}]}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let e: Value = refused.json().await.unwrap();
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("tools[0].type: quorate:web_browse"));
}

#[tokio::test]
async fn server_tools_stream_the_answer_with_usage_and_sources() {
    for include_usage in [false, true] {
        // A fresh simulator each time: the agent's script is a sequence.
        let (_sim, gw, site) = setup().await;
        let request = json!({"model": "sim/agent", "stream": true,
            "stream_options": {"include_usage": include_usage},
            "messages": [{"role": "user", "content": "Why are there tides?"}],
            "tools": [{"type": "quorate:web_search"}]});
        let response = gw.post(&request).await;
        assert_eq!(response.status(), 200);
        let (data, _) = sse(response).await;
        assert!(common::content(&data).starts_with("See [tides]"));
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert!(urls(&last["research"]["sources"]).contains(&format!("http://{site}/tides")));
        if include_usage {
            assert_eq!(last["usage"]["cost"].as_f64(), Some(0.02));
        } else {
            assert_eq!(last["choices"][0]["finish_reason"], "stop");
        }
    }
}

/// In a panel mixing models with and without tools, only those without wait for the prefetch.
#[tokio::test]
async fn members_with_tools_start_without_waiting_for_the_prefetch() {
    let site = site_with(Duration::from_millis(800)).await;
    let (_sim, addr) = sim(&scripts(site)).await;
    let config = research_config(addr, site)
        + "\n[models.\"sim/reader\"]\nprovider = \"sim\"\nupstream = \"p3\"\nsupports_tools = false\n";
    let gw = start(&config, &[]).await;
    let mut request = fusion_request(json!({"id": "fusion", "stream_progress": true,
        "analysis_models": ["sim/p3", "sim/reader"]}));
    request["stream"] = json!(true);
    let (data, _) = sse(gw.post(&request).await).await;
    let chunks: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let events: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.get("fusion_event"))
        .collect();
    let at = |kind: &str, model: Option<&str>| {
        events
            .iter()
            .position(|e| e["type"] == kind && model.is_none_or(|m| e["model"] == m))
            .unwrap_or_else(|| panic!("no {kind} event for {model:?}: {events:?}"))
    };
    let prefetched = at("prefetch_done", None);
    assert!(at("member_done", Some("sim/p3")) < prefetched, "{events:?}");
    assert!(
        at("member_started", Some("sim/reader")) > prefetched,
        "{events:?}"
    );
    let report = chunks.iter().rev().find_map(|c| c.get("fusion")).unwrap();
    let reader = &report["panel"][1];
    assert_eq!(reader["model"], "sim/reader");
    assert_eq!(reader["sources"][0]["via"], "prefetch", "{reader}");
    assert_eq!(report["panel"][0]["sources"], json!([]));
}

/// A folder with two documents, indexed: one answers the lighthouse question with a year the
/// model cannot know on its own.
fn lighthouse_index(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = std::env::temp_dir().join(format!("quorate-{name}-{}", std::process::id()));
    let (docs, index_dir) = (root.join("docs"), root.join("index"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("lighthouse.md"),
        "# Lindesnes lighthouse\n\nLindesnes lighthouse stands at the southern tip of Norway. \
         It is the oldest lighthouse in Norway: it was first lit in 1656.\n\n\
         The current tower was built in 1915 and is 16 metres tall.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("bread.md"),
        "# Sourdough\n\nSourdough bread needs a starter.\n",
    )
    .unwrap();
    let index = quorate_tools::search::LocalIndex::open(&index_dir).unwrap();
    assert_eq!(index.add(&docs).unwrap().indexed, 2);
    (root, index_dir)
}

/// One real model at a time: two gateways decoding on two cores at once each run at a fraction
/// of their speed (llama.cpp's threads spin for cores the other holds).
static REAL_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lighthouse question through `quorate/fusion` on a gateway with `config`.
async fn ask_lighthouse(config: &str, plugin: Value) -> Value {
    let _alone = REAL_MODEL.lock().await;
    let gw = start(config, &[]).await;
    gw.post(
        &json!({"model": "quorate/fusion", "seed": 3, "plugins": [plugin],
        "messages": [{"role": "user", "content": "When was Lindesnes lighthouse first lit?"}]}),
    )
    .await
    .json()
    .await
    .unwrap()
}

/// A panel of the embedded model that cannot call tools (SmolLM2-135M, whose template has
/// none), with a local index: the gateway searches the question, reads the matching document and
/// puts its passage in the prompt.
#[tokio::test]
async fn a_local_panel_without_tools_gets_passages_from_the_local_index_on_the_real_model() {
    let (root, index_dir) = lighthouse_index("prefetch");
    let small = "\"local/smollm2-135m\"";
    let config = format!(
        "[fusion]\ndefault_preset = \"small\"\n\n[tools.web_search]\nbackend = \"local\"\nindex_dir = {:?}\n\n\
         [presets.small]\npanel = [{small}, {small}, {small}]\njudge = {small}\nsynthesizer = {small}\n\
         temperature = 0.4\nmax_completion_tokens = 200\n",
        index_dir.display().to_string()
    );
    let body = ask_lighthouse(&config, json!({"id": "fusion"})).await;
    let fusion = &body["fusion"];
    let panel = fusion["panel"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(panel.len(), 3, "{body}");
    for member in panel {
        assert_eq!(member["tool_calls"], 0, "the model gets no tools");
        let sources = member["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 1, "only the matching document: {sources:?}");
        assert_eq!(sources[0]["via"], "prefetch");
        assert!(sources[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/lighthouse.md"));
    }
    assert_eq!(fusion["sources"][0]["title"], "Lindesnes lighthouse");
    // The passage reached the model: the year it cannot know on its own shows up in answers.
    let grounded = panel
        .iter()
        .filter(|m| m["content"].as_str().unwrap_or_default().contains("1656"))
        .count();
    assert!(grounded >= 2, "{panel:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The same question on the default local model as it is configured: its chat template renders
/// tools, so each member searches the local index itself and answers from what it read.
#[tokio::test]
async fn the_local_preset_searches_the_local_index_itself_on_the_real_model() {
    let (root, index_dir) = lighthouse_index("agentic");
    let config = format!(
        "[fusion]\ndefault_preset = \"local\"\n\n[tools.web_search]\nbackend = \"local\"\nindex_dir = {:?}\n",
        index_dir.display().to_string()
    );
    // The 1.5B sometimes echoes the template's tool list (~150 tokens) before its call: room
    // for the call after it, or that member never searches.
    let plugin = json!({"id": "fusion", "max_completion_tokens": 400});
    let body = ask_lighthouse(&config, plugin).await;
    let fusion = &body["fusion"];
    let panel = fusion["panel"].as_array().unwrap();
    let searched: Vec<&Value> = panel
        .iter()
        .filter(|m| m["tool_calls"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(searched.len() >= 2, "members call web_search: {panel:?}");
    for member in &searched {
        let sources = member["sources"].as_array().unwrap();
        assert!(
            sources.iter().all(|s| s["via"] != "prefetch"),
            "{sources:?}"
        );
    }
    // What a small model makes of what it read varies; at least one member answers from it.
    let grounded = panel
        .iter()
        .filter(|m| m["content"].as_str().unwrap_or_default().contains("1656"))
        .count();
    assert!(grounded >= 1, "{panel:?}");
    let _ = std::fs::remove_dir_all(&root);
}
