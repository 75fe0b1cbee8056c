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
//! its cores with its upstream or its clients. `--realtime` runs the gateway under SCHED_FIFO, so
//! it never waits behind the simulator or the load generator for a CPU: what it adds then is the
//! hop itself, without the scheduler's share. `--noise-floor` measures the direct path against
//! itself the same way, which shows how small a difference the run can resolve. On a virtual
//! machine the host can take a CPU away for milliseconds at a time ("steal"); each path's row says
//! how much it took during that path's rounds, since a p99 over a path the host stalled more is
//! the host's figure, not the gateway's.

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
    /// Another `quorate` build (an earlier release, say) measured in the same rounds, store off:
    /// a regression shows against it without the drift between two runs.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// Alternating rounds per cell (each path in turn, then again).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Run the gateway alone on the last CPU; the simulator and this load generator on the rest
    /// (Linux, needs `taskset` and at least 2 CPUs).
    #[arg(long)]
    pin: bool,
    /// Run the gateway under SCHED_FIFO priority 1 (Linux, needs `chrt` and root or
    /// CAP_SYS_NICE).
    #[arg(long)]
    realtime: bool,
    /// Also run the direct path a second time in each round and print its difference from the
    /// first: the noise floor of the measurement.
    #[arg(long)]
    noise_floor: bool,
}

#[derive(Default)]
struct Sample {
    latencies_us: Vec<u64>,
    /// The gateway's own time per request, from its `Server-Timing` header (total - upstream).
    own_us: Vec<u64>,
    errors: u64,
    /// The worst lateness of a send against its schedule.
    late_us: u64,
    /// Seconds of load, and the CPU time the hypervisor gave to other guests meanwhile.
    seconds: f64,
    stolen: Option<Duration>,
}

impl Sample {
    fn absorb(&mut self, other: Sample) {
        self.latencies_us.extend(other.latencies_us);
        self.own_us.extend(other.own_us);
        self.errors += other.errors;
        self.late_us = self.late_us.max(other.late_us);
        self.seconds += other.seconds;
        self.stolen = match (self.stolen, other.stolen) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
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

/// Starts `bin` with `args` behind `wrapper` (such as `taskset -c 1`, `chrt -f 1`), if any.
async fn start(
    bin: &std::path::Path,
    args: &[&str],
    wrapper: &[String],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let Some((first, rest)) = wrapper.split_first() else {
        return spawn_listening(bin, args).await;
    };
    let bin = bin.to_string_lossy();
    let mut all: Vec<&str> = rest.iter().map(String::as_str).collect();
    all.push(&bin);
    all.extend_from_slice(args);
    spawn_listening(std::path::Path::new(first), &all).await
}

/// The commands a process is started behind: `taskset` when pinned, `chrt` when real-time.
fn wrapper(cpus: Option<&str>, realtime: bool) -> Vec<String> {
    let mut wrapper = Vec::new();
    if let Some(cpus) = cpus {
        wrapper.extend(["taskset", "-c", cpus].map(String::from));
    }
    if realtime {
        wrapper.extend(["chrt", "-f", "1"].map(String::from));
    }
    wrapper
}

async fn bench(args: Args, cpus: Option<Cpus>) -> anyhow::Result<()> {
    // The sim runs as a process of its own, like the gateway, so both paths pay the same
    // cross-process wake-ups and the difference is the gateway's own cost.
    let (sim, sim_url) = start(
        &sibling(&args.sim_bin, "quorate-sim")?,
        &["--listen", "127.0.0.1:0"],
        &wrapper(cpus.as_ref().map(|c| c.others.as_str()), false),
    )
    .await?;
    let sim_addr = sim_url.trim_start_matches("http://").to_string();
    let gateway_wrapper = wrapper(cpus.as_ref().map(|c| c.gateway.as_str()), args.realtime);
    let store = std::env::temp_dir().join(format!("quorate-bench-{}.db", std::process::id()));
    let quorate = sibling(&args.gateway_bin, "quorate")?;
    let (gateway, gateway_url) =
        start_gateway(&quorate, &sim_addr, &gateway_wrapper, Store::Off).await?;
    let (stored, stored_url) =
        start_gateway(&quorate, &sim_addr, &gateway_wrapper, Store::Sqlite(&store)).await?;
    let mut children = vec![sim, gateway, stored];
    let direct = format!("http://{sim_addr}/v1/chat/completions");
    let completions = |url: &str| format!("{url}/v1/chat/completions");
    let mut paths = vec![
        Target::new("direct to sim", &direct, None),
        Target::new(
            "through gateway, store off",
            &completions(&gateway_url),
            Some("store off"),
        ),
        Target::new(
            "through gateway, store on (SQLite)",
            &completions(&stored_url),
            Some("store on"),
        ),
    ];
    if let Some(bin) = &args.baseline_bin {
        let (baseline, url) = start_baseline(bin, &sim_addr, &gateway_wrapper).await?;
        children.push(baseline);
        paths.push(Target::new(
            "through baseline gateway, store off",
            &completions(&url),
            Some("baseline"),
        ));
    }
    if args.noise_floor {
        paths.push(Target::new("direct to sim, again", &direct, None));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;

    // Warm every path: connection pools, allocator, branch predictors.
    for path in &paths {
        run(&client, &path.url, 200, 1.0).await;
    }

    println!(
        "open-loop load, non-streaming echo completions, {}s per path and rate in {} alternating rounds; {}",
        args.seconds,
        args.rounds,
        placement(cpus.as_ref(), args.realtime)
    );
    println!(
        "| rate (req/s) | path | p50 ms | p90 ms | p99 ms | errors | worst send lateness ms | CPU stolen by the host ms/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let urls: Vec<&str> = paths.iter().map(|p| p.url.as_str()).collect();
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let samples = alternate(&client, &urls, rate, &args).await;
        for (path, sample) in paths.iter().zip(&samples) {
            print_row(rate, path.name, sample);
        }
        rows.push((rate, samples));
    }
    println!();
    let (floor_head, floor_rule) = match args.noise_floor {
        true => (" noise floor p50 / p90 / p99 ms |", "---:|"),
        false => ("", ""),
    };
    println!("| rate (req/s) | gateway | added p50 ms | added p90 ms | added p99 ms | gateway's own p50 / p99 / max ms |{floor_head}");
    println!("|---:|---|---:|---:|---:|---:|{floor_rule}");
    for (rate, samples) in rows {
        let direct = &samples[0];
        let again = samples.last().filter(|_| args.noise_floor);
        for (path, sample) in paths.iter().zip(&samples) {
            let Some(name) = path.gateway else {
                continue;
            };
            let [p50, _, p99] = percentiles(&sample.own_us);
            let own_max = sample.own_us.last().copied().unwrap_or_default();
            print!(
                "| {rate} | {name} | {} | {} / {} / {} |",
                difference(direct, sample).join(" | "),
                ms(p50),
                ms(p99),
                ms(own_max)
            );
            match again {
                Some(again) => println!(" {} |", difference(direct, again).join(" / ")),
                None => println!(),
            }
        }
    }
    for child in &mut children {
        let _ = child.start_kill();
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let _ = std::fs::remove_dir_all(baseline_home());
    Ok(())
}

/// A path the load is sent down.
struct Target {
    name: &'static str,
    url: String,
    /// Its name in the table of what a gateway adds; none for the direct paths.
    gateway: Option<&'static str>,
}

impl Target {
    fn new(name: &'static str, url: &str, gateway: Option<&'static str>) -> Self {
        Self {
            name,
            url: url.to_string(),
            gateway,
        }
    }
}

fn placement(cpus: Option<&Cpus>, realtime: bool) -> String {
    let mut placement = match cpus {
        Some(c) => format!(
            "gateway on CPU {}, sim and load on CPUs {}",
            c.gateway, c.others
        ),
        None => "all processes on all CPUs".to_string(),
    };
    if realtime {
        placement.push_str("; gateway under SCHED_FIFO");
    }
    placement
}

/// p50, p90 and p99 of `b` minus those of `a`, in signed milliseconds.
fn difference(a: &Sample, b: &Sample) -> [String; 3] {
    let (pa, pb) = (percentiles(&a.latencies_us), percentiles(&b.latencies_us));
    [0, 1, 2].map(|i| signed_ms(pb[i] as i64 - pa[i] as i64))
}

/// `rounds` alternating runs of the URLs, each URL's samples pooled, in the order given.
async fn alternate(client: &reqwest::Client, urls: &[&str], rate: u32, args: &Args) -> Vec<Sample> {
    let rounds = args.rounds.max(1);
    let seconds = args.seconds / f64::from(rounds);
    let mut pooled: Vec<Sample> = urls.iter().map(|_| Sample::default()).collect();
    for _ in 0..rounds {
        for (url, pool) in urls.iter().zip(pooled.iter_mut()) {
            let before = stolen();
            let mut sample = run(client, url, rate, seconds).await;
            sample.seconds = seconds;
            sample.stolen = before.zip(stolen()).map(|(b, a)| a.saturating_sub(b));
            pool.absorb(sample);
        }
    }
    for s in &mut pooled {
        s.latencies_us.sort_unstable();
        s.own_us.sort_unstable();
    }
    pooled
}

/// How a gateway's run store is configured.
#[derive(Clone, Copy)]
enum Store<'a> {
    Off,
    /// On, in this SQLite file.
    Sqlite(&'a std::path::Path),
    /// No `[store]` table: for builds from before the run store, which refuse it.
    Absent,
}

/// The gateway `bin` in front of the sim.
async fn start_gateway(
    bin: &std::path::Path,
    sim: &str,
    wrapper: &[String],
    store: Store<'_>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let (name, table) = match store {
        Store::Off => ("plain", "[store]\nenabled = false\n".to_string()),
        Store::Sqlite(file) => (
            "stored",
            format!("[store]\nurl = \"sqlite://{}\"\n", file.display()),
        ),
        Store::Absent => ("absent", String::new()),
    };
    let config =
        std::env::temp_dir().join(format!("quorate-bench-{}-{name}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[providers.sim]\nkind = \"openai\"\nbase_url = \"http://{sim}/v1\"\nmax_retries = 0\n\n[models.\"sim/echo\"]\nprovider = \"sim\"\nupstream = \"echo\"\n\n{table}"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    start(
        bin,
        &["serve", "--listen", "127.0.0.1:0", "--config", &config],
        wrapper,
    )
    .await
}

/// Where a baseline started without a `[store]` table keeps its data.
fn baseline_home() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("quorate-bench-{}-home", std::process::id()))
}

/// The baseline build, store off; one from before the run store has none to turn off.
async fn start_baseline(
    bin: &std::path::Path,
    sim: &str,
    wrapper: &[String],
) -> anyhow::Result<(tokio::process::Child, String)> {
    match start_gateway(bin, sim, wrapper, Store::Off).await {
        Ok(started) => Ok(started),
        Err(e) => {
            // Most likely a build from before the store. If it was another failure and the
            // build has a store, it keeps its runs in a folder of its own, not the user's.
            eprintln!("the baseline did not start with `[store] enabled = false` ({e}); trying it without a [store] table");
            let home = baseline_home();
            let mut wrapper = wrapper.to_vec();
            wrapper.splice(
                0..0,
                [
                    "env".to_string(),
                    format!("QUORATE_HOME={}", home.display()),
                ],
            );
            start_gateway(bin, sim, &wrapper, Store::Absent).await
        }
    }
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
        s.stolen
            .filter(|_| s.seconds > 0.0)
            .map_or("n/a".into(), |t| {
                format!("{:.0}", t.as_secs_f64() * 1000.0 / s.seconds)
            }),
    ];
    println!("| {rate} | {path} | {} |", cells.join(" | "));
}

/// CPU time the hypervisor has given to other guests since boot, summed over this machine's
/// CPUs (None off Linux).
fn stolen() -> Option<Duration> {
    steal_in(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The `steal` field of /proc/stat's all-CPU line, which counts USER_HZ ticks of 10 ms.
fn steal_in(stat: &str) -> Option<Duration> {
    let fields = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: u64 = fields.split_whitespace().nth(7)?.parse().ok()?;
    Some(Duration::from_millis(ticks * 10))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_counter_of_the_all_cpu_line() {
        let stat = "cpu  6017212 293880 512565 3596201 32486 0 19488 49088 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_in(stat), Some(Duration::from_millis(490_880)));
        // Kernels before 2.6.11 have no steal field; a per-CPU line first is not the total.
        assert_eq!(steal_in("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(steal_in("cpu0 1 2 3 4 5 6 7 8 0 0\n"), None);
    }
}
