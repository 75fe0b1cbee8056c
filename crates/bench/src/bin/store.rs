//! `quorate-bench-store`: the run store's sustained insert rate. Records shaped like a fusion
//! run's (three members' answers, an analysis, a timeline: about 4 KB of JSON) are queued as
//! fast as the store takes them, in bursts the queue can hold, and the rate is the rows written
//! per second until the last one is on disk (or in PostgreSQL).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use quorate_store::{Attempt, Detail, Kind, Options, Run, Store, Summary, TimedEvent};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Sustained insert rate of the run store (SQLite, and PostgreSQL if given)")]
struct Args {
    /// Rows to write per backend.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Also measure this PostgreSQL (`postgres://...`).
    #[arg(long)]
    postgres: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::env::temp_dir().join(format!("quorate-bench-store-{}.db", std::process::id()));
    let mut backends = vec![("SQLite (WAL)", format!("sqlite://{}", file.display()))];
    if let Some(url) = &args.postgres {
        backends.push(("PostgreSQL", url.clone()));
    }
    println!("| backend | rows | seconds | rows/s | dropped |");
    println!("|---|---:|---:|---:|---:|");
    for (name, url) in backends {
        let (seconds, dropped) = measure(&url, args.rows).await?;
        println!(
            "| {name} | {} | {seconds:.2} | {:.0} | {dropped} |",
            args.rows,
            args.rows as f64 / seconds
        );
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    Ok(())
}

/// Seconds to write `rows` fusion-sized rows, and how many the queue dropped.
async fn measure(url: &str, rows: u64) -> anyhow::Result<(f64, u64)> {
    let queue = 10_000;
    let store = Store::open(&Options {
        url: url.to_string(),
        content: true,
        retention_days: None,
        queue,
    })
    .await?;
    let tag = std::process::id();
    let started = Instant::now();
    for i in 0..rows {
        // Keep within the queue: a full queue drops, and the figure is the writer's pace.
        while store.queued() >= queue - 1 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        store.record(run(&format!("bench-{tag}-{i}"), i));
    }
    store.close(Duration::from_secs(600)).await;
    let seconds = started.elapsed().as_secs_f64();
    let written = store.counters().written.load(Ordering::Relaxed);
    anyhow::ensure!(written == rows, "{written} of {rows} rows written");
    Ok((seconds, store.counters().dropped.load(Ordering::Relaxed)))
}

fn run(id: &str, i: u64) -> Run {
    let answer = "Paris is the capital of France; it lies on the Seine. ".repeat(6);
    let member = |slot: u64| {
        json!({"slot": slot, "model": "openrouter/m", "status": "ok", "content": answer,
               "usage": {"prompt_tokens": 120, "completion_tokens": 80}, "latency_ms": 900 + slot})
    };
    Run {
        summary: Summary {
            id: id.to_string(),
            created_ms: 1_800_000_000_000 + i as i64,
            caller: Some("bench".into()),
            surface: "chat".into(),
            model: "quorate/fusion".into(),
            answered_by: Some("openrouter/m".into()),
            kind: Kind::Fusion,
            status: 200,
            latency_ms: 2500,
            prompt_tokens: 900,
            completion_tokens: 400,
            cost_usd: Some(0.0123),
            ..Summary::default()
        },
        detail: Detail {
            attempts: (0..5)
                .map(|n| Attempt {
                    model: format!("openrouter/m{n}"),
                    provider: "openrouter".into(),
                    status: 200,
                    reason: "ok".into(),
                    elapsed_ms: 800,
                    ..Attempt::default()
                })
                .collect(),
            request: Some(
                json!({"messages": [{"role": "user", "content": "Which city is the capital of France?"}]}),
            ),
            answer: Some(answer.clone()),
            fusion: Some(json!({"panel": [member(0), member(1), member(2)],
                "analysis": {"consensus": ["Paris"], "contradictions": [], "blind_spots": ["population"]},
                "timings": {"panel_ms": 900, "judge_ms": 700, "synthesis_ms": 800}})),
            events: (0..12)
                .map(|t| TimedEvent {
                    t_ms: t * 100,
                    event: json!({"type": "member_tokens", "slot": t % 3, "tokens": t * 10}),
                })
                .collect(),
            ..Detail::default()
        },
    }
}
