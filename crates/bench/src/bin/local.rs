//! `quorate-bench-local`: tokens/s of the `local` provider against a minimal raw llama-cpp-2
//! loop on the same GGUF, in the same run, with 1 and 3 concurrent generations.
//!
//! Both sides use greedy sampling, the same prompt, the same thread count and the same number of
//! generated tokens (the raw loop generates as many as the provider did). Prompt speed is prompt
//! tokens over the time to the first token; generation speed is the remaining tokens over the
//! time after it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use quorate_api::ChatRequest;
use quorate_config::Config;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Local provider vs raw llama-cpp-2 loop: prompt and generation tokens/s")]
struct Args {
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// One generation's timing.
#[derive(Clone, Copy)]
struct Timing {
    prompt_tokens: u64,
    generated: u64,
    prompt_s: f64,
    gen_s: f64,
}

const PROMPT: &str = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. \
Describe the island, the weather, the keeper's daily routine, the bottle, the message and what happens next.";

fn request(tokens: u32) -> anyhow::Result<ChatRequest> {
    Ok(serde_json::from_value(json!({
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": tokens,
    }))?)
}

async fn provider_run(
    p: &Arc<dyn quorate_providers::Provider>,
    tokens: u32,
) -> anyhow::Result<Timing> {
    let start = Instant::now();
    let ctx = quorate_providers::RequestCtx::new("bench");
    let mut stream = p.stream(&ctx, request(tokens)?).await?;
    let mut first = None;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if first.is_none() && chunk.has_content() {
            first = Some(start.elapsed().as_secs_f64());
        }
        usage = chunk.usage.or(usage);
    }
    let total = start.elapsed().as_secs_f64();
    let usage = usage.context("no usage")?;
    let first = first.context("no content")?;
    Ok(Timing {
        prompt_tokens: usage.prompt_tokens,
        generated: usage.completion_tokens,
        prompt_s: first,
        gen_s: total - first,
    })
}

/// The minimal loop: tokenize, decode the prompt, then sample greedily and decode one token at a time.
fn raw_run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    tokens: &[LlamaToken],
    generate: u64,
    threads: i32,
) -> anyhow::Result<Timing> {
    let start = Instant::now();
    let n_ctx = tokens.len() as u32 + generate as u32 + 8;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params)?;
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i + 1 == tokens.len())?;
    }
    ctx.decode(&mut batch)?;
    let mut sampler = LlamaSampler::greedy();
    let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
    let prompt_s = start.elapsed().as_secs_f64();
    let gen_start = Instant::now();
    for i in 1..generate {
        batch.clear();
        batch.add(token, (tokens.len() as u64 + i - 1) as i32, &[0], true)?;
        ctx.decode(&mut batch)?;
        token = sampler.sample(&ctx, 0);
    }
    Ok(Timing {
        prompt_tokens: tokens.len() as u64,
        generated: generate,
        prompt_s,
        gen_s: gen_start.elapsed().as_secs_f64(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (prompt tok/s, generation tok/s) over a set of concurrent runs: tokens over wall time.
fn rates(runs: &[Timing], wall_prompt: f64, wall_gen: f64) -> (f64, f64) {
    let prompt: u64 = runs.iter().map(|t| t.prompt_tokens).sum();
    let generated: u64 = runs.iter().map(|t| t.generated.saturating_sub(1)).sum();
    (prompt as f64 / wall_prompt, generated as f64 / wall_gen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::builtin();
    let threads = config.providers["local"]
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let path = quorate_local::pull::resolve("smollm2-135m", &|_| {})
        .await
        .map_err(anyhow::Error::msg)?;
    let provider = quorate_local::provider("local", &config.providers["local"], &config)?;
    let warm = provider_run(&provider, 8).await?;
    let backend = quorate_local::backend()?;
    let model = Arc::new(LlamaModel::load_from_file(
        backend,
        &path,
        &Default::default(),
    )?);
    // The raw loop gets the exact prompt tokens the provider builds, via the same chat template.
    let engine = quorate_local::Engine::load("smollm2-135m", &path, threads, None, 1)?;
    let prompt = engine.prompt(&request(1)?.messages)?;
    drop(engine);
    let _ = warm;

    println!(
        "model: {} | threads per generation: {threads} | greedy, {} tokens | median of {} runs",
        path.display(),
        args.tokens,
        args.runs
    );
    println!("| concurrency | path | prompt tok/s | generation tok/s |");
    println!("|---:|---|---:|---:|");
    let mut ratios = Vec::new();
    for concurrency in [1usize, 3] {
        let (mut pp, mut pg, mut rp, mut rg) = (vec![], vec![], vec![], vec![]);
        for _ in 0..args.runs {
            let runs = futures::future::join_all(
                (0..concurrency).map(|_| provider_run(&provider, args.tokens)),
            )
            .await;
            let runs: Vec<Timing> = runs.into_iter().collect::<Result<_, _>>()?;
            let wall_prompt = runs.iter().map(|t| t.prompt_s).fold(0.0, f64::max);
            let wall_gen = runs
                .iter()
                .map(|t| t.prompt_s + t.gen_s)
                .fold(0.0, f64::max)
                - wall_prompt.min(runs.iter().map(|t| t.prompt_s).fold(f64::MAX, f64::min));
            let (p, g) = rates(&runs, wall_prompt, wall_gen);
            pp.push(p);
            pg.push(g);
            let generated = runs[0].generated;
            let raw: Vec<Timing> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..concurrency)
                    .map(|_| {
                        s.spawn(|| raw_run(backend, &model, &prompt, generated, threads as i32))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| anyhow::anyhow!("raw loop panicked"))?)
                    .collect::<anyhow::Result<_>>()
            })?;
            let wall_prompt = raw.iter().map(|t| t.prompt_s).fold(0.0, f64::max);
            let wall_gen = raw.iter().map(|t| t.prompt_s + t.gen_s).fold(0.0, f64::max)
                - raw.iter().map(|t| t.prompt_s).fold(f64::MAX, f64::min);
            let (p, g) = rates(&raw, wall_prompt, wall_gen);
            rp.push(p);
            rg.push(g);
        }
        let (pp, pg, rp, rg) = (median(pp), median(pg), median(rp), median(rg));
        println!("| {concurrency} | local provider | {pp:.1} | {pg:.1} |");
        println!("| {concurrency} | raw llama-cpp-2 loop | {rp:.1} | {rg:.1} |");
        ratios.push((concurrency, pp / rp, pg / rg));
    }
    println!();
    println!("| concurrency | prompt ratio (provider / raw) | generation ratio (provider / raw) |");
    println!("|---:|---:|---:|");
    for (c, p, g) in ratios {
        println!("| {c} | {p:.2} | {g:.2} |");
    }
    Ok(())
}
