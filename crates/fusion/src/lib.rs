//! The fusion pipeline, the product: a request fans out to a panel of models, a judge compares
//! their answers in a structured analysis (consensus, contradictions, partial coverage, unique
//! insights, blind spots), and a synthesizer writes one answer grounded in it. The caller sees an
//! ordinary chat completion, with usage summed over every inner call and a `fusion` object that
//! tells what each stage did.

pub mod analysis;
mod citations;
mod event;
mod outcome;
mod panel_cache;
mod plan;
mod prompts;
mod report;
mod research;
mod run;
mod server_tools;
mod strategy;
mod tool;

use std::sync::Arc;

use quorate_api::{ChatChunk, ChatCompletion, ModelRequest};
use quorate_config::Secrets;
use quorate_providers::{Error, RequestCtx, Router};
use quorate_tools::Toolbox;
use serde_json::Value;

pub use analysis::Analysis;
pub use citations::Numbered;
pub use event::FusionEvent;
pub use outcome::RunOutcome;
pub use panel_cache::{key as panel_key, KeptAnswer, PanelCache};
pub use plan::{Plan, PlanBuilder, FUSION_TOOL_TYPES};
pub use prompts::Prompts;
pub use report::{
    add as add_usage, EarlyExit, FailureReason, FusionError, FusionReport, MemberReport,
    MemberStatus,
};
pub use run::{FusionStream, Item};
pub use server_tools::ResearchPlan;
pub use strategy::{final_answer, Agreement, Saved, Selection, Strategy, VoteOutcome, VoteTally};

#[derive(Clone)]
pub struct Fusion {
    router: Router,
    prompts: Arc<Prompts>,
    toolbox: Arc<Toolbox>,
    panel_cache: Option<Arc<dyn PanelCache>>,
}

impl Fusion {
    /// Loads the prompt templates (built-in, or overridden from `fusion.prompts_dir`) and opens
    /// the research tools `[tools]` configures.
    pub fn new(router: Router) -> Result<Self, String> {
        let prompts = Prompts::load(router.config().fusion.prompts_dir.as_deref())?;
        let secrets = Secrets::from_env(router.config());
        let toolbox = Toolbox::from_config(&router.config().tools, &secrets)?;
        Ok(Self {
            router,
            prompts: Arc::new(prompts),
            toolbox: Arc::new(toolbox),
            panel_cache: None,
        })
    }

    /// Runs keep their plain members' answers in `cache` and replay what it holds.
    pub fn with_panel_cache(mut self, cache: Arc<dyn PanelCache>) -> Self {
        self.panel_cache = Some(cache);
        self
    }

    pub fn panel_cache(&self) -> Option<&Arc<dyn PanelCache>> {
        self.panel_cache.as_ref()
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn toolbox(&self) -> &Arc<Toolbox> {
        &self.toolbox
    }

    /// The run `req` asks for, or `None` for an ordinary completion. A request from inside a run
    /// may not start another.
    pub fn plan(&self, ctx: &RequestCtx, req: &ModelRequest) -> Result<Option<Plan>, Error> {
        let plan = Plan::from_request(self.router.config(), req)?;
        if plan.is_some() {
            plan::refuse_nested(ctx.fusion_depth)?;
        }
        Ok(plan)
    }

    /// Runs the pipeline as a stream: progress events, synthesis chunks, then the report.
    pub fn run(&self, ctx: &RequestCtx, plan: Plan, request: ModelRequest) -> FusionStream {
        self.start(ctx, plan, request).stream()
    }

    /// The fusion tool a request offers its model, if any: its index in `tools` and the run.
    /// Other `quorate:` / `openrouter:` server tools are refused by name until they exist.
    pub fn tool_plan(
        &self,
        ctx: &RequestCtx,
        req: &ModelRequest,
    ) -> Result<Option<(usize, Plan)>, Error> {
        let plan = Plan::for_tool(self.router.config(), req)?;
        if plan.is_some() {
            plan::refuse_nested(ctx.fusion_depth)?;
        }
        Ok(plan)
    }

    /// Runs the request's model with the fusion tool at `tools[index]`.
    pub fn run_tool(
        &self,
        ctx: &RequestCtx,
        plan: Plan,
        index: usize,
        request: ModelRequest,
    ) -> FusionStream {
        self.start(ctx, plan, request).tool_stream(index)
    }

    fn start(&self, ctx: &RequestCtx, plan: Plan, request: ModelRequest) -> run::Run {
        let deadline = tokio::time::Instant::now() + plan.total_timeout;
        run::Run {
            ctx: ctx.clone(),
            router: self.router.clone(),
            prompts: self.prompts.clone(),
            tools: self.toolbox.session(&plan.tools),
            plan,
            request,
            deadline,
            panel_cache: self.panel_cache.clone(),
        }
    }
}

/// Reads a run to the end: one `chat.completion`, with the `fusion` object when fusion ran.
pub async fn collect(stream: FusionStream, model: String) -> Result<ChatCompletion, FusionError> {
    RunOutcome::read(stream).await?.into_completion(model)
}

/// The last chunk of a streamed run: no choices, the summed usage and the `fusion` object.
pub fn final_chunk(model: &str, report: &FusionReport) -> ChatChunk {
    let mut chunk = ChatChunk::empty(model);
    chunk.usage = Some(report.total_usage());
    chunk.extra.insert("fusion".into(), report.to_value());
    chunk
}

/// The answer's `url_citation` annotations as a chunk of their own, after its text (as
/// OpenRouter streams them: in the delta).
pub fn annotations_chunk(model: &str, annotations: Vec<Value>) -> ChatChunk {
    let mut chunk = ChatChunk::empty(model);
    let mut delta = quorate_api::Delta::default();
    delta
        .extra
        .insert("annotations".into(), Value::Array(annotations));
    chunk.choices.push(quorate_api::ChunkChoice {
        index: 0,
        delta,
        finish_reason: None,
        extra: Default::default(),
    });
    chunk
}

/// A progress chunk: no choices, so clients that did not ask for progress can ignore it safely.
pub fn progress_chunk(model: &str, event: &FusionEvent) -> ChatChunk {
    let mut chunk = ChatChunk::empty(model);
    chunk.extra.insert("fusion_event".into(), event.to_value());
    chunk
}
