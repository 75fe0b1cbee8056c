//! `quorate-bench-fusion`: what the fusion pipeline adds on top of its models' own latency.
//!
//! The panel, judge and synthesizer are quorate-sim models with fixed latencies: members answer in
//! 200, 400 and 800 ms, the judge in 300 ms, the synthesis streams over 500 ms; nominally
//! max(panel) + judge + synthesis = 1600 ms. The sim's timers overshoot (every tokio sleep ends on
//! a millisecond tick, and the synthesis alone sleeps 26 times), so the critical path is measured,
//! not assumed: the same calls made straight to the sim (the three members streamed in parallel,
//! then the judge, then the synthesis streamed), at the same concurrency. The overhead is
//! the fusion's wall time (request sent to `[DONE]` read) minus that path, percentile by
//! percentile. Runs are closed-loop with a fixed number in flight; the sim and the gateway are
//! processes of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use quorate_bench::{judge_script, percentile, SimStack};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

/// max(panel) + judge + synthesis as scripted.
const NOMINAL_PATH: Duration = Duration::from_millis(800 + 300 + 500);

#[derive(Parser)]
#[command(about = "Fusion pipeline overhead over its critical path, at fixed concurrency")]
struct Args {
    /// Runs in flight at once, in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,200")]
    concurrency: Vec<usize>,
    /// Measured runs per concurrency level and path (at least twice the concurrency).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    #[arg(long)]
    sim_bin: Option<PathBuf>,
}

#[derive(Clone)]
enum Target {
    /// One fusion through the gateway.
    Fusion(String),
    /// The fusion's calls straight to the sim: the panel in parallel, the judge, the synthesis.
    Direct(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let panel = ["m200", "m400", "m800"];
    let stack = SimStack::start(
        "fusion",
        &scripts_json(),
        &panel,
        &args.sim_bin,
        &args.gateway_bin,
    )
    .await?;
    let (sim_url, gateway_url) = (&stack.sim_url, &stack.gateway_url);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .tcp_nodelay(true)
        .build()?;
    let fused = Target::Fusion(format!("{gateway_url}/v1/chat/completions"));
    let direct = Target::Direct(format!("{sim_url}/v1/chat/completions"));
    run(&client, &fused, 1, 3).await.context("warm-up fusion")?;
    run(&client, &direct, 1, 3)
        .await
        .context("warm-up direct")?;

    println!("wall times in ms, streaming; critical path = the same calls straight to the sim");
    println!("| in flight | runs | path | p50 | p90 | p99 | max | errors |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    let mut added = Vec::new();
    for &concurrency in &args.concurrency {
        let total = args.runs.max(concurrency * 2);
        let mut rows = Vec::new();
        for (name, target) in [
            ("critical path (direct)", &direct),
            ("fusion via gateway", &fused),
        ] {
            let (mut walls, errors) = run(&client, target, concurrency, total).await?;
            walls.sort_unstable();
            let at = [0.5, 0.9, 0.99, 1.0].map(|q| percentile(&walls, q));
            let cells = at.map(|us| format!("{:.2}", us as f64 / 1000.0));
            println!(
                "| {concurrency} | {total} | {name} | {} | {errors} |",
                cells.join(" | ")
            );
            rows.push(at);
        }
        added.push((
            concurrency,
            [0, 1, 2].map(|i| rows[1][i] as f64 - rows[0][i] as f64),
        ));
    }
    println!();
    println!("| in flight | overhead p50 ms | overhead p90 ms | overhead p99 ms |");
    println!("|---:|---:|---:|---:|");
    for (concurrency, a) in added {
        let [p50, p90, p99] = a.map(|us| format!("{:+.2}", us / 1000.0));
        println!("| {concurrency} | {p50} | {p90} | {p99} |");
    }
    Ok(())
}

fn scripts_json() -> serde_json::Value {
    // 26 words streamed: the first after 250 ms, then one every 10 ms, 500 ms in all.
    let synthesis = vec!["word"; 26].join(" ");
    json!({
        "m200": {"reply": "member answer", "ttft_ms": 200},
        "m400": {"reply": "member answer", "ttft_ms": 400},
        "m800": {"reply": "member answer", "ttft_ms": 800},
        "judge": judge_script(300),
        "synth": {"reply": synthesis, "ttft_ms": 250, "token_ms": 10},
    })
}

/// Runs `total` times with `concurrency` in flight; returns wall times in µs and the error count.
/// The first `concurrency` runs start spread over one critical path rather than in the same
/// millisecond (real fusions do not arrive in lockstep); after them, each finished run starts the
/// next. The first two waves (2 × `concurrency` runs) are not measured: they grow the connection
/// pools to the steady state (measured, the pool growth adds ~25 ms to about 20 runs).
async fn run(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<(Vec<u64>, usize)> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let results = Arc::new(Mutex::new((Vec::with_capacity(total), 0usize)));
    let spacing = NOMINAL_PATH / concurrency as u32;
    let warm_up = 2 * concurrency;
    let mut tasks = Vec::with_capacity(total + warm_up);
    for i in 0..total + warm_up {
        let permit = gate.clone().acquire_owned().await?;
        if i < concurrency {
            tokio::time::sleep(spacing).await;
        }
        let measured = i >= warm_up;
        let (client, target, results) = (client.clone(), target.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let ok = once(&client, &target).await;
            let wall = started.elapsed().as_micros() as u64;
            if measured {
                let mut r = results.lock().await;
                match ok {
                    true => r.0.push(wall),
                    false => r.1 += 1,
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let results = std::mem::take(&mut *results.lock().await);
    Ok(results)
}

async fn once(client: &reqwest::Client, target: &Target) -> bool {
    match target {
        Target::Fusion(url) => stream(client, url, "quorate/fusion", "fusion").await,
        Target::Direct(url) => {
            let panel = futures::future::join_all(
                ["m200", "m400", "m800"].map(|m| stream(client, url, m, "usage")),
            );
            panel.await.into_iter().all(|ok| ok)
                && call(client, url, "judge").await
                && stream(client, url, "synth", "usage").await
        }
    }
}

fn body(model: &str, stream: bool) -> String {
    let mut body = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "What is fusion?"}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

/// One streamed completion read to the end; true when it ended with `[DONE]` and carried
/// `expect` (the fusion report, or usage).
async fn stream(client: &reqwest::Client, url: &str, model: &str, expect: &str) -> bool {
    match send(client, url, body(model, true)).await {
        Some(text) => text.ends_with("data: [DONE]\n\n") && text.contains(&format!("\"{expect}\"")),
        None => false,
    }
}

async fn call(client: &reqwest::Client, url: &str, model: &str) -> bool {
    send(client, url, body(model, false)).await.is_some()
}

async fn send(client: &reqwest::Client, url: &str, body: String) -> Option<String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .ok()?;
    response.text().await.ok()
}
