//! Requests the gateway runs itself: fusion (`quorate/fusion`, the `fusion` plugin, the
//! `quorate:fusion` tool) and server research tools (`quorate:web_search` / `web_fetch` on a
//! plain model): which route a request takes, and the run it starts. `answer.rs` turns the run
//! into a completion or chunks for every surface.

use futures::StreamExt;
use quorate_api::{ChatChunk, ChatCompletion, ChunkChoice, Delta, ModelRequest};
use quorate_fusion::{Fusion, FusionError, FusionStream, Item, Plan, ResearchPlan};
use quorate_providers::{Error, RequestCtx};

use crate::record::Recorder;
use crate::AppState;

/// How a request uses fusion.
pub enum Route {
    /// The whole pipeline: slug or plugin.
    Pipeline(Plan),
    /// The request's model, offered the fusion tool at `tools[index]`.
    Tool(usize, Plan),
    /// The request's model, researching with the gateway's web tools.
    Research(ResearchPlan),
}

impl Route {
    /// A fusion run (the pipeline or the fusion tool), not a model researching alone.
    pub fn is_fusion(&self) -> bool {
        matches!(self, Route::Pipeline(_) | Route::Tool(..))
    }
}

/// The fusion route a request asks for, if any; a slug or plugin and the tool at once is an error.
pub fn route(
    fusion: &Fusion,
    ctx: &RequestCtx,
    req: &ModelRequest,
) -> Result<Option<Route>, Error> {
    let plan = fusion.plan(ctx, req)?;
    let tool = fusion.tool_plan(ctx, req)?;
    match (plan, tool) {
        (Some(_), Some((index, _))) => Err(Error::BadRequest(format!(
            "tools[{index}]: the fusion tool cannot be combined with a fusion model or plugin"
        ))),
        (Some(plan), None) => Ok(Some(Route::Pipeline(plan))),
        (None, Some((index, plan))) => Ok(Some(Route::Tool(index, plan))),
        (None, None) => Ok(fusion.research_plan(req)?.map(Route::Research)),
    }
}

/// Starts the run a route asks for: its items, and whether progress events were asked for.
pub fn run(
    state: &AppState,
    ctx: &RequestCtx,
    route: Route,
    request: ModelRequest,
) -> (FusionStream, bool) {
    match route {
        Route::Pipeline(plan) => {
            let progress = plan.stream_progress;
            (state.fusion.run(ctx, plan, request), progress)
        }
        Route::Tool(index, plan) => {
            let progress = plan.stream_progress;
            (state.fusion.run_tool(ctx, plan, index, request), progress)
        }
        Route::Research(plan) => (state.fusion.run_research(ctx, plan, request), false),
    }
}

/// The next item a client without progress events would see; the events before it go to the
/// recorder.
pub async fn next_output(
    items: &mut FusionStream,
    recorder: &mut Recorder,
) -> Option<Result<Item, FusionError>> {
    loop {
        match items.next().await {
            Some(Ok(Item::Event(event))) => recorder.item(&Item::Event(event)),
            other => return other,
        }
    }
}

/// A whole completion as one chunk: role, text and tool calls in one delta, with its finish reason.
pub fn answer_chunk(completion: &ChatCompletion) -> ChatChunk {
    let choices = completion
        .choices
        .iter()
        .map(|choice| {
            let message = &choice.message;
            let tool_calls = message.tool_calls.as_ref().map(|calls| {
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| quorate_api::ToolCallDelta {
                        index: i as u32,
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: Some(quorate_api::FunctionDelta {
                            name: Some(call.function.name.clone()),
                            arguments: Some(call.function.arguments.clone()),
                        }),
                    })
                    .collect()
            });
            let mut extra = serde_json::Map::new();
            if let Some(annotations) = message.extra.get("annotations") {
                extra.insert("annotations".into(), annotations.clone());
            }
            ChunkChoice {
                index: choice.index,
                delta: Delta {
                    role: Some(message.role),
                    content: message.content.as_ref().map(|c| c.text()),
                    tool_calls,
                    extra,
                },
                finish_reason: choice.finish_reason.clone(),
                extra: Default::default(),
            }
        })
        .collect();
    let mut chunk = ChatChunk::empty(completion.model.clone());
    chunk.choices = choices;
    chunk
}
