//! `quorate ask`: one question, in-process (no server). Fusion by default (the default preset,
//! `local` with no key), with a live panel display on stderr and the answer streamed to stdout;
//! `--model` with an ordinary model asks that model alone.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use quorate_api::{Message, ModelRequest, Role};
use quorate_config::Config;
use quorate_fusion::{Fusion, Item, Plan, PlanBuilder, RunOutcome, Strategy};
use quorate_providers::RequestCtx;
use serde_json::{json, Value};

use crate::display;

#[derive(Args)]
pub struct AskArgs {
    /// The question.
    prompt: String,
    /// Model id: `quorate/fusion[:preset]` (the default unless the config's `default_model` says
    /// otherwise), a configured model, or provider/upstream-name to ask one model alone.
    #[arg(long, short, env = "QUORATE_MODEL")]
    model: Option<String>,
    /// Fusion preset (`local`, `quality`, `budget` or one from the config).
    #[arg(long)]
    preset: Option<String>,
    /// Fusion panel, comma-separated; repeat a model for self-fusion.
    #[arg(long, value_delimiter = ',')]
    panel: Option<Vec<String>>,
    /// Fusion judge.
    #[arg(long)]
    judge: Option<String>,
    /// Fusion synthesizer.
    #[arg(long)]
    synth: Option<String>,
    /// How fusion makes the answer: `fuse` (judge, then synthesis), `vote` (the majority
    /// member's answer; ties go to `fuse`), `auto` (stop once the panel agrees, else `fuse`),
    /// `mixture` (synthesis from the raw answers, no judge) or `select` (the judge's pick,
    /// verbatim). Default: the preset's.
    #[arg(long)]
    strategy: Option<Strategy>,
    /// `auto`: members that must agree to stop early, from a strict majority of the panel to
    /// all of it. Default: the preset's, else a strict majority.
    #[arg(long)]
    exit_quorum: Option<usize>,
    /// Print each panel member's answer and the judge's analysis after the answer.
    #[arg(long)]
    show_panel: bool,
    /// Print the whole completion object (with the `fusion` report) as JSON instead of the text.
    #[arg(long)]
    json: bool,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature (for fusion: the panel's).
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Print usage and cost to stderr after the answer (always shown for fusion).
    #[arg(long)]
    usage: bool,
    /// Fusion: no web search or fetch for the panel.
    #[arg(long)]
    no_research: bool,
    /// Fusion: domains the panel's tools may not use (comma-separated; `*.x.com`, `x.com/path`).
    #[arg(long, value_delimiter = ',')]
    exclude_domains: Option<Vec<String>>,
    /// Fusion: tool calls each agentic panel member may make (0 to 16).
    #[arg(long)]
    max_tool_calls: Option<u32>,
    /// Fusion: remove citations of URLs no panel member retrieved (they are always reported).
    #[arg(long)]
    strict_citations: bool,
}

impl AskArgs {
    fn request(&self, config: &Config) -> ModelRequest {
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| config.default_model().to_string());
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(Message::new(Role::System, system.clone()));
        }
        messages.push(Message::new(Role::User, self.prompt.clone()));
        let mut request = ModelRequest::new(model, messages);
        request.temperature = self.temperature;
        request.max_tokens = self.max_tokens;
        if let Some(plan) = self.plan() {
            request.plugins = vec![plan.to_plugin()];
        }
        request
    }

    /// The fusion flags, sent as the plugin object the API takes, so both paths validate alike.
    fn plan(&self) -> Option<PlanBuilder> {
        let plan = PlanBuilder {
            preset: self.preset.clone(),
            analysis_models: self.panel.clone(),
            judge: self.judge.clone(),
            model: self.synth.clone(),
            tools: self.tools(),
            max_tool_calls: self.max_tool_calls,
            citations: self.strict_citations.then(|| "strict".to_string()),
            strategy: self.strategy,
            exit_quorum: self.exit_quorum,
            ..PlanBuilder::default()
        };
        (plan != PlanBuilder::default()).then_some(plan)
    }
}

impl AskArgs {
    /// The plugin's `tools`: none, or both with the excluded domains.
    fn tools(&self) -> Option<Value> {
        if self.no_research {
            return Some(json!([]));
        }
        let excluded = self.exclude_domains.as_ref()?;
        let parameters = json!({"excluded_domains": excluded});
        Some(json!([{"type": "web_search", "parameters": parameters},
                    {"type": "web_fetch", "parameters": parameters}]))
    }
}

pub async fn run(config: Config, args: AskArgs) -> anyhow::Result<()> {
    let request = args.request(&config);
    request.validate().map_err(anyhow::Error::msg)?;
    let fusion = Fusion::new(crate::router(config.clone())?).map_err(anyhow::Error::msg)?;
    let ctx = RequestCtx::new(format!("ask-{}", std::process::id()));
    match fusion.plan(&ctx, &request)? {
        Some(plan) => {
            fetch_local_models(&config, plan_models(&plan)).await?;
            fused(&fusion, &ctx, plan, request, &args).await
        }
        None => {
            fetch_local_models(&config, [request.model.as_str()]).await?;
            solo(&fusion, &ctx, request, &args).await
        }
    }
}

fn plan_models(plan: &Plan) -> impl Iterator<Item = &str> {
    plan.panel
        .iter()
        .chain(&plan.judges)
        .chain([&plan.synthesizer])
        .map(String::as_str)
}

/// Local models may need fetching first: done here, with a progress display.
pub async fn fetch_local_models<'a>(
    config: &Config,
    models: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<()> {
    let mut fetched = Vec::new();
    for gguf in models
        .into_iter()
        .filter_map(|m| config.resolve(m).and_then(|m| m.gguf))
    {
        if !fetched.contains(&gguf) {
            crate::pull::fetch(&gguf).await?;
            fetched.push(gguf);
        }
    }
    Ok(())
}

async fn fused(
    fusion: &Fusion,
    ctx: &RequestCtx,
    plan: Plan,
    request: ModelRequest,
    args: &AskArgs,
) -> anyhow::Result<()> {
    let model = request.model.clone();
    let mut screen = display::Panel::new(&plan, !args.json);
    let mut items = fusion.run(ctx, plan, request);
    let mut outcome = RunOutcome::default();
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
    while outcome.report.is_none() {
        let item = tokio::select! {
            item = items.next() => item,
            _ = ticker.tick() => { screen.tick(); continue; }
        };
        let item = match item {
            Some(Ok(item)) => item,
            Some(Err(e)) => {
                screen.failed();
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&e.to_body())?);
                }
                anyhow::bail!("fusion failed: {e}");
            }
            None => anyhow::bail!("the fusion run ended without a result"),
        };
        if let Item::Event(event) = &item {
            screen.event(event);
        }
        // The outcome gathers the answer's text; the screen shows what this item added to it.
        let shown = outcome.text.len();
        outcome.record(&item);
        if !args.json && outcome.text.len() > shown {
            write_out(&outcome.text[shown..])?;
        }
    }
    if args.json {
        let completion = outcome.into_completion(model)?;
        println!("{}", serde_json::to_string_pretty(&completion)?);
        return Ok(());
    }
    let Some(report) = outcome.report else {
        anyhow::bail!("the fusion run ended without a result");
    };
    write_out("\n")?;
    if args.show_panel {
        display::show_panel(&report);
    }
    display::show_sources(&report);
    eprintln!("{}", display::cost_line(&report));
    Ok(())
}

async fn solo(
    fusion: &Fusion,
    ctx: &RequestCtx,
    mut request: ModelRequest,
    args: &AskArgs,
) -> anyhow::Result<()> {
    request.stream = true;
    eprintln!("asking {} …", request.model);
    let mut stream = fusion.router().stream(ctx, request).await?;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                write_out(text)?;
            }
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    write_out("\n")?;
    if let (true, Some(u)) = (args.usage, usage) {
        eprintln!(
            "usage: {} prompt + {} completion tokens, cost ${}",
            u.prompt_tokens,
            u.completion_tokens,
            u.cost.unwrap_or_default()
        );
    }
    Ok(())
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the answer")
}
