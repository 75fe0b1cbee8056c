//! Fusion strategies end to end: the real `quorate serve` in front of `quorate-sim`. `vote`
//! returns the majority member's own answer and stops the panel once the majority is certain
//! (the slow member is cancelled upstream); a tie goes on to the judge and the synthesis.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, content, eventually, sim, sse, start, Gateway};
use quorate_sim::Sim;
use serde_json::{json, Value};

const MAJORITY: &str = "She sells 9 eggs at $2.\nAnswer: 18";

async fn setup() -> (Sim, Gateway) {
    let analysis = json!({"consensus": [], "contradictions": [], "partial_coverage": [],
        "unique_insights": [], "blind_spots": []});
    let (sim, addr) = sim(&[
        ("a18", json!({"reply": MAJORITY})),
        ("b18", json!({"reply": "18 dollars.\nAnswer: $18.00"})),
        ("slow7", json!({"reply": "Answer: 7", "ttft_ms": 5000})),
        ("c7", json!({"reply": "Answer: 7"})),
        (
            "cited18",
            json!({"reply": "See https://nowhere.example/eggs for prices.\nAnswer: 18"}),
        ),
        ("p1", json!({"reply": "Paris is the capital of France."})),
        ("p2", json!({"reply": "The capital of France is Paris."})),
        ("slowp", json!({"reply": "Paris.", "ttft_ms": 5000})),
        (
            "lyon",
            json!({"reply": "Lyon, on the Rhone, is the largest city of the south."}),
        ),
        ("judge", json!({"json": analysis})),
        (
            "picker",
            json!({"json": {"best": "#2", "reason": "It states its answer."}}),
        ),
        ("synth", json!({"reply": "Fused: 18 or 7."})),
    ])
    .await;
    let mut extra = String::from(
        "[tools.web_search]\nbackend = \"off\"\n[tools.web_fetch]\nenabled = false\n\
         [presets.v]\npanel = [\"sim/a18\", \"sim/b18\", \"sim/slow7\"]\njudge = \"sim/judge\"\n\
         synthesizer = \"sim/synth\"\nstrategy = \"vote\"\ntotal_timeout_s = 20\n\
         member_timeout_s = 10\n\
         [presets.f]\npanel = [\"sim/a18\", \"sim/c7\"]\njudge = \"sim/judge\"\n\
         synthesizer = \"sim/synth\"\n\
         [presets.auto]\npanel = [\"sim/p1\", \"sim/p2\", \"sim/slowp\"]\njudge = \"sim/judge\"\n\
         synthesizer = \"sim/synth\"\nstrategy = \"auto\"\nagreement = 0.7\n\
         total_timeout_s = 20\nmember_timeout_s = 10\n\
         [presets.select]\npanel = [\"sim/a18\", \"sim/c7\"]\njudge = \"sim/picker\"\n\
         synthesizer = \"sim/synth\"\nstrategy = \"select\"\n",
    );
    for model in [
        "a18", "b18", "slow7", "c7", "cited18", "p1", "p2", "slowp", "lyon", "judge", "picker",
        "synth",
    ] {
        extra.push_str(&format!(
            "[models.\"sim/{model}\"]\nprovider = \"sim\"\nupstream = \"{model}\"\n"
        ));
    }
    let gw = start(&config(addr, &extra), &[]).await;
    (sim, gw)
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Eggs at $2: how much?"}]})
}

#[tokio::test]
async fn vote_returns_the_majority_members_answer_and_cancels_the_slow_one() {
    let (sim, gw) = setup().await;
    let started = Instant::now();
    let response = gw.post(&ask("quorate/fusion:v")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait for the slow member"
    );
    assert_eq!(
        body["choices"][0]["message"]["content"], MAJORITY,
        "verbatim"
    );
    let fusion = &body["fusion"];
    assert_eq!(fusion["strategy"], "vote");
    assert_eq!(fusion["vote"]["outcome"], "majority");
    assert_eq!(fusion["vote"]["winner"], "18");
    assert_eq!(fusion["vote"]["votes"], 2);
    assert_eq!(fusion["early_exit"]["cancelled"], json!([2]));
    assert_eq!(fusion["panel"][2]["status"], "cancelled");
    assert_eq!(
        fusion["failed_models"],
        json!([]),
        "cancelled is not failed"
    );
    assert_eq!(fusion["degraded"], false);
    assert!(fusion["analysis"].is_null(), "no judge ran");
    let stats = sim.stats();
    assert_eq!(stats.requests.get("judge"), None);
    assert_eq!(stats.requests.get("synth"), None);
    assert!(
        eventually(|| sim.stats().cancelled >= 1).await,
        "the slow member's call was dropped"
    );
}

#[tokio::test]
async fn vote_streams_its_early_exit_as_a_progress_event() {
    let (_sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:v");
    body["stream"] = json!(true);
    body["plugins"] = json!([{"id": "fusion", "stream_progress": true}]);
    let (data, _) = sse(gw.post(&body).await).await;
    assert_eq!(content(&data), MAJORITY);
    let chunks: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let stopped: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.get("fusion_event"))
        .filter(|e| e["type"] == "panel_stopped")
        .collect();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["cancelled"], json!([2]));
}

#[tokio::test]
async fn a_tie_goes_to_the_judge_and_the_synthesis() {
    let (sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "vote"}]);
    let response = gw.post(&body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Fused: 18 or 7.");
    assert_eq!(body["fusion"]["vote"]["outcome"], "tie");
    assert_eq!(body["fusion"]["vote"]["ballots"], json!(["18", "7"]));
    assert_eq!(sim.stats().requests["judge"], 1);
}

/// The majority member's answer goes out as written, but its citations are checked like a
/// synthesis's: with `strict`, a URL no member retrieved is removed and reported.
#[tokio::test]
async fn a_vote_answer_has_its_citations_checked() {
    let (_sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "vote", "citations": "strict",
        "analysis_models": ["sim/cited18", "sim/b18"]}]);
    let response = gw.post(&body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !text.contains("nowhere.example") && text.ends_with("Answer: 18"),
        "{text}"
    );
    assert_eq!(body["fusion"]["vote"]["outcome"], "majority");
    assert_eq!(
        body["fusion"]["unverified_citations"],
        json!(["https://nowhere.example/eggs"])
    );
}

#[tokio::test]
async fn strategies_are_checked_where_they_are_asked_for() {
    let (_sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "guess"}]);
    let response = gw.post(&body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("plugins[0]") && message.contains("guess"),
        "{message}"
    );

    let mut body = ask("sim/a18");
    body["tools"] = json!([{"type": "quorate:fusion", "parameters": {"strategy": "vote"}}]);
    let response = gw.post(&body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("tools[0].parameters.strategy"),
        "{message}"
    );
}

/// `auto`: two of three prose answers say the same in other words, so the panel stops there,
/// the slow member is cancelled, the judge and the synthesis never run, and the report says what
/// that saved.
#[tokio::test]
async fn auto_stops_when_a_majority_agrees_and_skips_the_judge() {
    let (sim, gw) = setup().await;
    let started = Instant::now();
    let body: Value = gw
        .post(&ask("quorate/fusion:auto"))
        .await
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "{body}");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        [
            "Paris is the capital of France.",
            "The capital of France is Paris."
        ]
        .contains(&answer),
        "a member's answer, verbatim: {answer}"
    );
    let fusion = &body["fusion"];
    assert_eq!(fusion["strategy"], "auto");
    assert_eq!(fusion["agreement"]["agreed"], true);
    assert_eq!(fusion["agreement"]["group"], json!([0, 1]));
    assert_eq!(fusion["early_exit"]["cancelled"], json!([2]));
    let saved = &fusion["agreement"]["saved"];
    assert_eq!(saved["cancelled_members"], 1);
    assert!(saved["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(fusion["analysis"].is_null());
    assert_eq!(sim.stats().requests.get("judge"), None);
    assert_eq!(sim.stats().requests.get("synth"), None);

    // The run store sums what early exits saved, for the Usage page.
    let total =
        saved["prompt_tokens"].as_u64().unwrap() + saved["completion_tokens"].as_u64().unwrap();
    let mut usage = Value::Null;
    for _ in 0..200 {
        usage = gw.get_json("/v1/usage").await;
        if usage["rows"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(usage["rows"][0]["saved_tokens"], total, "{usage}");
}

/// `auto` without agreement is `fuse`: the judge and the synthesis run as usual.
#[tokio::test]
async fn auto_without_agreement_fuses() {
    let (sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "auto",
        "analysis_models": ["sim/p1", "sim/lyon"]}]);
    let body: Value = gw.post(&body).await.json().await.unwrap();
    let fusion = &body["fusion"];
    assert_eq!(fusion["strategy"], "auto", "{body}");
    assert_eq!(fusion["agreement"]["agreed"], false);
    assert!(fusion["early_exit"].is_null());
    assert_eq!(body["choices"][0]["message"]["content"], "Fused: 18 or 7.");
    assert_eq!(sim.stats().requests.get("judge"), Some(&1));
}

/// `auto` with `exit_quorum` at the panel's size: two agreeing answers of three no longer end
/// the run (it fuses), three do, and then nothing is cancelled: only the judge and synthesis
/// are saved.
#[tokio::test]
async fn a_unanimous_exit_quorum_fuses_a_split_panel() {
    let (sim, gw) = setup().await;
    let run = |panel: [&str; 3]| {
        let mut body = ask("quorate/fusion:auto");
        body["plugins"] = json!([{"id": "fusion", "exit_quorum": 3, "analysis_models": panel}]);
        body
    };
    let split: Value = gw
        .post(&run(["sim/p1", "sim/p2", "sim/lyon"]))
        .await
        .json()
        .await
        .unwrap();
    let fusion = &split["fusion"];
    assert_eq!(fusion["agreement"]["agreed"], false, "{split}");
    assert_eq!(fusion["agreement"]["quorum"], 3);
    assert_eq!(split["choices"][0]["message"]["content"], "Fused: 18 or 7.");
    assert_eq!(sim.stats().requests.get("judge"), Some(&1));

    let all: Value = gw
        .post(&run(["sim/p1", "sim/p2", "sim/p1"]))
        .await
        .json()
        .await
        .unwrap();
    let fusion = &all["fusion"];
    assert_eq!(fusion["agreement"]["agreed"], true, "{all}");
    assert_eq!(fusion["agreement"]["group"], json!([0, 1, 2]));
    assert_eq!(fusion["agreement"]["saved"]["cancelled_members"], 0);
    assert!(fusion["early_exit"].is_null());
    assert_eq!(
        sim.stats().requests.get("judge"),
        Some(&1),
        "no second judge"
    );

    let mut wrong = run(["sim/p1", "sim/p2", "sim/p1"]);
    wrong["plugins"][0]["exit_quorum"] = json!(1);
    let response = gw.post(&wrong).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("plugins[0].exit_quorum: must be from 2"),
        "{message}"
    );
}

/// `mixture`: no judge; the synthesizer gets the raw answers.
#[tokio::test]
async fn mixture_synthesizes_from_the_raw_answers_without_a_judge() {
    let (sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "mixture"}]);
    let body: Value = gw.post(&body).await.json().await.unwrap();
    let fusion = &body["fusion"];
    assert_eq!(fusion["strategy"], "mixture", "{body}");
    assert!(fusion["analysis"].is_null());
    assert_eq!(
        fusion["failure_reason"],
        Value::Null,
        "no judge is no failure"
    );
    assert_eq!(body["choices"][0]["message"]["content"], "Fused: 18 or 7.");
    assert_eq!(sim.stats().requests.get("judge"), None);
    assert_eq!(sim.stats().requests.get("synth"), Some(&1));
    let synth = sim
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "synth")
        .unwrap();
    let text = synth.body["messages"].to_string();
    assert!(
        text.contains(MAJORITY.split('\n').next().unwrap()),
        "{text}"
    );
}

/// `select`: the judge names an answer, and that answer is returned verbatim; no synthesis.
#[tokio::test]
async fn select_returns_the_answer_the_judge_names() {
    let (sim, gw) = setup().await;
    let body: Value = gw
        .post(&ask("quorate/fusion:select"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"], "Answer: 7",
        "{body}"
    );
    let fusion = &body["fusion"];
    assert_eq!(fusion["strategy"], "select");
    assert_eq!(
        fusion["selection"],
        json!({"label": "#2", "slot": 1, "reason": "It states its answer.", "judge": "sim/picker"})
    );
    assert!(fusion["usage"]["judge"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(sim.stats().requests.get("synth"), None);
    let picker = sim
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "picker")
        .unwrap();
    assert_eq!(
        picker.body["response_format"]["json_schema"]["schema"]["properties"]["best"]["enum"],
        json!(["#1", "#2"]),
        "the choice is held to the labels"
    );
}

/// `select` whose judge names no answer falls back to `fuse`.
#[tokio::test]
async fn select_without_a_choice_fuses() {
    let (sim, gw) = setup().await;
    let mut body = ask("quorate/fusion:f");
    body["plugins"] = json!([{"id": "fusion", "strategy": "select"}]);
    let body: Value = gw.post(&body).await.json().await.unwrap();
    let fusion = &body["fusion"];
    assert!(fusion["selection"].is_null(), "{body}");
    assert_eq!(fusion["judge_attempts"][0]["ok"], false);
    assert_eq!(body["choices"][0]["message"]["content"], "Fused: 18 or 7.");
    assert_eq!(sim.stats().requests.get("synth"), Some(&1));
}
