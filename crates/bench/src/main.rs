//! `quorate-bench`: open-loop load through the gateway to `quorate-sim` and straight to the sim,
//! at fixed request rates; prints latency percentiles and what the gateway adds.
//!
//! Open loop: request i is sent at `start + i / rate` in a task of its own, whether or not
//! earlier ones have finished, so a stalled gateway cannot slow the offered load (no coordinated
//! omission). Latency counts from the moment the task sends: tokio's timer fires up to a
//! millisecond after the due time, and that lateness belongs to the load generator, not to the
//! path being measured. The lateness is reported separately. The gateway's own time per request
//! comes from its `Server-Timing` header (total handling minus the wait on the upstream).
//!
//! Each cell is split into rounds that alternate the two paths, so a drift in the machine's
//! background load lands on both. `--pin` gives the gateway a CPU of its own and keeps the
//! simulator and the load generator on the others, the way a deployed gateway does not share
//! its cores with its upstream or its clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use quorate_bench::{sibling, spawn_listening};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Latency the gateway adds over the upstream simulator, under open-loop load")]
struct Args {
    /// Requests per second to run, in turn.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    rates: Vec<u32>,
    /// Seconds of load per rate and target.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The `quorate` binary (default: next to this one).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// The `quorate-sim` binary (default: next to this one).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Alternating rounds per cell (direct, gateway, direct, ...).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Run the gateway alone on the last CPU; the simulator and this load generator on the rest
    /// (Linux, needs `taskset` and at least 2 CPUs).
    #[arg(long)]
    pin: bool,
}

#[derive(Default)]
struct Sample {
    latencies_us: Vec<u64>,
    /// The gateway's own time per request, from its `Server-Timing` header (total - upstream).
    own_us: Vec<u64>,
    errors: u64,
    /// The worst lateness of a send against its schedule.
    late_us: u64,
}

impl Sample {
    fn absorb(&mut self, other: Sample) {
        self.latencies_us.extend(other.latencies_us);
        self.own_us.extend(other.own_us);
        self.errors += other.errors;
        self.late_us = self.late_us.max(other.late_us);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cpus = Cpus::plan(args.pin)?;
    // Pinned before the runtime starts, so its worker threads inherit the CPUs and tokio sizes
    // its pool to them.
    if let Some(cpus) = &cpus {
        pin_self(&cpus.others)?;
    }
    tokio::runtime::Runtime::new()?.block_on(bench(args, cpus))
}

/// Which CPUs the gateway and everything else run on, as `taskset` lists.
struct Cpus {
    gateway: String,
    others: String,
}

impl Cpus {
    fn plan(pin: bool) -> anyhow::Result<Option<Self>> {
        if !pin {
            return Ok(None);
        }
        let n = std::thread::available_parallelism()?.get();
        if n < 2 {
            anyhow::bail!("--pin needs at least 2 CPUs, this machine gives {n}");
        }
        Ok(Some(Self {
            gateway: (n - 1).to_string(),
            others: format!("0-{}", n - 2),
        }))
    }
}

fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("--pin runs taskset: {e}"))?;
    anyhow::ensure!(status.success(), "taskset -p -c {cpus} failed: {status}");
    Ok(())
}

/// Starts `bin` with `args`, under `taskset -c cpus` when pinning.
async fn start(
    bin: &std::path::Path,
    args: &[&str],
    cpus: Option<&str>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    match cpus {
        None => spawn_listening(bin, args).await,
        Some(cpus) => {
            let bin = bin.to_string_lossy();
            let mut all = vec!["-c", cpus, bin.as_ref()];
            all.extend_from_slice(args);
            spawn_listening(std::path::Path::new("taskset"), &all).await
        }
    }
}

async fn bench(args: Args, cpus: Option<Cpus>) -> anyhow::Result<()> {
    // The sim runs as a process of its own, like the gateway, so both paths pay the same
    // cross-process wake-ups and the difference is the gateway's own cost.
    let (mut sim, sim_url) = start(
        &sibling(&args.sim_bin, "quorate-sim")?,
        &["--listen", "127.0.0.1:0"],
        cpus.as_ref().map(|c| c.others.as_str()),
    )
    .await?;
    let sim_addr = sim_url.trim_start_matches("http://").to_string();
    let (mut gateway, gateway_url) =
        start_gateway(&args, &sim_addr, cpus.as_ref().map(|c| c.gateway.as_str())).await?;
    let direct = format!("http://{sim_addr}/v1/chat/completions");
    let through = format!("{gateway_url}/v1/chat/completions");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;

    // Warm both paths: connection pools, allocator, branch predictors.
    run(&client, &direct, 200, 1.0).await;
    run(&client, &through, 200, 1.0).await;

    let placement = match &cpus {
        Some(c) => format!(
            "gateway on CPU {}, sim and load on CPUs {}",
            c.gateway, c.others
        ),
        None => "all processes on all CPUs".to_string(),
    };
    println!(
        "open-loop load, non-streaming echo completions, {}s per path and rate in {} alternating rounds; {placement}",
        args.seconds, args.rounds
    );
    println!(
        "| rate (req/s) | path | p50 ms | p90 ms | p99 ms | errors | worst send lateness ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut added_rows = Vec::new();
    for &rate in &args.rates {
        let (d, g) = alternate(&client, [&direct, &through], rate, &args).await;
        let (dp, gp) = (percentiles(&d.latencies_us), percentiles(&g.latencies_us));
        print_row(rate, "direct to sim", &d);
        print_row(rate, "through gateway", &g);
        added_rows.push((
            rate,
            [
                gp[0] as i64 - dp[0] as i64,
                gp[1] as i64 - dp[1] as i64,
                gp[2] as i64 - dp[2] as i64,
            ],
            g.own_us,
        ));
    }
    println!();
    println!(
        "| rate (req/s) | added p50 ms | added p90 ms | added p99 ms | gateway's own p50 / p99 / max ms |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (rate, added, own) in added_rows {
        let [p50, _, p99] = percentiles(&own);
        println!(
            "| {rate} | {} | {} | {} | {} / {} / {} |",
            signed_ms(added[0]),
            signed_ms(added[1]),
            signed_ms(added[2]),
            ms(p50),
            ms(p99),
            ms(own.last().copied().unwrap_or_default())
        );
    }
    let _ = gateway.start_kill();
    let _ = sim.start_kill();
    Ok(())
}

/// `rounds` alternating runs of the two URLs, each URL's samples pooled.
async fn alternate(
    client: &reqwest::Client,
    urls: [&str; 2],
    rate: u32,
    args: &Args,
) -> (Sample, Sample) {
    let rounds = args.rounds.max(1);
    let seconds = args.seconds / f64::from(rounds);
    let mut pooled = [Sample::default(), Sample::default()];
    for _ in 0..rounds {
        for (url, pool) in urls.iter().zip(pooled.iter_mut()) {
            pool.absorb(run(client, url, rate, seconds).await);
        }
    }
    let [mut d, mut g] = pooled;
    for s in [&mut d, &mut g] {
        s.latencies_us.sort_unstable();
        s.own_us.sort_unstable();
    }
    (d, g)
}

async fn start_gateway(
    args: &Args,
    sim: &str,
    cpus: Option<&str>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let config = std::env::temp_dir().join(format!("quorate-bench-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[providers.sim]\nkind = \"openai\"\nbase_url = \"http://{sim}/v1\"\nmax_retries = 0\n\n[models.\"sim/echo\"]\nprovider = \"sim\"\nupstream = \"echo\"\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    start(
        &sibling(&args.gateway_bin, "quorate")?,
        &["serve", "--listen", "127.0.0.1:0", "--config", &config],
        cpus,
    )
    .await
}

async fn run(client: &reqwest::Client, url: &str, rate: u32, seconds: f64) -> Sample {
    let total = (f64::from(rate) * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let body = Arc::new(
        json!({"model": "sim/echo", "messages": [{"role": "user", "content": "ping"}]}).to_string(),
    );
    let sample = Arc::new(Mutex::new(Sample {
        latencies_us: Vec::with_capacity(total as usize),
        ..Sample::default()
    }));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, body, sample) = (
            client.clone(),
            url.to_string(),
            body.clone(),
            sample.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let late_us = sent.duration_since(due).as_micros() as u64;
            let result = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.as_str().to_owned())
                .send()
                .await;
            let (ok, own) = match result {
                Ok(r) => {
                    let own = own_time_us(r.headers());
                    (r.status().is_success() && r.bytes().await.is_ok(), own)
                }
                Err(_) => (false, None),
            };
            let elapsed = sent.elapsed().as_micros() as u64;
            let mut s = sample.lock().await;
            s.late_us = s.late_us.max(late_us);
            if ok {
                s.latencies_us.push(elapsed);
                s.own_us.extend(own);
            } else {
                s.errors += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(sample).map_or_else(|_| Sample::default(), Mutex::into_inner)
}

/// `total - upstream` of a `Server-Timing` header, in microseconds.
fn own_time_us(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let header = headers.get("server-timing")?.to_str().ok()?;
    let dur = |name: &str| -> Option<f64> {
        let metric = header
            .split(',')
            .map(str::trim)
            .find(|m| m.split(';').next() == Some(name))?;
        metric
            .split(';')
            .find_map(|p| p.strip_prefix("dur=")?.parse().ok())
    };
    let own_ms = dur("total")? - dur("upstream")?;
    Some((own_ms.max(0.0) * 1000.0) as u64)
}

fn print_row(rate: u32, path: &str, s: &Sample) {
    let p = percentiles(&s.latencies_us);
    let cells = [
        ms(p[0]),
        ms(p[1]),
        ms(p[2]),
        s.errors.to_string(),
        ms(s.late_us),
    ];
    println!("| {rate} | {path} | {} |", cells.join(" | "));
}

fn percentiles(sorted: &[u64]) -> [u64; 3] {
    [0.5, 0.9, 0.99].map(|q| quorate_bench::percentile(sorted, q))
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed_ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}
