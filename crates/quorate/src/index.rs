//! `quorate index`: the local search index over the user's own documents.

use std::path::PathBuf;

use clap::Subcommand;
use quorate_tools::search::{LocalIndex, Search};

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Index every markdown, text and HTML file under DIR (files indexed before are replaced).
    Add { dir: PathBuf },
    /// Search the index.
    Search {
        query: String,
        #[arg(long, default_value_t = 5)]
        max_results: usize,
    },
}

pub async fn run(command: IndexCommand, dir: PathBuf) -> anyhow::Result<()> {
    let index = LocalIndex::open(&dir)?;
    match command {
        IndexCommand::Add { dir: docs } => {
            let added = tokio::task::spawn_blocking(move || index.add(&docs)).await??;
            println!(
                "indexed {} files ({} skipped) into {}",
                added.indexed,
                added.skipped,
                dir.display()
            );
        }
        IndexCommand::Search { query, max_results } => {
            let hits = index.search(&query, max_results).await?;
            if hits.is_empty() {
                println!("no match in {}", dir.display());
            }
            for (i, hit) in hits.iter().enumerate() {
                let date = hit
                    .date
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                println!(
                    "{}. {} — {}{date}\n   {}",
                    i + 1,
                    hit.title,
                    hit.url,
                    hit.snippet
                );
            }
        }
    }
    Ok(())
}
