//! Requests the gateway runs itself: fusion (`quorate/fusion`, the `fusion` plugin, the
//! `quorate:fusion` tool) and server research tools (`quorate:web_search` / `web_fetch` on a
//! plain model). The result is an ordinary completion, or SSE with the `fusion` object on the
//! last chunk (the usage chunk when there is one, else the chunk that finishes the answer) and,
//! when asked for, progress chunks (`fusion_event`, empty `choices`).

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use quorate_api::{ChatChunk, ChatCompletion, ChatRequest, ChunkChoice, Delta};
use quorate_fusion::{Fusion, FusionError, FusionStream, Item, Plan, ResearchPlan, RunOutcome};
use quorate_providers::{Error, RequestCtx};

use crate::chat::{data_frame, sse_response, unix_millis, with_keepalive, Framing};
use crate::record::Recorder;
use crate::{AppState, FusionApiError};

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
pub fn route(fusion: &Fusion, ctx: &RequestCtx, req: &ChatRequest) -> Result<Option<Route>, Error> {
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

pub async fn respond(
    state: &AppState,
    ctx: &RequestCtx,
    route: Route,
    request: ChatRequest,
    mut recorder: Recorder,
    framing: Framing,
) -> Response {
    let model = request.model.clone();
    let id = ctx.id.clone();
    let streaming = request.stream == Some(true);
    let (items, progress) = run(state, ctx, route, request);
    if streaming {
        let shape = Shape { progress, framing };
        return stream(state, items, shape, model, id, recorder).await;
    }
    let outcome = RunOutcome::read_with(items, |item| recorder.item(item)).await;
    match outcome.and_then(|o| o.into_completion(model.clone())) {
        Ok(mut completion) => {
            tracing::info!(%model, status = 200, "fusion");
            completion.id = id;
            completion.created = unix_millis() / 1000;
            let response = axum::Json(&completion).into_response();
            recorder.completed_later(completion);
            response
        }
        Err(e) => {
            tracing::warn!(%model, status = e.status(), error = %e, "fusion failed");
            recorder.fusion_failed(&e, false);
            FusionApiError(e).into_response()
        }
    }
}

/// Starts the run a route asks for: its items, and whether progress events were asked for.
pub fn run(
    state: &AppState,
    ctx: &RequestCtx,
    route: Route,
    request: ChatRequest,
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

/// What a stream carries besides the answer.
#[derive(Clone, Copy)]
struct Shape {
    /// `fusion_event` chunks (the plan's `stream_progress`).
    progress: bool,
    /// With a usage chunk, the last chunk (`choices: []`) carries usage and the `fusion` object;
    /// without it, the chunk that finishes the answer carries the `fusion` object and comes last.
    framing: Framing,
}

/// Without progress events, waits up to one keep-alive interval for the first output so that a
/// run failing early (e.g. every member refused) still answers with its HTTP status.
async fn stream(
    state: &AppState,
    mut items: FusionStream,
    shape: Shape,
    model: String,
    id: String,
    mut recorder: Recorder,
) -> Response {
    let mut first = None;
    if !shape.progress {
        let output = next_output(&mut items, &mut recorder);
        match tokio::time::timeout(state.keepalive, output).await {
            Ok(Some(Err(e))) => {
                tracing::warn!(%model, status = e.status(), error = %e, "fusion failed");
                recorder.fusion_failed(&e, false);
                return FusionApiError(e).into_response();
            }
            Ok(item) => first = item,
            Err(_) => {}
        }
    }
    let frames = frames(first, items, id, model, shape, recorder);
    sse_response(with_keepalive(frames, state.keepalive))
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

/// The SSE body: the run's chunks with the request's id, shaped as `shape` says, then
/// `[DONE]`; or the error body where the run failed.
fn frames(
    first: Option<Result<Item, FusionError>>,
    items: FusionStream,
    id: String,
    model: String,
    shape: Shape,
    recorder: Recorder,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let chunks = crate::answer::fusion_chunks(first, items, model, recorder, shape.progress);
    async_stream::stream! {
        let created = unix_millis() / 1000;
        let stamp = |mut chunk: ChatChunk| {
            chunk.id.clone_from(&id);
            chunk.created = created;
            chunk
        };
        // Without a usage chunk, the chunk that finishes the answer waits to come last.
        let mut finishing: Option<ChatChunk> = None;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(body) => {
                    yield shape.framing.error(&body);
                    return;
                }
            };
            if shape.framing.usage_chunk {
                yield data_frame(&stamp(chunk));
            } else if finishes(&chunk) {
                finishing = Some(chunk);
            } else if is_last(&chunk) {
                yield data_frame(&stamp(closing(finishing.take(), chunk)));
            } else {
                yield data_frame(&stamp(chunk));
            }
        }
        yield Bytes::from_static(b"data: [DONE]\n\n");
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

fn finishes(chunk: &ChatChunk) -> bool {
    chunk.choices.iter().any(|c| c.finish_reason.is_some())
}

/// The run's last chunk (no choices: the usage and the `fusion` or `research` object), not a
/// progress chunk.
fn is_last(chunk: &ChatChunk) -> bool {
    chunk.choices.is_empty() && !chunk.extra.contains_key("fusion_event")
}

/// The stream's last chunk when it has no usage chunk: the held finishing chunk (or a bare
/// `stop`), carrying the run's `fusion` or `research` object from `last`.
fn closing(held: Option<ChatChunk>, last: ChatChunk) -> ChatChunk {
    let mut chunk = held.unwrap_or_else(|| {
        let mut chunk = ChatChunk::empty(last.model.clone());
        chunk.choices.push(ChunkChoice {
            index: 0,
            delta: Delta::default(),
            finish_reason: Some("stop".into()),
            extra: Default::default(),
        });
        chunk
    });
    for key in ["fusion", "research"] {
        if let Some(object) = last.extra.get(key) {
            chunk.extra.insert(key.into(), object.clone());
        }
    }
    chunk
}
