//! `quorate eval` end to end: the real binary, `quorate-sim` as the systems and the grader (a
//! deterministic report), resumption after an interruption, and a small run on the local model.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{config, sim};
use serde_json::{json, Value};

fn datasets() -> Option<PathBuf> {
    let dir = std::env::var_os("QUORATE_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!("skipped: no datasets at {}", dir.display());
        None
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorate-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn quorate(config_file: Option<&Path>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate"));
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command
        .args(args)
        .env_remove("QUORATE_CONFIG")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .await
        .unwrap()
}

/// Asserts the command succeeded, showing its stderr when it did not.
fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The figures that must not depend on timing.
fn figures(summary: &Value) -> Value {
    let rows: Vec<Value> = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["system"],
                r["score"],
                r["ci"],
                r["axes"],
                r["pass_rate"],
                r["n"],
                r["failed"],
                r["cost_usd"],
                r["grading_cost_usd"],
                r["prompt_tokens"]
            ])
        })
        .collect();
    json!({"rows": rows, "notes": summary["notes"]})
}

fn draco_tasks(dir: &Path, n: usize) -> Vec<Value> {
    std::fs::read_to_string(dir.join("draco/test.jsonl"))
        .unwrap()
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn criteria(task: &Value) -> Vec<(String, i64, String)> {
    let rubric: Value = serde_json::from_str(task["answer"].as_str().unwrap()).unwrap();
    rubric["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let section = s["id"].as_str().unwrap().to_string();
            s["criteria"].as_array().unwrap().iter().map(move |c| {
                (
                    section.clone(),
                    c["weight"].as_i64().unwrap(),
                    c["requirement"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

/// With a grader that finds every criterion MET, a task scores clamp((Σ pos + Σ neg) / Σ pos).
fn all_met_score(criteria: &[(String, i64, String)], section: Option<&str>) -> f64 {
    let mine = criteria.iter().filter(|c| section.is_none_or(|s| c.0 == s));
    let (raw, pos) = mine.fold((0, 0), |(r, p), c| (r + c.1, p + c.1.max(0)));
    (raw as f64 / pos as f64).clamp(0.0, 1.0)
}

#[tokio::test]
async fn draco_with_the_simulator_scores_resumes_and_flags_quoted_rubrics() {
    let Some(data) = datasets() else { return };
    let tasks = draco_tasks(&data, 2);
    let quoted = criteria(&tasks[0])[0].2.clone();
    let (sim, addr) = sim(&[
        (
            "writer",
            json!({"reply": format!("A report. {quoted}. More analysis."), "cost": 0.01}),
        ),
        (
            "grader",
            json!({"json": {"explanation": "present", "criterion_status": "MET"}, "cost": 0.0001}),
        ),
    ])
    .await;
    let dir = temp("draco");
    let config_file = dir.join("quorate.toml");
    let extra = "[tools.web_search]\nbackend = \"off\"\n";
    std::fs::write(&config_file, config(addr, extra)).unwrap();
    let out = dir.join("out");
    let data_dir = data.display().to_string();
    let args = [
        "eval",
        "draco",
        "--system",
        "solo=sim/writer",
        "--grader",
        "sim/grader",
        "--tasks",
        "2",
        "--passes",
        "2",
        "--data-dir",
        &data_dir,
        "--out",
        out.to_str().unwrap(),
    ];
    let run = quorate(Some(&config_file), &args).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("verdicts") && stderr.contains("ETA"),
        "progress: {stderr}"
    );

    let first = summary(&out);
    let row = &first["rows"][0];
    let per_task: Vec<Vec<(String, i64, String)>> = tasks.iter().map(criteria).collect();
    let expected = per_task.iter().map(|c| all_met_score(c, None)).sum::<f64>() / 2.0;
    assert!(
        (row["score"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{row}"
    );
    let factual = per_task
        .iter()
        .map(|c| all_met_score(c, Some("factual-accuracy")))
        .sum::<f64>()
        / 2.0;
    assert!((row["axes"]["factual-accuracy"].as_f64().unwrap() - factual).abs() < 1e-9);
    let total: usize = per_task.iter().map(Vec::len).sum();
    let positive = per_task.iter().flatten().filter(|c| c.1 > 0).count();
    assert!((row["pass_rate"].as_f64().unwrap() - positive as f64 / total as f64).abs() < 1e-9);
    assert!((row["cost_usd"].as_f64().unwrap() - 0.02).abs() < 1e-9);
    let grading = row["grading_cost_usd"].as_f64().unwrap();
    assert!(
        (grading - total as f64 * 2.0 * 0.0001).abs() < 1e-9,
        "{grading}"
    );
    let verdicts = std::fs::read_to_string(out.join("verdicts.jsonl")).unwrap();
    assert_eq!(
        verdicts.lines().count(),
        total * 2,
        "one call per criterion and pass"
    );
    assert!(first["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("verbatim")));
    for name in ["report.md", "report.html"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(
            text.contains("solo") && text.contains("factual-accuracy"),
            "{name}"
        );
    }

    // The grader saw one criterion, its type, the task and the response; never a weight.
    let graded: Vec<Value> = sim
        .requests()
        .into_iter()
        .filter(|r| r.body["model"] == "grader")
        .map(|r| r.body)
        .collect();
    let prompt = graded[0]["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("<criterion_type>") && prompt.contains("<response>A report."));
    let second_task = tasks[1]["problem"].as_str().unwrap();
    for r in graded
        .iter()
        .map(|r| r["messages"][0]["content"].as_str().unwrap())
    {
        if r.contains(second_task) {
            let shown = per_task[1].iter().filter(|c| r.contains(&c.2)).count();
            assert_eq!(shown, 1, "one criterion per call, no siblings: {r}");
        }
    }
    assert!(graded.iter().any(|r| r["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("<criterion_type>negative</criterion_type>")));
    assert_eq!(graded[0]["response_format"]["type"], "json_schema");

    // A rerun has nothing to do; a run cut short mid-write resumes to the same report.
    let before: u64 = sim.stats().requests.values().sum();
    assert!(quorate(Some(&config_file), &args).await.status.success());
    assert_eq!(
        sim.stats().requests.values().sum::<u64>(),
        before,
        "nothing is asked again"
    );
    let lines: Vec<&str> = verdicts.lines().collect();
    let cut = format!(
        "{}\n{}",
        lines[..lines.len() / 2].join("\n"),
        &lines[lines.len() / 2][..20]
    );
    std::fs::write(out.join("verdicts.jsonl"), cut).unwrap();
    let rerun = quorate(Some(&config_file), &args).await;
    assert!(rerun.status.success());
    assert_eq!(figures(&summary(&out)), figures(&first));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn qa_scores_systems_and_votes() {
    let Some(data) = datasets() else { return };
    // The first GSM8K answer is 18: `right` gets it, `wrong` does not; the vote of two rights
    // and a wrong is right.
    let (_sim, addr) = sim(&[
        ("right", json!({"reply": "9 eggs × $2.\nAnswer: 18"})),
        ("wrong", json!({"reply": "Answer: 7"})),
    ])
    .await;
    let dir = temp("qa");
    let config_file = dir.join("quorate.toml");
    std::fs::write(&config_file, config(addr, "")).unwrap();
    let out = dir.join("out");
    let data_dir = data.display().to_string();
    let run = quorate(
        Some(&config_file),
        &[
            "eval",
            "qa",
            "--dataset",
            "gsm8k",
            "--limit",
            "1",
            "--system",
            "right=sim/right",
            "--system",
            "wrong=sim/wrong",
            "--system",
            "vote=vote:sim/right,sim/wrong,sim/right",
            "--data-dir",
            &data_dir,
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    succeeded(&run);
    let s = summary(&out);
    let scores: Vec<f64> = s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [1.0, 0.0, 1.0]);
    let bad = quorate(
        Some(&config_file),
        &[
            "eval",
            "qa",
            "--dataset",
            "mmlu",
            "--system",
            "sim/right",
            "--out",
            "/tmp/x",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown dataset \"mmlu\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--reuse-panel`: a system added later is applied to the panel answers already kept (no new
/// panel call upstream), the solo answer is the first member's, and the report pairs every
/// system with the solo and the vote baselines.
#[tokio::test]
async fn qa_reuse_panel_answers_the_panel_once_and_pairs_the_systems() {
    let Some(data) = datasets() else { return };
    let (sim, addr) = sim(&[
        ("right", json!({"reply": "Answer: 18"})),
        ("wrong", json!({"reply": "Answer: 7"})),
    ])
    .await;
    let dir = temp("reuse");
    let config_file = dir.join("quorate.toml");
    std::fs::write(&config_file, config(addr, "")).unwrap();
    let out = dir.join("out");
    let (data_dir, out_dir) = (data.display().to_string(), out.display().to_string());
    let panel = "sim/right,sim/wrong,sim/right>sim/right";
    let (vote, mixture) = (
        format!("vote=fusion:{panel}?strategy=vote"),
        format!("mixture=fusion:{panel}?strategy=mixture"),
    );
    let run = |systems: Vec<String>| {
        let mut args: Vec<String> = [
            "eval",
            "qa",
            "--dataset",
            "gsm8k",
            "--limit",
            "2",
            "--seed",
            "3",
            "--reuse-panel",
            "--temperature",
            "0.5",
            "--max-tokens",
            "64",
            "--data-dir",
            &data_dir,
            "--out",
            &out_dir,
        ]
        .map(String::from)
        .to_vec();
        for s in systems {
            args.extend(["--system".to_string(), s]);
        }
        let config_file = config_file.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            quorate(Some(&config_file), &args).await
        }
    };
    let calls = |model: &str| sim.stats().requests.get(model).copied().unwrap_or(0);
    succeeded(&run(vec!["solo=sim/right".into(), mixture.clone()]).await);
    // Per question: slots 0 and 2 of `right` (the solo answer is slot 0: same model, seed and
    // sampling settings), the mixture's synthesis on `right`, and slot 1 of `wrong`.
    assert_eq!((calls("right"), calls("wrong")), (6, 2));
    let kept = std::fs::read_to_string(out.join("panel.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 6);
    succeeded(&run(vec!["solo=sim/right".into(), mixture, vote.clone()]).await);
    // The vote is taken over the kept panel: nothing new upstream.
    assert_eq!((calls("right"), calls("wrong")), (6, 2));
    let s = summary(&out);
    let paired = s["paired"].as_array().unwrap();
    let pair = |system: &str, baseline: &str| {
        paired
            .iter()
            .find(|p| p["system"] == system && p["baseline"] == baseline)
            .unwrap_or_else(|| panic!("no {system} against {baseline} in {paired:?}"))
    };
    let vote_vs_solo = pair("vote", "solo");
    assert_eq!(vote_vs_solo["n"], 2);
    assert_eq!(
        (
            &vote_vs_solo["diff"],
            &vote_vs_solo["wins"],
            &vote_vs_solo["losses"]
        ),
        (&json!(0.0), &json!(0), &json!(0)),
        "the majority is `right`'s answer, as solo's"
    );
    assert_eq!(vote_vs_solo["p_value"], 1.0);
    pair("mixture", "vote");
    // A greedy solo added later: its own answers (temperature 0 is another request), asked
    // once per question at 0, and a baseline every system is paired with.
    let greedy = "greedy=sim/right?temperature=0".to_string();
    succeeded(&run(vec!["solo=sim/right".into(), greedy, vote]).await);
    assert_eq!((calls("right"), calls("wrong")), (8, 2));
    let temperatures: Vec<Value> = sim
        .requests()
        .iter()
        .filter(|r| r.body["model"] == "right")
        .map(|r| r.body["temperature"].clone())
        .collect();
    assert_eq!(
        temperatures.iter().filter(|t| **t == json!(0.0)).count(),
        2,
        "{temperatures:?}"
    );
    let s = summary(&out);
    let paired = s["paired"].as_array().unwrap();
    for (system, baseline) in [("vote", "greedy"), ("solo", "greedy"), ("greedy", "solo")] {
        assert!(
            paired
                .iter()
                .any(|p| p["system"] == system && p["baseline"] == baseline),
            "no {system} against {baseline} in {paired:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Paired on the same questions"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local model as the system and as the grader, on DRACO's smallest rubric.
#[tokio::test]
async fn draco_runs_on_the_local_model_as_system_and_grader() {
    let Some(data) = datasets() else { return };
    let dir = temp("draco-local");
    let out = dir.join("out");
    let data_dir = data.display().to_string();
    let run = quorate(
        None,
        &[
            "eval",
            "draco",
            "--system",
            "solo=local/smollm2-135m",
            "--grader",
            "local/smollm2-135m",
            "--task-ids",
            "b3d9ac35-7d3f-4fd5-925e-bbaa40c0de51",
            "--max-tokens",
            "96",
            "--no-research",
            "--data-dir",
            &data_dir,
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    succeeded(&run);
    let s = summary(&out);
    let row = &s["rows"][0];
    assert_eq!(row["n"], 1);
    let score = row["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    let verdicts = std::fs::read_to_string(out.join("verdicts.jsonl")).unwrap();
    assert_eq!(verdicts.lines().count(), 16, "the task's 16 criteria");
    for line in verdicts.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v["status"] == "MET" || v["status"] == "UNMET",
            "grammar-enforced: {v}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
