//! The `quorate` command: a thin binary over the server and provider crates.

/// A proxied request allocates and frees about 140 small blocks, on whichever worker thread runs
/// it: glibc's malloc spent 37 K instructions a request on them, mimalloc 14 K (callgrind, see
/// README's Benchmark section). llama.cpp's own allocations stay with the C library.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod ask;
mod display;
mod eval;
mod index;
mod pull;
mod runs;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quorate_config::Config;
use quorate_providers::Router;
use quorate_server::AppState;

#[derive(Parser)]
#[command(
    name = "quorate",
    version,
    about = "Self-hosted LLM fusion gateway with an OpenAI-compatible API"
)]
struct Cli {
    /// Config file (else $QUORATE_CONFIG, else ./quorate.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines as text, or as JSON objects (one per line, with the request's id and span
    /// fields), for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QUORATE_LOG_FORMAT"
    )]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve {
        /// Address to listen on (overrides server.listen and $QUORATE_LISTEN).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Ask one question and stream the answer to stdout.
    Ask(ask::AskArgs),
    /// Measure systems on DRACO or objective QA, with a report.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The local search index over your own documents (the `local` web_search backend).
    Index {
        /// The index folder (default: the config's tools.web_search.index_dir, else
        /// <data dir>/index, the data dir being $QUORATE_HOME or ~/.local/share/quorate).
        #[arg(long, global = true, value_name = "DIR")]
        index: Option<PathBuf>,
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// The run store: the requests and fusion runs `serve` kept.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// List the configured models, or fetch a local model's GGUF file.
    Models {
        #[command(subcommand)]
        command: Option<ModelsCommand>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List the configured models (the default).
    List,
    /// Fetch a known GGUF model into the cache: qwen2.5-coder-1.5b (the default, embedded),
    /// qwen2.5-coder-0.5b or smollm2-135m.
    Pull {
        #[arg(default_value = "qwen2.5-coder-1.5b")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a config file; print what it defines.
    Check {
        /// The file to check (defaults to the one --config or the environment names).
        file: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    with_short_openmp_spin();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    // Loaded once, before logging starts, for the span export's settings; a config that does
    // not load is reported by the command. `config check` loads the file it names itself.
    let config = match &cli.command {
        Command::Config { .. } => None,
        _ => Some(Config::load(cli.config.as_deref())),
    };
    // Spans are exported from `serve` only.
    let export = match (&cli.command, &config) {
        (Command::Serve { .. }, Some(Ok(config))) => Some(&config.telemetry),
        _ => None,
    };
    let spans = telemetry::init(cli.log_format, default_level, export);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, config));
    if let Some(spans) = spans {
        telemetry::shutdown(spans);
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    cli: Cli,
    config: Option<Result<Config, quorate_config::ConfigError>>,
) -> anyhow::Result<()> {
    match (cli.command, config) {
        (
            Command::Config {
                command: ConfigCommand::Check { file },
            },
            _,
        ) => check(file.as_deref().or(cli.config.as_deref())),
        (_, None) => anyhow::bail!("no configuration was loaded for this command"),
        (command, Some(config)) => {
            let config = config?;
            match command {
                Command::Serve { listen } => serve(config, listen).await,
                Command::Ask(args) => ask::run(config, args).await,
                Command::Eval { command } => eval::run(config, command).await,
                Command::Models {
                    command: Some(ModelsCommand::Pull { name }),
                } => pull::run(&name).await,
                Command::Models {
                    command: None | Some(ModelsCommand::List),
                } => {
                    for model in config.models.keys() {
                        println!("{model}");
                    }
                    Ok(())
                }
                Command::Index { index, command } => {
                    let dir = index.unwrap_or_else(|| config.tools.web_search.index_dir());
                    index::run(command, dir).await
                }
                Command::Runs { command } => runs::run(&config, command).await,
                Command::Config { .. } => Ok(()),
            }
        }
    }
}

fn check(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    println!(
        "config OK: {} providers ({}), {} models",
        config.providers.len(),
        config
            .providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        config.models.len()
    );
    Ok(())
}

async fn serve(mut config: Config, listen: Option<String>) -> anyhow::Result<()> {
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let grace = Duration::from_secs_f64(config.server.shutdown_grace_s);
    let addr = config.server.listen.clone();
    let store_config = config.clone();
    let router = router(config)?;
    let mut state = AppState::new(router).map_err(anyhow::Error::msg)?;
    let store = runs::open_configured(&store_config).await?.map(Arc::new);
    if let Some(store) = &store {
        state = state.with_store(store.clone());
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("listening on http://{bound}");
    // Tests and scripts read this line to find a port chosen with :0.
    println!("quorate listening on http://{bound}");
    quorate_server::serve(listener, Arc::new(state), shutdown_signal(), grace).await;
    if let Some(store) = store {
        // What the last requests queued is written before the process ends.
        store.close(grace).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The router with every provider kind this binary has, the local engine included.
pub fn router(config: Config) -> anyhow::Result<Router> {
    Ok(Router::with_local(config, Some(&quorate_local::provider))?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Spins at an OpenMP barrier before a thread sleeps (libgomp: roughly 100 a microsecond).
/// Measured on 2 cores (README, "The local provider"): passive sleeping was slower everywhere,
/// the default 300,000 beside busy processes; 10,000 once collapsed beside two of them.
const OPENMP_SPINS: &str = "1000";

/// llama.cpp's OpenMP threads meet at a barrier after every operation of a decode step, hundreds
/// a token. With the runtime's default they spin up to ~3 ms at each, so beside other busy
/// processes a thread burns the core its late partner needs (one 2-core machine: 126 s instead
/// of 5 s); `OMP_WAIT_POLICY=passive` sleeps at each, which made a decode step take twice as
/// long. A short spin catches a partner a few microseconds behind and gives the core back soon
/// after. The runtime reads its settings once, when it is loaded before `main`, so the process
/// starts itself again with `GOMP_SPINCOUNT` set, unless the caller set it or a wait policy.
#[cfg(unix)]
fn with_short_openmp_spin() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() || std::env::var_os("GOMP_SPINCOUNT").is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only when it failed: run on with the runtime's default.
    let error = command
        .args(args)
        .env("GOMP_SPINCOUNT", OPENMP_SPINS)
        .exec();
    eprintln!(
        "quorate: could not restart with GOMP_SPINCOUNT={OPENMP_SPINS} ({error}); local models \
         may slow down on a busy machine"
    );
}
