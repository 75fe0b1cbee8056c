//! The answer to an accepted request, whatever its route (a model, fusion, the research tools),
//! as one completion or as a stream of chat chunks, recorded on the way. Surfaces other than chat
//! completions (Anthropic Messages, OpenAI Responses) write these in their own dialect.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::Response;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use quorate_api::{ChatChunk, ChatCompletion, ErrorBody, ToolCallDelta, Usage};
use quorate_fusion::{
    annotations_chunk, final_chunk, progress_chunk, FusionError, FusionStream, Item, RunOutcome,
};
use quorate_providers::{Error, RequestCtx, RoutedStream};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::chat::{sse_response, unix_millis, with_keepalive, Accepted};
use crate::fusion::{answer_chunk, next_output};
use crate::record::Recorder;
use crate::AppState;

/// A failure in the middle of a stream: the error body (status, message, metadata).
pub type Failure = ErrorBody;

/// The answer's chunks; the last one carries the usage and the `fusion` or `research` object.
pub type Chunks = BoxStream<'static, Result<ChatChunk, Failure>>;

/// Why a request got no answer, before any of it was sent.
pub enum Refused {
    Plain(Error),
    Fusion(FusionError),
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::Plain(e) => e.status(),
            Refused::Fusion(e) => e.status(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refused::Plain(e) => e.to_string(),
            Refused::Fusion(e) => e.to_string(),
        }
    }

    /// The error body with everything the error knows: its code name, attempts, a fusion's
    /// report and failure reason.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            Refused::Plain(e) => e.to_body(),
            Refused::Fusion(e) => e.to_body(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refused::Plain(e) => e.retry_after(),
            Refused::Fusion(e) => e.error.retry_after(),
        }
    }

    /// A failed fusion run would run the whole panel again on a retry (unless an upstream asked
    /// for one later); the error response then says not to retry.
    pub fn retry_cannot_help(&self) -> bool {
        matches!(self, Refused::Fusion(_)) && self.retry_after().is_none()
    }

    /// The error response in the gateway's dialect (OpenAI's, or OpenRouter's by path).
    pub fn response(&self) -> Response {
        let mut response = crate::error::respond(self.status(), self.to_body(), self.retry_after());
        if self.retry_cannot_help() {
            crate::error::no_retry(&mut response);
        }
        response
    }
}

/// How a surface writes an answer: its stream events, its body, its error response.
pub struct Dialect<F> {
    /// The events of a stream, from the chunks, the run's id and the model asked.
    pub events: F,
    pub body: fn(&ChatCompletion) -> Response,
    pub refuse: fn(&Refused) -> Response,
    /// Whether the stream carries a fusion's progress chunks (`fusion_event`) when its plan
    /// asks for them: only chat completions have a place for them.
    pub progress: bool,
}

/// Answers an accepted request in a surface's dialect, streamed or whole.
pub async fn respond<F, S>(
    state: &AppState,
    ctx: RequestCtx,
    accepted: Box<Accepted>,
    dialect: Dialect<F>,
) -> Response
where
    F: FnOnce(Chunks, String, String) -> S,
    S: Stream<Item = Bytes> + Send + 'static,
{
    let (id, model) = (ctx.id().to_string(), accepted.request.model.clone());
    if accepted.request.stream {
        // Boxed, as below: the handler's future is moved whole through every layer of the
        // stack, so it stays small and the large answer states live on the heap once.
        return match Box::pin(chunks(state, ctx, accepted, dialect.progress)).await {
            Ok(chunks) => sse_response(with_keepalive(
                (dialect.events)(chunks, id, model),
                state.keepalive,
            )),
            Err(refused) => (dialect.refuse)(&refused),
        };
    }
    match Box::pin(complete(state, &ctx, accepted)).await {
        Ok((completion, recorder)) => {
            let response = (dialect.body)(&completion);
            recorder.completed_after(response, completion)
        }
        Err(refused) => (dialect.refuse)(&refused),
    }
}

/// A surface's request body, strictly. Most bodies are valid, so they are read at serde_json's
/// full speed; only one that fails is read again with its path tracked (which costs as much as
/// the parse itself), for an error that names the field (`messages[0].content: ...`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|first| explain::<T>(bytes, first))
}

fn explain<T: DeserializeOwned>(bytes: &[u8], first: serde_json::Error) -> Error {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let error = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(error) => error,
        // Only what follows the value can fail the first read and not this one.
        Ok(_) => return Error::BadRequest(format!("malformed JSON body: {first}")),
    };
    let path = error.path().to_string();
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        Error::BadRequest(format!("malformed JSON body: {inner}"))
    } else if path == "." {
        Error::BadRequest(format!("invalid request: {inner}"))
    } else {
        Error::BadRequest(format!("{path}: {inner}"))
    }
}

/// A streamed answer as a surface writes it: its text and calls in order, then how it ended.
pub enum Step {
    Text(String),
    Call(ToolCallDelta),
    /// The run failed midway: its status and message.
    Failed(Failure),
    /// The end: the usage, the finish reason and the `fusion` or `research` object.
    Done(Tally),
}

#[derive(Default)]
pub struct Tally {
    pub usage: Option<Usage>,
    pub finish: Option<String>,
    pub extensions: Map<String, Value>,
}

/// The steps of an answer's chunks; `Failed` or `Done` comes last.
pub fn steps(chunks: Chunks) -> impl Stream<Item = Step> + Send + 'static {
    async_stream::stream! {
        let mut tally = Tally::default();
        let mut chunks = chunks;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(failure) => {
                    yield Step::Failed(failure);
                    return;
                }
            };
            for key in ["fusion", "research"] {
                if let Some(value) = chunk.extra.get(key) {
                    tally.extensions.insert(key.into(), value.clone());
                }
            }
            if chunk.usage.is_some() {
                tally.usage = chunk.usage;
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    yield Step::Text(text);
                }
                for call in choice.delta.tool_calls.into_iter().flatten() {
                    yield Step::Call(call);
                }
                if choice.finish_reason.is_some() {
                    tally.finish = choice.finish_reason;
                }
            }
        }
        yield Step::Done(tally);
    }
}

/// The whole answer, with its recorder to finish once the response is built (so the record
/// takes the completion without a copy); a refusal is recorded here.
async fn complete(
    state: &AppState,
    ctx: &RequestCtx,
    accepted: Box<Accepted>,
) -> Result<(ChatCompletion, Recorder), Refused> {
    let Accepted {
        request,
        route,
        mut recorder,
    } = *accepted;
    let model = request.model.clone();
    let started = Instant::now();
    let mut completion = match route {
        Some(route) => {
            let (items, _) = crate::fusion::run(state, ctx, route, request);
            let outcome = RunOutcome::read_with(items, |item| recorder.item(item)).await;
            match outcome.and_then(|o| o.into_completion(model.clone())) {
                Ok(completion) => completion,
                Err(e) => {
                    tracing::warn!(%model, status = e.status(), error = %e, "fusion failed");
                    recorder.fusion_failed(&e, false);
                    return Err(Refused::Fusion(e));
                }
            }
        }
        None => match state.router.complete(ctx, &request).await {
            Ok(completion) => completion,
            Err(e) => {
                tracing::warn!(%model, status = e.status(), error = %e, "completion failed");
                recorder.failed(&e, false);
                return Err(Refused::Plain(e));
            }
        },
    };
    tracing::info!(%model, status = 200, ms = started.elapsed().as_millis() as u64, "completion");
    ctx.id().clone_into(&mut completion.id);
    completion.created = unix_millis() / 1000;
    Ok((completion, recorder))
}

/// The answer as it comes. A failure before the first output within one keep-alive interval
/// is refused with its HTTP status; past that the response starts (with keep-alives) and a
/// failure comes in-stream. A fusion whose plan asks for progress chunks (and a surface that
/// carries them) starts at once: its events are its first output.
pub async fn chunks(
    state: &AppState,
    ctx: RequestCtx,
    accepted: Box<Accepted>,
    progress: bool,
) -> Result<Chunks, Refused> {
    let Accepted {
        request,
        route,
        mut recorder,
    } = *accepted;
    let model = request.model.clone();
    let Some(route) = route else {
        let router = state.router.clone();
        let mut open: BoxFuture<'static, Result<RoutedStream, Error>> =
            Box::pin(async move { router.stream(&ctx, request).await });
        return match tokio::time::timeout(state.keepalive, &mut open).await {
            Ok(Err(e)) => {
                tracing::warn!(%model, status = e.status(), error = %e, "stream failed to start");
                recorder.failed(&e, false);
                Err(Refused::Plain(e))
            }
            Ok(Ok(opened)) => {
                Ok(plain_chunks(Box::pin(async { Ok(opened) }), model, recorder).boxed())
            }
            Err(_) => Ok(plain_chunks(open, model, recorder).boxed()),
        };
    };
    let (mut items, asked) = crate::fusion::run(state, &ctx, route, request);
    let progress = progress && asked;
    let mut first = None;
    if !progress {
        let output = next_output(&mut items, &mut recorder);
        match tokio::time::timeout(state.keepalive, output).await {
            Ok(Some(Err(e))) => {
                tracing::warn!(%model, status = e.status(), error = %e, "fusion failed");
                recorder.fusion_failed(&e, false);
                return Err(Refused::Fusion(e));
            }
            Ok(item) => first = item,
            Err(_) => {}
        }
    }
    Ok(fusion_chunks(first, items, model, recorder, progress).boxed())
}

/// A model's stream as chunks, recorded on the way; `open` is the stream still opening when the
/// response had to start.
fn plain_chunks(
    open: BoxFuture<'static, Result<RoutedStream, Error>>,
    model: String,
    recorder: Recorder,
) -> impl Stream<Item = Result<ChatChunk, Failure>> + Send + 'static {
    async_stream::stream! {
        // Taken by whichever way the stream ends; dropped unfinished, it records a client
        // that went away.
        let mut recorder = Some(recorder);
        let started = Instant::now();
        let mut opened = match open.await {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(%model, status = e.status(), error = %e, "stream failed to start");
                yield Err(ended(&mut recorder, &e));
                return;
            }
        };
        while let Some(item) = opened.next().await {
            match item {
                Ok(chunk) => {
                    if let Some(recorder) = recorder.as_mut() {
                        recorder.chunk(&chunk);
                    }
                    yield Ok(chunk);
                }
                Err(e) => {
                    tracing::warn!(%model, status = e.status(), error = %e, "stream broke off");
                    yield Err(ended(&mut recorder, &e));
                    return;
                }
            }
        }
        if let Some(recorder) = recorder.take() {
            recorder.streamed(None);
        }
        tracing::info!(%model, status = 200, ms = started.elapsed().as_millis() as u64, "stream");
    }
}

/// Records the failure that ends a stream (once: the recorder is taken) and gives its body.
fn ended(recorder: &mut Option<Recorder>, e: &Error) -> Failure {
    if let Some(recorder) = recorder.take() {
        recorder.failed(e, true);
    }
    e.to_body()
}

/// A fusion run's answer as chunks, the run recorded on the way: progress chunks when asked for,
/// the answer's own chunks, its annotations, then one with the usage and the `fusion` (or
/// `research`) object; or the failure.
pub fn fusion_chunks(
    first: Option<Result<Item, FusionError>>,
    mut items: FusionStream,
    model: String,
    recorder: Recorder,
    progress: bool,
) -> impl Stream<Item = Result<ChatChunk, Failure>> + Send + 'static {
    async_stream::stream! {
        // Taken by whichever way the stream ends; dropped unfinished, it records a client
        // that went away.
        let mut recorder = Some(recorder);
        let mut outcome = RunOutcome::default();
        let mut pending = first;
        loop {
            let item = match pending.take() {
                Some(item) => Some(item),
                None => items.next().await,
            };
            let item = match item {
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    tracing::warn!(%model, status = e.status(), error = %e, "fusion stream failed");
                    if let Some(recorder) = recorder.take() {
                        recorder.fusion_failed(&e, true);
                    }
                    yield Err(e.to_body());
                    return;
                }
                None => break,
            };
            outcome.record(&item);
            if let Some(recorder) = recorder.as_mut() {
                recorder.item(&item);
            }
            match item {
                Item::Event(event) if progress => yield Ok(progress_chunk(&model, &event)),
                Item::Event(_) => {}
                Item::Chunk(chunk) => yield Ok(*chunk),
                Item::Answer(completion) => yield Ok(answer_chunk(&completion)),
                Item::Annotations(annotations) => yield Ok(annotations_chunk(&model, annotations)),
                Item::Done(report) => {
                    tracing::info!(%model, preset = %report.preset, status = 200, "fusion stream");
                    if let Some(recorder) = recorder.take() {
                        recorder.streamed(Some(&report));
                    }
                    yield Ok(final_chunk(&model, &report));
                    return;
                }
            }
        }
        // A whole answer with no report (the fusion tool's model did not call fusion, or a
        // research answer): its usage and `research` object close the stream.
        let Some(answer) = outcome.answer else {
            let e = Error::InvalidResponse("the fusion run ended without a result".into());
            yield Err(ended(&mut recorder, &e));
            return;
        };
        if let Some(recorder) = recorder.take() {
            recorder.completed(&answer);
        }
        let mut last = ChatChunk::empty(model);
        last.usage = Some(answer.usage.clone().unwrap_or_default());
        if let Some(research) = answer.extra.get("research") {
            last.extra.insert("research".into(), research.clone());
        }
        yield Ok(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::anthropic::MessagesRequest;

    fn refused(body: &str) -> String {
        decode::<MessagesRequest>(body.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_failing_body_is_read_again_to_name_the_field() {
        let ok =
            r#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}"#;
        assert!(decode::<MessagesRequest>(ok.as_bytes()).is_ok());
        let e = refused(r#"{"model": "m", "max_tokens": "five", "messages": []}"#);
        assert!(e.starts_with("max_tokens: invalid type"), "{e}");
        let e = refused(r#"{"model": "m", "max_tokens": 5, "messages": [{"role": "bot"}]}"#);
        assert!(e.starts_with("messages[0].role"), "{e}");
        assert!(refused(r#"{"model": "m""#).starts_with("malformed JSON body"));
        assert!(refused(&format!("{ok} trailing")).starts_with("malformed JSON body"));
    }
}
