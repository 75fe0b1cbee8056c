//! What one llama.cpp decode step costs by the number of sequences in it, and the same tokens
//! decoded one sequence at a time: what the scheduler's `SmallSteps` chooses between.
//! Also the prompt speed at three batch sizes.
//!
//! `cargo run --release -p quorate-local --example decode_steps -- MODEL.gguf [THREADS]`
//! (run it with the spin count `quorate` sets: `GOMP_SPINCOUNT=1000`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const STEPS: usize = 60;
/// Sequences 0..SEQS share the prompt; sequence SEQS is scratch for the prompt measurement.
const SEQS: i32 = 6;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: decode_steps MODEL.gguf [THREADS]");
    let threads: i32 = std::env::args().nth(2).map_or(2, |t| t.parse().unwrap());
    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(8192))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(SEQS as u32 + 1)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params).unwrap();
    let text = "Once upon a time, a lighthouse keeper lived on a small island far from the coast.";
    let prompt = model.vocab().tokenize(text.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in prompt.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i + 1 == prompt.len())
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    for s in 1..SEQS {
        ctx.copy_kv_cache_seq(0, s, None, None).unwrap();
    }

    println!("| tokens | prompt tok/s |\n|---:|---:|");
    for n in [64, 256, 512] {
        println!("| {n} | {:.1} |", prompt_speed(&mut ctx, &prompt, n));
    }
    println!("\n| sequences | batched ms/step | tok/s | one by one ms/step | tok/s |");
    println!("|---:|---:|---:|---:|---:|");
    for n in 1..=SEQS as usize {
        let batched = step_ms(&mut ctx, &prompt, n, false);
        let single = step_ms(&mut ctx, &prompt, n, true);
        let rate = |ms: f64| n as f64 * 1000.0 / ms;
        println!(
            "| {n} | {batched:.1} | {:.1} | {single:.1} | {:.1} |",
            rate(batched),
            rate(single)
        );
    }
}

/// Prompt tokens a second for a prompt of `n` tokens, decoded in one batch (mean of three).
fn prompt_speed(ctx: &mut LlamaContext, prompt: &[LlamaToken], n: usize) -> f64 {
    let mut batch = LlamaBatch::new(512, 1);
    let start = Instant::now();
    for _ in 0..3 {
        batch.clear();
        for i in 0..n {
            batch
                .add(prompt[i % prompt.len()], i as i32, &[SEQS], i + 1 == n)
                .unwrap();
        }
        ctx.decode(&mut batch).unwrap();
        ctx.clear_kv_cache_seq(Some(SEQS as u32), None, None)
            .unwrap();
    }
    3.0 * n as f64 / start.elapsed().as_secs_f64()
}

/// Milliseconds a step for `n` sequences each decoding one token with logits, as one batch or
/// one sequence at a time; the sequences' new tokens are removed afterwards.
fn step_ms(ctx: &mut LlamaContext, prompt: &[LlamaToken], n: usize, one_by_one: bool) -> f64 {
    let mut batch = LlamaBatch::new(SEQS as usize, 1);
    let token = prompt[prompt.len() / 2];
    let start = Instant::now();
    for step in 0..STEPS {
        let pos = (prompt.len() + step) as i32;
        if one_by_one {
            for s in 0..n {
                batch.clear();
                batch.add(token, pos, &[s as i32], true).unwrap();
                ctx.decode(&mut batch).unwrap();
            }
        } else {
            batch.clear();
            for s in 0..n {
                batch.add(token, pos, &[s as i32], true).unwrap();
            }
            ctx.decode(&mut batch).unwrap();
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / STEPS as f64;
    for s in 0..SEQS {
        ctx.clear_kv_cache_seq(Some(s as u32), Some(prompt.len() as u32), None)
            .unwrap();
    }
    ms
}
