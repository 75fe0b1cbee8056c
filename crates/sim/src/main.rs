//! `quorate-sim [--listen ADDR] [--scripts FILE]`: run the upstream simulator.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quorate_sim::{Script, Sim};

#[derive(Parser)]
#[command(about = "Scripted OpenAI/Anthropic-compatible upstream for tests and benchmarks")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8790")]
    listen: String,
    /// JSON object mapping model names to scripts, e.g. {"slow": {"ttft_ms": 500}}.
    #[arg(long)]
    scripts: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scripts: HashMap<String, Script> = match &args.scripts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => HashMap::new(),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("quorate-sim listening on http://{}", listener.local_addr()?);
    axum::serve(quorate_sim::nodelay(listener), Sim::new(scripts).router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
