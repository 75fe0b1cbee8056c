//! Fusion requests (`quorate/fusion`, the `fusion` plugin): the pipeline's result as an ordinary
//! completion, or as SSE with the `fusion` object on the final chunk and, when asked for,
//! progress chunks (`fusion_event`, empty `choices`) while the panel works.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use quorate_fusion::{final_chunk, progress_chunk, FusionError, FusionStream, Item, Plan};
use quorate_providers::Error;

use crate::chat::{body_frame, data_frame, sse_response, unix_millis, with_keepalive};
use crate::{AppState, FusionApiError};

pub async fn respond(
    state: &AppState,
    plan: Plan,
    request: quorate_api::ChatRequest,
    id: String,
) -> Response {
    let model = request.model.clone();
    let preset = plan.preset.clone();
    if request.stream == Some(true) {
        return stream(state, plan, request, id).await;
    }
    match state.fusion.complete(plan, request).await {
        Ok(mut completion) => {
            tracing::info!(%model, %preset, status = 200, "fusion");
            completion.id = id;
            completion.created = unix_millis() / 1000;
            axum::Json(completion).into_response()
        }
        Err(e) => {
            tracing::warn!(%model, %preset, status = e.status(), error = %e, "fusion failed");
            FusionApiError(e).into_response()
        }
    }
}

/// Without progress events, waits up to one keep-alive interval for the first output so that a
/// run failing early (e.g. every member refused) still answers with its HTTP status.
async fn stream(
    state: &AppState,
    plan: Plan,
    request: quorate_api::ChatRequest,
    id: String,
) -> Response {
    let progress = plan.stream_progress;
    let model = request.model.clone();
    let mut items = state.fusion.run(plan, request);
    let mut first = None;
    if !progress {
        match tokio::time::timeout(state.keepalive, next_output(&mut items)).await {
            Ok(Some(Err(e))) => {
                tracing::warn!(%model, status = e.status(), error = %e, "fusion failed");
                return FusionApiError(e).into_response();
            }
            Ok(item) => first = item,
            Err(_) => {}
        }
    }
    let frames = frames(first, items, id, model, progress);
    sse_response(with_keepalive(frames, state.keepalive))
}

/// The next item a client without progress events would see.
async fn next_output(items: &mut FusionStream) -> Option<Result<Item, FusionError>> {
    loop {
        match items.next().await {
            Some(Ok(Item::Event(_))) => continue,
            other => return other,
        }
    }
}

fn frames(
    first: Option<Result<Item, FusionError>>,
    mut items: FusionStream,
    id: String,
    model: String,
    progress: bool,
) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        let created = unix_millis() / 1000;
        let stamp = |mut chunk: quorate_api::ChatChunk| {
            chunk.id.clone_from(&id);
            chunk.created = created;
            chunk
        };
        let mut pending = first;
        loop {
            let item = match pending.take() {
                Some(item) => Some(item),
                None => items.next().await,
            };
            match item {
                Some(Ok(Item::Event(event))) => {
                    if progress {
                        yield data_frame(&stamp(progress_chunk(&model, event)));
                    }
                }
                Some(Ok(Item::Chunk(chunk))) => yield data_frame(&stamp(*chunk)),
                Some(Ok(Item::Done(report))) => {
                    tracing::info!(%model, preset = %report.preset, status = 200, "fusion stream");
                    yield data_frame(&stamp(final_chunk(&model, &report)));
                    yield Bytes::from_static(b"data: [DONE]\n\n");
                    return;
                }
                Some(Err(e)) => {
                    tracing::warn!(%model, status = e.status(), error = %e, "fusion stream failed");
                    yield body_frame(&e.to_body());
                    return;
                }
                None => {
                    let e = Error::InvalidResponse("the fusion run ended without a result".into());
                    yield body_frame(&e.to_body());
                    return;
                }
            }
        }
    }
}
