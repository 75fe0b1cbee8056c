//! `quorate runs list|show`: the run store read from the command line, the same records
//! `GET /v1/runs` serves.

use clap::Subcommand;
use quorate_config::Config;
use quorate_store::{Cursor, Filter, Reader, Store};

#[derive(Subcommand)]
pub enum RunsCommand {
    /// The newest runs, one line each.
    List {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        status: Option<u16>,
        #[arg(long)]
        caller: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The `next` cursor a previous listing printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One run's whole record, as JSON.
    Show { id: String },
}

pub async fn run(config: &Config, command: RunsCommand) -> anyhow::Result<()> {
    let store = open(config).await?;
    let result = match command {
        RunsCommand::List {
            model,
            status,
            caller,
            limit,
            cursor,
        } => {
            let cursor = match cursor.as_deref().map(Cursor::decode) {
                Some(None) => anyhow::bail!("--cursor: not one `quorate runs list` printed"),
                Some(c) => c,
                None => None,
            };
            let filter = Filter {
                model,
                status,
                caller,
                cursor,
                limit: limit.clamp(1, 500),
                ..Filter::default()
            };
            list(&store, &filter).await
        }
        RunsCommand::Show { id } => match store.get(&id).await? {
            Some(run) => {
                println!("{}", serde_json::to_string_pretty(&run)?);
                Ok(())
            }
            None => Err(anyhow::anyhow!("no run {id:?} in the run store")),
        },
    };
    store.close().await;
    result
}

/// The configured store, for `serve` and the CLI; `None` when `[store] enabled = false`.
pub async fn open_configured(config: &Config) -> anyhow::Result<Option<Store>> {
    if !config.store.enabled {
        return Ok(None);
    }
    let options = quorate_store::Options {
        url: config.store.url(),
        content: config.store.content,
        retention_days: config.store.retention_days,
        queue: config.store.queue,
    };
    Ok(Some(Store::open(&options).await?))
}

/// The configured store for reading: the CLI writes nothing, so it starts no writer.
async fn open(config: &Config) -> anyhow::Result<Reader> {
    if !config.store.enabled {
        anyhow::bail!("the run store is off ([store] enabled = false)");
    }
    Ok(Reader::open(&config.store.url()).await?)
}

async fn list(store: &Reader, filter: &Filter) -> anyhow::Result<()> {
    let page = store.list(filter).await?;
    for run in &page.data {
        println!(
            "{}  {:<3}  {:<28}  {:>6} ms  {:>6}/{:<6} tok  ${:.6}{}",
            run.id,
            run.status,
            run.model,
            run.latency_ms,
            run.prompt_tokens,
            run.completion_tokens,
            run.cost_usd.unwrap_or_default(),
            run.error_kind
                .as_deref()
                .map(|k| format!("  {k}"))
                .unwrap_or_default()
        );
    }
    if let Some(next) = page.next_cursor {
        println!("next: quorate runs list --cursor {next}");
    }
    Ok(())
}
