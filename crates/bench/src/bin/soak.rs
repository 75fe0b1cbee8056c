//! `quorate-bench-soak`: does the gateway give its memory and sockets back after heavy rounds?
//!
//! Each round: 1,000 streams at once read to the end, a disconnect storm (clients hanging up
//! after the first chunk of a slow stream), faulting upstreams (500, 429, a stream cut mid-event,
//! a malformed body; streamed and not), and a few fusions. Then the gateway idles for
//! `--settle-s` and its RSS and open file descriptors are read from /proc. A leak grows every
//! round; memory the allocator keeps plateaus. Not part of the test run: it takes minutes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use quorate_bench::{judge_script, SimStack};
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "RSS, file descriptors and errors of the gateway over rounds of load")]
struct Args {
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Streams at once per round, each read to `[DONE]`.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Clients per round that hang up after the first chunk.
    #[arg(long, default_value_t = 200)]
    storm: usize,
    /// Requests per round to faulting upstreams.
    #[arg(long, default_value_t = 200)]
    faults: usize,
    /// Fusions per round (three members, judge, synthesis).
    #[arg(long, default_value_t = 20)]
    fusions: usize,
    /// Idle time after each round before RSS and descriptors are read.
    #[arg(long, default_value_t = 5.0)]
    settle_s: f64,
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    #[arg(long)]
    sim_bin: Option<PathBuf>,
}

/// What went as expected in one round, and what did not.
#[derive(Default)]
struct Round {
    streams_ok: usize,
    storm_done: usize,
    faults_refused: usize,
    fusions_ok: usize,
    unexpected: usize,
}

/// How a stream reports a failure (a fusion's report also has `"error"` keys, for its members).
const ERROR_EVENT: &str = "data: {\"error\"";

const FAULTS: [&str; 4] = ["sim/f500", "sim/f429", "sim/fcut", "sim/fmalformed"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = SimStack::start(
        "soak",
        &scripts_json(),
        &["member"; 3],
        &args.sim_bin,
        &args.gateway_bin,
    )
    .await?;
    let url = stack.gateway_url.clone();
    let pid = stack.gateway.id().context("the gateway exited")?;
    // No idle connections kept on this side: the gateway's descriptors are its own doing.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("{url}/v1/chat/completions");

    let (rss, fds) = (rss_kib(pid)?, open_fds(pid)?);
    println!(
        "gateway pid {pid}; at start RSS {:.1} MiB, {fds} fds; {} streams, {} hang-ups, \
         {} faults, {} fusions per round, {} s settle",
        rss as f64 / 1024.0,
        args.streams,
        args.storm,
        args.faults,
        args.fusions,
        args.settle_s
    );
    println!("| round | streams ok | hang-ups | faults refused | fusions ok | unexpected | s | RSS MiB | fds |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rss_by_round = Vec::new();
    for n in 1..=args.rounds {
        let started = Instant::now();
        let round = round(&client, &url, &args).await;
        let took = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(args.settle_s)).await;
        let (rss, fds) = (rss_kib(pid)?, open_fds(pid)?);
        rss_by_round.push(rss);
        println!(
            "| {n} | {}/{} | {}/{} | {}/{} | {}/{} | {} | {took:.1} | {:.1} | {fds} |",
            round.streams_ok,
            args.streams,
            round.storm_done,
            args.storm,
            round.faults_refused,
            args.faults,
            round.fusions_ok,
            args.fusions,
            round.unexpected,
            rss as f64 / 1024.0,
        );
    }
    print_verdict(&rss_by_round);
    Ok(())
}

/// Growth over the second half of the rounds: a leak keeps climbing there, retention does not.
fn print_verdict(rss: &[u64]) {
    if rss.len() < 4 {
        return;
    }
    let half = &rss[rss.len() / 2..];
    let peak_first = rss[..rss.len() / 2].iter().max().copied().unwrap_or(0);
    let last = half.last().copied().unwrap_or(0);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "RSS: peak of the first half {:.1} MiB, last round {:.1} MiB ({:+.1} MiB); {}",
        mib(peak_first),
        mib(last),
        mib(last) - mib(peak_first),
        if last <= peak_first + peak_first / 20 {
            "flat (within 5 % of the first half's peak)"
        } else {
            "still growing"
        }
    );
}

async fn round(client: &reqwest::Client, url: &str, args: &Args) -> Round {
    let streams = fan(args.streams, args.streams, |_| {
        full_stream(client, url, "sim/stream")
    });
    let storm = fan(args.storm, args.storm, |_| hang_up(client, url));
    let faults = fan(args.faults, 100, |i| {
        fault(client, url, FAULTS[i % FAULTS.len()], i % 2 == 0)
    });
    let fusions = fan(args.fusions, args.fusions, |_| {
        full_stream(client, url, "quorate/fusion")
    });
    let (streams, storm, faults, fusions) = tokio::join!(streams, storm, faults, fusions);
    let count = |v: &[bool]| v.iter().filter(|ok| **ok).count();
    let all = [&streams, &storm, &faults, &fusions];
    Round {
        streams_ok: count(&streams),
        storm_done: count(&storm),
        faults_refused: count(&faults),
        fusions_ok: count(&fusions),
        unexpected: all.iter().map(|v| v.len() - count(v)).sum(),
    }
}

/// `total` calls of `call`, at most `width` at once.
async fn fan<'a, F, Fut>(total: usize, width: usize, call: F) -> Vec<bool>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + 'a,
{
    let gate = Arc::new(Semaphore::new(width.max(1)));
    let calls = (0..total).map(|i| {
        let gate = gate.clone();
        let call = call(i);
        async move {
            let _permit = gate.acquire().await;
            call.await
        }
    });
    futures::future::join_all(calls).await
}

fn body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "Soak, please."}]})
    .to_string()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    stream: bool,
) -> Option<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body(model, stream))
        .send()
        .await
        .ok()
}

/// A stream read to the end: true when it finished with `[DONE]` and no error event.
async fn full_stream(client: &reqwest::Client, url: &str, model: &str) -> bool {
    let Some(response) = post(client, url, model, true).await else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    match response.text().await {
        Ok(text) => text.ends_with("data: [DONE]\n\n") && !text.contains(ERROR_EVENT),
        Err(_) => false,
    }
}

/// Reads the first chunk of a slow stream, then drops the connection.
async fn hang_up(client: &reqwest::Client, url: &str) -> bool {
    let Some(response) = post(client, url, "sim/slow", true).await else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    let mut body = response.bytes_stream();
    matches!(body.next().await, Some(Ok(_)))
}

/// A faulting upstream: true when the client was told (an error status, or an error event).
async fn fault(client: &reqwest::Client, url: &str, model: &str, stream: bool) -> bool {
    let Some(response) = post(client, url, model, stream).await else {
        return false;
    };
    let failed = !response.status().is_success();
    match response.text().await {
        Ok(text) => failed || text.contains(ERROR_EVENT),
        Err(_) => false,
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn scripts_json() -> serde_json::Value {
    let words = vec!["word"; 20].join(" ");
    json!({
        "stream": {"reply": words, "ttft_ms": 20, "token_ms": 5},
        "slow": {"reply": words, "ttft_ms": 10, "token_ms": 200},
        "f500": {"fault": "status", "status": 500},
        "f429": {"fault": "status", "status": 429},
        "fcut": {"fault": "cut"},
        "fmalformed": {"fault": "malformed"},
        "member": {"reply": "member answer", "ttft_ms": 50},
        "judge": judge_script(30),
        "synth": {"reply": words, "ttft_ms": 20, "token_ms": 5},
    })
}
