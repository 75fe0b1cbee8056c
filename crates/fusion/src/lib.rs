//! The fusion pipeline, the product: a request fans out to a panel of models, a judge compares
//! their answers in a structured analysis (consensus, contradictions, partial coverage, unique
//! insights, blind spots), and a synthesizer writes one answer grounded in it. The caller sees an
//! ordinary chat completion, with usage summed over every inner call and a `fusion` object that
//! tells what each stage did.

pub mod analysis;
mod plan;
mod prompts;
mod report;
mod run;

use std::sync::Arc;

use futures::StreamExt;
use quorate_api::{ChatChunk, ChatCompletion, ChatRequest};
use quorate_providers::{Error, Router};
use serde_json::{Map, Value};

pub use analysis::Analysis;
pub use plan::Plan;
pub use prompts::Prompts;
pub use report::{FailureReason, FusionError, FusionReport, MemberReport, MemberStatus};
pub use run::{FusionStream, Item};

#[derive(Clone)]
pub struct Fusion {
    router: Router,
    prompts: Arc<Prompts>,
}

impl Fusion {
    /// Loads the prompt templates (built-in, or overridden from `fusion.prompts_dir`).
    pub fn new(router: Router) -> Result<Self, String> {
        let prompts = Prompts::load(router.config().fusion.prompts_dir.as_deref())?;
        Ok(Self {
            router,
            prompts: Arc::new(prompts),
        })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The run `req` asks for, or `None` for an ordinary completion.
    pub fn plan(&self, req: &ChatRequest) -> Result<Option<Plan>, Error> {
        Plan::from_request(self.router.config(), req)
    }

    /// Runs the pipeline as a stream: progress events, synthesis chunks, then the report.
    pub fn run(&self, plan: Plan, request: ChatRequest) -> FusionStream {
        let deadline = tokio::time::Instant::now() + plan.total_timeout;
        run::Run {
            router: self.router.clone(),
            prompts: self.prompts.clone(),
            plan,
            request,
            deadline,
        }
        .stream()
    }

    /// Runs the pipeline to the end: one `chat.completion` with the `fusion` object.
    pub async fn complete(
        &self,
        plan: Plan,
        request: ChatRequest,
    ) -> Result<ChatCompletion, FusionError> {
        let model = request.model.clone();
        let mut stream = self.run(plan, request);
        let mut text = String::new();
        let mut finish = None;
        while let Some(item) = stream.next().await {
            match item? {
                Item::Event(_) => {}
                Item::Chunk(chunk) => {
                    for choice in chunk.choices {
                        text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                        finish = choice.finish_reason.or(finish);
                    }
                }
                Item::Done(report) => return Ok(completion(model, text, finish, &report)),
            }
        }
        Err(FusionError::plain(Error::InvalidResponse(
            "the fusion run ended without a result".into(),
        )))
    }
}

/// The `chat.completion` a run's text and report make.
pub fn completion(
    model: String,
    text: String,
    finish: Option<String>,
    report: &FusionReport,
) -> ChatCompletion {
    let finish = finish.or_else(|| Some("stop".into()));
    let mut completion = ChatCompletion::assistant(model, text, finish);
    completion.usage = Some(report.total_usage());
    completion.extra.insert("fusion".into(), report.to_value());
    completion
}

/// The last chunk of a streamed run: no choices, the summed usage and the `fusion` object.
pub fn final_chunk(model: &str, report: &FusionReport) -> ChatChunk {
    let mut chunk = empty_chunk(model);
    chunk.usage = Some(report.total_usage());
    chunk.extra.insert("fusion".into(), report.to_value());
    chunk
}

/// A progress chunk: no choices, so clients that did not ask for progress can ignore it safely.
pub fn progress_chunk(model: &str, event: Value) -> ChatChunk {
    let mut chunk = empty_chunk(model);
    chunk.extra.insert("fusion_event".into(), event);
    chunk
}

fn empty_chunk(model: &str) -> ChatChunk {
    ChatChunk {
        id: String::new(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: model.to_string(),
        choices: Vec::new(),
        usage: None,
        extra: Map::new(),
    }
}
