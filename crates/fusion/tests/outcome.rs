//! A run read as types: the events it yields in order and the outcome it ends with, against the
//! simulator's scripted panel, judge and synthesizer (in-process, no server).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use quorate_api::{Message, ModelRequest, Role};
use quorate_config::Config;
use quorate_fusion::{FailureReason, Fusion, FusionError, FusionEvent, MemberStatus, RunOutcome};
use quorate_providers::{RequestCtx, Router};
use quorate_sim::Sim;
use serde_json::json;

/// A `t` preset with `panel`, a scripted judge and synthesizer, on a fresh simulator.
async fn fusion(panel: &[&str]) -> (Sim, Fusion) {
    let analysis = json!({"consensus": ["Paris"], "contradictions": [], "partial_coverage": [],
        "unique_insights": [], "blind_spots": []});
    let scripts = [
        (
            "p1",
            json!({"reply": "Paris is the capital.", "cost": 0.001}),
        ),
        ("p2", json!({"reply": "It is Paris.", "cost": 0.002})),
        ("r500", json!({"fault": "status", "status": 500})),
        ("judge", json!({"json": analysis, "cost": 0.0005})),
        ("synth", json!({"reply": "Paris.", "cost": 0.00025})),
        ("empty", json!({"reply": ""})),
        (
            "once_empty",
            json!({"sequence": [{"reply": " "}, {"reply": "Paris, at last."}]}),
        ),
    ];
    let scripts: HashMap<_, _> = scripts
        .into_iter()
        .map(|(name, v)| (name.to_string(), serde_json::from_value(v).unwrap()))
        .collect();
    let sim = Sim::new(scripts);
    let addr = sim.spawn("127.0.0.1:0").await.unwrap();
    let mut toml = format!(
        "[providers.sim]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmax_retries = 0\n\
         [presets.t]\npanel = {panel:?}\njudge = \"sim/judge\"\nsynthesizer = \"sim/synth\"\n"
    );
    for model in ["p1", "p2", "r500", "judge", "synth", "empty", "once_empty"] {
        toml.push_str(&format!(
            "[models.\"sim/{model}\"]\nprovider = \"sim\"\nupstream = \"{model}\"\n"
        ));
    }
    let config = Config::from_toml(&toml, "test").unwrap();
    (sim, Fusion::new(Router::new(config).unwrap()).unwrap())
}

fn request() -> ModelRequest {
    ModelRequest::new(
        "quorate/fusion:t",
        vec![Message::new(Role::User, "Capital of France?")],
    )
}

/// Plans and reads one run of `req` to its end.
async fn run(
    fusion: &Fusion,
    ctx: &RequestCtx,
    req: ModelRequest,
) -> Result<RunOutcome, FusionError> {
    let plan = fusion.plan(ctx, &req).unwrap().unwrap();
    RunOutcome::read(fusion.run(ctx, plan, req)).await
}

fn slot_of(event: &FusionEvent) -> Option<usize> {
    match event {
        FusionEvent::MemberStarted { slot, .. }
        | FusionEvent::MemberDone { slot, .. }
        | FusionEvent::MemberFailed { slot, .. } => Some(*slot),
        _ => None,
    }
}

#[tokio::test]
async fn a_run_yields_typed_events_in_order_and_ends_in_one_outcome() {
    let (sim, fusion) = fusion(&["sim/p1", "sim/p2", "sim/r500"]).await;
    let req = request();
    let ctx = RequestCtx::new("gen-test-1");
    let outcome = run(&fusion, &ctx, req).await.unwrap();
    let events = &outcome.events;
    let position = |wanted: &dyn Fn(&FusionEvent) -> bool| events.iter().position(wanted).unwrap();

    let judge_started = position(&|e| matches!(e, FusionEvent::JudgeStarted { .. }));
    for slot in 0..3 {
        let started = position(&|e| {
            matches!(e, FusionEvent::MemberStarted { .. }) && slot_of(e) == Some(slot)
        });
        let ended = position(&|e| {
            matches!(
                e,
                FusionEvent::MemberDone { .. } | FusionEvent::MemberFailed { .. }
            ) && slot_of(e) == Some(slot)
        });
        assert!(
            started < ended && ended < judge_started,
            "slot {slot}: {events:?}"
        );
    }
    let report = outcome.report.as_ref().unwrap();
    let failed = &report.panel[2];
    assert!(events.contains(&FusionEvent::MemberFailed {
        slot: 2,
        model: "sim/r500".into(),
        reason: "upstream_error".into(),
        error: failed.error.as_ref().unwrap().message.clone(),
        latency_ms: failed.latency_ms,
    }));
    let judge_done = position(&|e| {
        matches!(
            e,
            FusionEvent::JudgeDone {
                ok: true,
                failure_reason: None,
                ..
            }
        )
    });
    let synthesis = position(&|e| matches!(e, FusionEvent::SynthesisStarted { .. }));
    assert!(judge_started < judge_done && judge_done < synthesis);
    assert_eq!(
        synthesis,
        events.len() - 1,
        "the synthesis is the last stage"
    );

    let statuses: Vec<MemberStatus> = report.panel.iter().map(|m| m.status).collect();
    assert_eq!(
        statuses,
        [MemberStatus::Ok, MemberStatus::Ok, MemberStatus::Failed]
    );
    assert_eq!(report.failed_models, ["sim/r500"]);
    assert!(report.degraded);
    assert_eq!(report.analysis.as_ref().unwrap().consensus, ["Paris"]);
    assert_eq!(outcome.text, "Paris.");

    let completion = outcome.into_completion("quorate/fusion:t".into()).unwrap();
    let cost = completion.usage.unwrap().cost.unwrap();
    assert_eq!(
        cost.to_string(),
        "0.00375",
        "0.001 + 0.002 + 0.0005 + 0.00025"
    );
    assert_eq!(completion.extra["fusion"]["panel"][2]["status"], "failed");

    // Every inner call carries the request's id and says it comes from inside a run.
    let calls = sim.requests();
    assert_eq!(calls.len(), 5, "three members, the judge, the synthesis");
    for call in calls {
        assert_eq!(
            call.headers.get("x-request-id").map(String::as_str),
            Some("gen-test-1")
        );
        assert_eq!(
            call.headers
                .get("x-quorate-fusion-depth")
                .map(String::as_str),
            Some("1")
        );
    }
    assert!(ctx.upstream_wait() > std::time::Duration::ZERO);
}

#[tokio::test]
async fn a_failed_run_is_a_typed_error_with_its_report() {
    let (_sim, fusion) = fusion(&["sim/r500", "sim/r500"]).await;
    let req = request();
    let ctx = RequestCtx::new("gen-test-2");
    let error = run(&fusion, &ctx, req).await.unwrap_err();
    assert_eq!(error.reason, Some(FailureReason::AllPanelsFailed));
    assert_eq!(error.report.unwrap().panel.len(), 2);
}

/// A prompt template that fails to render is the gateway's fault: a 500, not a 400.
#[tokio::test]
async fn a_template_that_fails_to_render_is_an_internal_error() {
    let dir = std::env::temp_dir().join(format!("quorate-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("synthesis.j2"), "{{ no_such_function() }}").unwrap();
    let (_sim, fusion) = fusion(&["sim/p1"]).await;
    let mut config = fusion.router().config().clone();
    config.fusion.prompts_dir = Some(dir.clone());
    let fusion = Fusion::new(Router::new(config).unwrap()).unwrap();
    let req = request();
    let ctx = RequestCtx::new("gen-test-2");
    let error = run(&fusion, &ctx, req).await.unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(error.status(), 500, "{error}");
    assert!(
        error.to_string().contains("prompt template synthesis.j2"),
        "{error}"
    );
}

/// Asks the `t` preset's panel with `synthesizer`, the judge kept.
fn with_synthesizer(synthesizer: &str) -> ModelRequest {
    let mut req = request();
    req.plugins = vec![json!({"id": "fusion", "model": synthesizer, "judge": "sim/judge"})];
    req
}

/// An empty final answer is asked for once more; empty twice, it is a typed failure, never an
/// empty success.
#[tokio::test]
async fn an_empty_synthesis_is_retried_then_a_typed_failure() {
    let (sim, fusion) = fusion(&["sim/p1"]).await;
    let ctx = RequestCtx::new("gen-test-3");
    let req = with_synthesizer("sim/once_empty");
    let outcome = run(&fusion, &ctx, req).await.unwrap();
    assert_eq!(outcome.text, "Paris, at last.");
    assert_eq!(sim.stats().requests["once_empty"], 2);

    let req = with_synthesizer("sim/empty");
    let error = run(&fusion, &ctx, req).await.unwrap_err();
    assert_eq!(error.reason, Some(FailureReason::EmptyCompletion));
    assert_eq!(error.status(), 502);
    let report = error.report.unwrap();
    assert_eq!(report.failure_reason, Some(FailureReason::EmptyCompletion));
    assert_eq!(report.failed_models, ["sim/empty"]);
    assert_eq!(sim.stats().requests["empty"], 2);
}
