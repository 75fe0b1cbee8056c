//! `quorate eval`: DRACO rubric grading and objective QA over systems named on the command line,
//! run in-process; results and the report go under `--out`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use quorate_config::Config;
use quorate_eval::draco::{self, grade::Grader, run::DracoRun};
use quorate_eval::{Dataset, QaRun, Settings, Summary, System};
use quorate_fusion::Fusion;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// DRACO: deep-research tasks graded criterion by criterion on weighted rubrics.
    Draco(DracoArgs),
    /// Objective QA: TruthfulQA MC1 (by letter) or GSM8K (exact number).
    Qa(QaArgs),
}

#[derive(Args)]
pub struct DracoArgs {
    /// The grader model (one call per criterion).
    #[arg(long)]
    grader: String,
    /// Grading passes per answer (the paper uses 5); scores average over them.
    #[arg(long, default_value_t = 1)]
    passes: u32,
    #[arg(long, default_value_t = 0.2)]
    grader_temperature: f64,
    /// The first N tasks (after --task-ids and --domain).
    #[arg(long)]
    tasks: Option<usize>,
    /// Only these task ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    task_ids: Vec<String>,
    /// Only tasks of this domain (e.g. Finance).
    #[arg(long)]
    domain: Option<String>,
    /// Domains no web tool may reach (comma-separated); default: the rubric-hosting sites.
    #[arg(long, value_delimiter = ',')]
    exclude_domains: Option<Vec<String>>,
    /// No web search or fetch for any system.
    #[arg(long)]
    no_research: bool,
    /// The task file; default `<data dir>/draco/test.jsonl`.
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct Common {
    /// A system to measure, `NAME=SPEC` (repeatable): a model id, `fusion:<preset>`,
    /// `fusion:m1,m2,m3>synth`, or `vote:m1,m2,m3`; options after `?`, joined by `&`:
    /// `strategy=fuse|vote|select|mixture|auto` (fusion), `exit_quorum=N` (auto), `temperature=T`
    /// (this system's own).
    #[arg(long = "system", required = true)]
    systems: Vec<String>,
    /// Where answers, verdicts and the report go; a rerun resumes from what is there.
    #[arg(long)]
    out: PathBuf,
    /// Tasks answered at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Sampling temperature of every system (solo, vote members, fusion panel) without its own.
    #[arg(long)]
    temperature: Option<f64>,
    /// Output cap of each answer (and of each panel member's).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// The datasets folder (`truthfulqa/`, `gsm8k/`, `draco/`).
    #[arg(long, env = "QUORATE_DATASETS", default_value = "datasets")]
    data_dir: PathBuf,
    /// Only write the report from the results already under `--out`.
    #[arg(long)]
    report_only: bool,
}

#[derive(Args)]
pub struct QaArgs {
    /// `truthfulqa-mc1` or `gsm8k`.
    #[arg(long)]
    dataset: String,
    /// The first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Shuffles the options and seeds every system's sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the panel's answers (`panel.jsonl` under `--out`) and apply every system to the
    /// same ones: paired comparisons, the panel paid for once. A solo system is the first
    /// member.
    #[arg(long)]
    reuse_panel: bool,
    #[command(flatten)]
    common: Common,
}

pub async fn run(config: Config, command: EvalCommand) -> anyhow::Result<()> {
    let fusion = Fusion::new(crate::router(config.clone())?).map_err(anyhow::Error::msg)?;
    let summary = match command {
        EvalCommand::Draco(args) => draco(&config, &fusion, args).await?,
        EvalCommand::Qa(args) => qa(&config, &fusion, args).await?,
    };
    print(&summary);
    Ok(())
}

fn systems(config: &Config, common: &Common) -> anyhow::Result<Vec<System>> {
    let systems = common
        .systems
        .iter()
        .map(|s| System::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, s) in systems.iter().enumerate() {
        if systems[..i].iter().any(|o| o.name == s.name) {
            anyhow::bail!("two systems are named {:?}; name them NAME=SPEC", s.name);
        }
        s.check(config, &settings(common))?;
    }
    Ok(systems)
}

fn settings(common: &Common) -> Settings {
    Settings {
        temperature: common.temperature,
        max_tokens: common.max_tokens,
        tools: None,
    }
}

async fn qa(config: &Config, fusion: &Fusion, args: QaArgs) -> anyhow::Result<Summary> {
    let dataset = Dataset::parse(&args.dataset)?;
    let systems = systems(config, &args.common)?;
    let models: Vec<String> = systems.iter().flat_map(|s| s.models(config)).collect();
    crate::ask::fetch_local_models(config, models.iter().map(String::as_str)).await?;
    let file = dataset.file(&args.common.data_dir);
    let questions =
        quorate_eval::qa::load(dataset, &file, args.limit.unwrap_or(usize::MAX), args.seed)?;
    eprintln!(
        "{}: {} questions × {} systems → {}",
        dataset.name(),
        questions.len(),
        systems.len(),
        args.common.out.display()
    );
    let fusion = if args.reuse_panel {
        std::fs::create_dir_all(&args.common.out)?;
        let kept = quorate_eval::PanelStore::open(&args.common.out)?;
        eprintln!("reusing the panel: {} answers kept", kept.len());
        fusion.clone().with_panel_cache(std::sync::Arc::new(kept))
    } else {
        fusion.clone()
    };
    QaRun {
        dataset,
        questions,
        settings: settings(&args.common),
        systems,
        seed: args.seed,
        concurrency: args.common.concurrency,
        report_only: args.common.report_only,
        out: args.common.out,
    }
    .run(&fusion)
    .await
}

async fn draco(config: &Config, fusion: &Fusion, args: DracoArgs) -> anyhow::Result<Summary> {
    let systems = systems(config, &args.common)?;
    if let Some(s) = systems.iter().find(|s| s.kind_label() == "vote") {
        anyhow::bail!(
            "system {}: vote needs short answers; DRACO answers are reports",
            s.name
        );
    }
    config
        .check_inner_model(&args.grader)
        .map_err(|e| anyhow::anyhow!("--grader: {e}"))?;
    let mut models: Vec<String> = systems.iter().flat_map(|s| s.models(config)).collect();
    models.push(args.grader.clone());
    crate::ask::fetch_local_models(config, models.iter().map(String::as_str)).await?;
    let file = args
        .dataset
        .clone()
        .unwrap_or_else(|| args.common.data_dir.join("draco/test.jsonl"));
    let tasks = draco::select(
        draco::load(&file)?,
        &args.task_ids,
        args.domain.as_deref(),
        args.tasks,
    )?;
    let excluded = args.exclude_domains.clone().unwrap_or_else(|| {
        draco::run::EXCLUDED_DOMAINS
            .iter()
            .map(|d| d.to_string())
            .collect()
    });
    let mut settings = settings(&args.common);
    if !args.no_research {
        settings.tools = Some(DracoRun::research_tools(&excluded));
    }
    eprintln!(
        "draco: {} tasks × {} systems, graded by {} × {} passes → {}",
        tasks.len(),
        systems.len(),
        args.grader,
        args.passes,
        args.common.out.display()
    );
    DracoRun {
        tasks,
        systems,
        settings,
        grader: Grader {
            router: fusion.router().clone(),
            model: args.grader,
            temperature: args.grader_temperature,
        },
        passes: args.passes.max(1),
        excluded_domains: excluded,
        concurrency: args.common.concurrency,
        out: args.common.out,
        report_only: args.common.report_only,
    }
    .run(fusion)
    .await
}

fn print(summary: &Summary) {
    println!("{}", quorate_eval::report::markdown(summary));
}
