//! `quorate-bench-local`: the embedded engine (through `quorate serve`) against llama.cpp's own
//! `llama-server` on the same GGUF, in the same run, over the same HTTP API.
//!
//! Both get the same requests: greedy, the same thread count, a prompt of their own per stream
//! (numbered, so neither serves it from a prompt cache), streamed with usage. Prompt speed is
//! prompt tokens over the time to the first token; generation speed is the tokens after the first
//! over the time after it. With several streams, the rates are totals over the wall time.
//! `llama-server` runs with as many parallel slots as the embedded provider (`-np`). Build it with
//! `scripts/build-llama-server`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use quorate_bench::{sibling, spawn_listening};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Embedded engine vs llama-server on one GGUF: prompt, generation and JSON tok/s")]
struct Args {
    /// A known local model (`quorate models pull` names it).
    #[arg(long, default_value = "qwen2.5-coder-0.5b")]
    model: String,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// CPU threads for both engines (default: all cores).
    #[arg(long)]
    threads: Option<u32>,
    /// Tokens of KV cache for both engines (all sequences together).
    #[arg(long, default_value_t = 8192)]
    context: u32,
    #[arg(long, default_value = "target/llama-server/build/bin/llama-server")]
    llama_server: PathBuf,
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
}

const STORY: &str =
    "Write a long, detailed story about a lighthouse keeper who finds a message in \
a bottle. Describe the island, the weather, the keeper's daily routine, the bottle, the message \
and what happens next.";

const FACTS: &str = "Describe the planets of the solar system as JSON: for each planet its name, \
its order from the sun, whether it has rings, its moons by name, and three notable facts.";

/// The schema of the JSON measurement: nested arrays and objects, like the judge's analysis.
fn planets_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["planets"],
        "properties": {"planets": {"type": "array", "items": {"type": "object",
            "additionalProperties": false, "required": ["name", "order", "rings", "moons", "facts"],
            "properties": {"name": {"type": "string"}, "order": {"type": "integer"},
                "rings": {"type": "boolean"}, "moons": {"type": "array", "items": {"type": "string"}},
                "facts": {"type": "array", "items": {"type": "string"}}}}}}})
}

/// One streamed request's timing.
#[derive(Clone, Copy)]
struct Timing {
    prompt_tokens: u64,
    generated: u64,
    /// Seconds from the request to the first token, and to the end, from the batch's start.
    first: f64,
    end: f64,
}

struct Engine {
    name: &'static str,
    url: String,
    model: String,
    _child: tokio::process::Child,
}

async fn stream_one(
    client: &reqwest::Client,
    engine: &Engine,
    body: Value,
    start: Instant,
) -> anyhow::Result<Timing> {
    let response = client
        .post(format!("{}/v1/chat/completions", engine.url))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{}: {}", engine.name, response.text().await?);
    }
    let (mut first, mut usage, mut pieces) = (None, None, 0u64);
    let mut buffer = String::new();
    let mut bytes = response.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let text = value
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str);
            if text.is_some_and(|t| !t.is_empty()) {
                pieces += 1;
                first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            }
            if let Some(u) = value.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
        }
    }
    let end = start.elapsed().as_secs_f64();
    let usage = usage.context("no usage in the stream")?;
    let count = |key: &str| usage[key].as_u64().unwrap_or(0);
    Ok(Timing {
        prompt_tokens: count("prompt_tokens"),
        generated: count("completion_tokens").max(pieces),
        first: first.context("no content")?,
        end,
    })
}

fn request(engine: &Engine, prompt: &str, run: usize, tokens: u32, json: bool) -> Value {
    let mut body = json!({"model": engine.model, "stream": true,
        "stream_options": {"include_usage": true}, "temperature": 0, "max_tokens": tokens,
        "messages": [{"role": "user", "content": format!("Request {run}. {prompt}")}]});
    if json {
        body["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "planets", "schema": planets_schema()}});
    }
    body
}

/// (prompt tok/s, generation tok/s) of `streams` requests at once.
async fn measure(
    client: &reqwest::Client,
    engine: &Engine,
    streams: usize,
    run: usize,
    args: &Args,
    json: bool,
) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let prompt = if json { FACTS } else { STORY };
    let timings = futures::future::try_join_all((0..streams).map(|i| {
        let body = request(engine, prompt, run * 10 + i, args.tokens, json);
        stream_one(client, engine, body, start)
    }))
    .await?;
    let first = timings.iter().map(|t| t.first).fold(f64::MAX, f64::min);
    let last_first = timings.iter().map(|t| t.first).fold(0.0, f64::max);
    let end = timings.iter().map(|t| t.end).fold(0.0, f64::max);
    let prompt: u64 = timings.iter().map(|t| t.prompt_tokens).sum();
    let generated: u64 = timings.iter().map(|t| t.generated.saturating_sub(1)).sum();
    Ok((prompt as f64 / last_first, generated as f64 / (end - first)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `quorate serve` with the model by its file path (so an older build without the name works).
async fn start_quorate(args: &Args, gguf: &Path, threads: u32) -> anyhow::Result<Engine> {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[providers.local]\nkind = \"local\"\nthreads = {threads}\nslots = 3\n\
         [models.\"local/{m}\"]\nprovider = \"local\"\ngguf = {path:?}\ncontext_length = {c}\n",
        m = args.model,
        path = gguf.display().to_string(),
        c = args.context
    );
    let path =
        std::env::temp_dir().join(format!("quorate-bench-local-{}.toml", std::process::id()));
    std::fs::write(&path, config)?;
    let bin = sibling(&args.gateway_bin, "quorate")?;
    let (child, url) =
        spawn_listening(&bin, &["serve", "--config", &path.to_string_lossy()]).await?;
    Ok(Engine {
        name: "quorate (embedded)",
        url,
        model: format!("local/{}", args.model),
        _child: child,
    })
}

async fn start_llama_server(args: &Args, gguf: &Path, threads: u32) -> anyhow::Result<Engine> {
    let port = free_port()?;
    let child = tokio::process::Command::new(&args.llama_server)
        .args([
            "-m",
            &gguf.to_string_lossy(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "-np",
            "3",
            "-c",
            &args.context.to_string(),
            "-t",
            &threads.to_string(),
        ])
        .args(["-tb", &threads.to_string(), "--kv-unified"])
        // Its HTTP threads default to the core count: fewer than the streams in flight.
        .args(["--threads-http", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with scripts/build-llama-server)",
                args.llama_server.display()
            )
        })?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        let ok = client.get(format!("{url}/health")).send().await;
        if ok.is_ok_and(|r| r.status().is_success()) {
            return Ok(Engine {
                name: "llama-server",
                url,
                model: args.model.clone(),
                _child: child,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("llama-server did not become healthy within 60 s")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let gguf = quorate_local::pull::resolve(&args.model, &|_| {})
        .await
        .map_err(anyhow::Error::msg)?;
    // No pooled connections: llama-server closes idle ones, and reusing a closed one fails.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    println!(
        "model: {} | {threads} threads | greedy, {} tokens | KV cache {} tokens | median of {} runs",
        gguf.display(),
        args.tokens,
        args.context,
        args.runs
    );
    println!(
        "| engine | streams | prompt tok/s | generation tok/s | json_schema generation tok/s |"
    );
    println!("|---|---:|---:|---:|---:|");
    // One engine at a time: they would share the two cores otherwise.
    for which in ["quorate", "llama-server"] {
        let engine = match which {
            "quorate" => start_quorate(&args, &gguf, threads).await?,
            _ => start_llama_server(&args, &gguf, threads).await?,
        };
        // Warm-up: the first request loads and pages in the model.
        measure(&client, &engine, 1, 99, &args, false).await?;
        let mut run = 0;
        for streams in [1usize, 3] {
            let (mut prompt, mut generation, mut json) = (vec![], vec![], vec![]);
            for _ in 0..args.runs {
                run += 1;
                let (p, g) = measure(&client, &engine, streams, run, &args, false).await?;
                prompt.push(p);
                generation.push(g);
                if streams == 1 {
                    json.push(measure(&client, &engine, 1, run, &args, true).await?.1);
                }
            }
            let json = if json.is_empty() {
                "".to_string()
            } else {
                format!("{:.1}", median(json))
            };
            println!(
                "| {} | {streams} | {:.1} | {:.1} | {json} |",
                engine.name,
                median(prompt),
                median(generation)
            );
        }
    }
    Ok(())
}
