//! `POST /v1/chat/completions`: parse and check the request, route it, answer as JSON or SSE.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{Stream, StreamExt};
use http_body_util::LengthLimitError;
use quorate_api::{
    ChatChunk, ChatRequest, ChunkChoice, Content, Delta, ErrorBody, ModelRequest, Usage,
    FUSION_DEPTH_HEADER,
};
use quorate_config::{Config, ProviderKind};
use quorate_providers::{in_span, Error, RequestCtx};
use serde::Serialize;

use crate::answer::{self, Chunks, Dialect, Refused};
use crate::record::{Caller, Recorder};
use crate::{ApiError, AppState};

const KEEPALIVE_FRAME: &[u8] = b": quorate processing\n\n";

/// Parsed once: a header named by a string is parsed again on every lookup.
static FUSION_DEPTH: HeaderName = HeaderName::from_static(FUSION_DEPTH_HEADER);

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(mut ctx): Extension<RequestCtx>,
    request: Request,
) -> Response {
    let openrouter = crate::context::openrouter_path(request.uri().path());
    let (accepted, usage_asked) = match accept(&state, &mut ctx, request, "chat", parse).await {
        Ok(accepted) => accepted,
        Err(e) => return ApiError(e).into_response(),
    };
    let framing = Framing::of(openrouter, usage_asked);
    let dialect = Dialect {
        events: move |chunks, id, model| frames(chunks, id, model, framing),
        body: |completion| axum::Json(completion).into_response(),
        refuse: Refused::response,
        progress: true,
    };
    answer::respond(&state, ctx, accepted, dialect).await
}

/// A request read, checked and routed, with the recorder that follows it. Boxed on the way
/// (see `accept`): it is moved through the handler's futures, which are moved whole.
pub struct Accepted {
    pub request: ModelRequest,
    pub route: Option<crate::fusion::Route>,
    pub recorder: Recorder,
}

/// A surface's parser: the body into the internal request, and what only the surface reads.
pub type Parse<W> = fn(&[u8]) -> Result<(ModelRequest, W), Error>;

/// Reads the body within `server.body_timeout_s`, parses it with the surface's `parse` into the
/// internal request and what only the surface reads (`W`), and routes it; a request refused on
/// the way is recorded before its error is returned.
pub async fn accept<W>(
    state: &AppState,
    ctx: &mut RequestCtx,
    request: Request,
    surface: &'static str,
    parse: Parse<W>,
) -> Result<(Box<Accepted>, W), Error> {
    let caller = request.extensions().get::<Caller>().cloned();
    let depth = request.headers().get(&FUSION_DEPTH).cloned();
    let mut body = None;
    let parsed = read_body(state, request.into_body())
        .await
        .and_then(|bytes| {
            let request = parse(&bytes);
            body = Some(bytes);
            request
        })
        .and_then(|(r, wire)| {
            ctx.fusion_depth = fusion_depth(depth.as_ref())?;
            let route = crate::fusion::route(&state.fusion, ctx, &r)?;
            servable(state.router.config(), &r, route.is_some())?;
            Ok((r, wire, route))
        });
    let store = state.store.as_ref();
    match parsed {
        Ok((request, wire, route)) => {
            let fusion = route.as_ref().is_some_and(crate::fusion::Route::is_fusion);
            let recorder = Recorder::start(
                store,
                ctx,
                caller.as_ref(),
                Some((&request, body)),
                fusion,
                surface,
            );
            let accepted = Box::new(Accepted {
                request,
                route,
                recorder,
            });
            Ok((accepted, wire))
        }
        Err(e) => {
            tracing::info!(status = e.status(), error = %e, "rejected request");
            Recorder::start(store, ctx, caller.as_ref(), None, false, surface).failed(&e, false);
            Err(e)
        }
    }
}

/// Refuses what the answer would silently drop: more than one choice where only one comes back
/// (fusion, local and Anthropic models; OpenAI-compatible upstreams get `n` as sent), and images
/// for a model that reads text only (local models).
pub(crate) fn servable(
    config: &Config,
    request: &ModelRequest,
    gateway_run: bool,
) -> Result<(), Error> {
    let kind = config
        .provider_of(&request.model)
        .and_then(|p| config.providers.get(p))
        .map(|p| p.kind);
    let n = request.extra.get("n").and_then(serde_json::Value::as_u64);
    if n.is_some_and(|n| n > 1) && (gateway_run || kind != Some(ProviderKind::Openai)) {
        return Err(Error::BadRequest(format!(
            "n: {} answers with one choice per request; send n = 1 (or leave it out) and ask \
             again for more",
            request.model
        )));
    }
    if kind == Some(ProviderKind::Local) {
        for (i, message) in request.messages.iter().enumerate() {
            let Some(Content::Parts(parts)) = &message.content else {
                continue;
            };
            if let Some(j) = parts.iter().position(|p| p["type"] != "text") {
                return Err(Error::BadRequest(format!(
                    "messages[{i}].content[{j}]: {} reads text only (input modalities: text)",
                    request.model
                )));
            }
        }
    }
    Ok(())
}

/// How a chat completions stream is framed: as OpenAI does on `/v1`, as OpenRouter does on
/// `/api/v1`.
#[derive(Clone, Copy)]
pub struct Framing {
    /// Whether the stream ends with a usage chunk (`choices: []`). OpenAI sends one only when
    /// `stream_options.include_usage` asks for it, and the usual client loop
    /// (`chunk.choices[0].delta`) fails on it otherwise; OpenRouter always sends it.
    pub usage_chunk: bool,
    /// Error events in OpenAI's dialect (`code` a name) rather than OpenRouter's (the status).
    openai_errors: bool,
}

impl Framing {
    fn of(openrouter: bool, usage_asked: bool) -> Self {
        Self {
            usage_chunk: openrouter || usage_asked,
            openai_errors: !openrouter,
        }
    }

    /// The SSE event of a failure.
    pub fn error(&self, body: &ErrorBody) -> Bytes {
        let json = if self.openai_errors {
            serde_json::to_string(&body.openai())
        } else {
            serde_json::to_string(body)
        };
        Bytes::from(format!("data: {}\n\n", json.unwrap_or_default()))
    }
}

/// How deep in fusion runs the caller is: another Quorate's inner calls carry the header.
fn fusion_depth(value: Option<&HeaderValue>) -> Result<u8, Error> {
    let Some(value) = value else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::BadRequest(format!("{FUSION_DEPTH_HEADER}: want a small integer")))
}

/// The whole body, at most `server.max_body_bytes`, within `server.body_timeout_s` of the
/// headers: one deadline for all of it, not per read (tower-http's body timeout restarts at every
/// frame, so a byte a second never trips it). Read from the body alone: the request's head stays
/// out of the handler's future, which is moved whole.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, Error> {
    let (max, limit) = (
        state.router.config().server.max_body_bytes,
        state.body_timeout,
    );
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Ok(body) => body.map_err(body_error),
        Err(_) => Err(Error::Timeout(format!(
            "the request body did not arrive within server.body_timeout_s ({}s)",
            limit.as_secs_f64()
        ))),
    }
}

fn body_error(error: axum::Error) -> Error {
    let error = error.into_inner();
    if error.is::<LengthLimitError>() {
        Error::PayloadTooLarge("request body is larger than server.max_body_bytes allows".into())
    } else {
        Error::BadRequest(format!("cannot read the request body: {error}"))
    }
}

/// Strict JSON parsing whose errors name the offending field, then field-level validation; with
/// the request, whether the caller asked for a stream's usage chunk
/// (`stream_options.include_usage`).
pub fn parse(bytes: &[u8]) -> Result<(ModelRequest, bool), Error> {
    let request: ChatRequest = answer::decode(bytes)?;
    let usage_asked = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let request = request.into_request().map_err(Error::BadRequest)?;
    Ok((request, usage_asked))
}

/// An SSE response. Its body is polled after the handler returned, so it is put back in the
/// request's span (log lines and upstream calls it makes keep the request id).
pub fn sse_response(frames: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let open = crate::metrics::OpenStream::open();
    let frames = in_span(tracing::Span::current(), frames).map(move |frame| {
        // Held until the body is dropped: finished, or its client gone.
        let _ = &open;
        frame
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(
            frames.map(Ok::<_, std::convert::Infallible>),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A chunk as an SSE event. Chunks are plain data: serializing one cannot fail, and if it ever
/// did the client would see an empty event rather than a half-written one.
pub fn data_frame(value: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_default();
    Bytes::from(format!("data: {json}\n\n"))
}

/// The SSE body of an answer's chunks, each with the gateway's id and time, then `[DONE]`; a
/// failure as an error event. With a usage chunk (`framing`) every chunk goes out as it comes,
/// and a stream whose upstream sent no usage ends with an empty one. Without it, usage leaves
/// the chunks, and the chunk that finishes the answer is held back to go last, carrying the
/// run's `fusion` or `research` object.
fn frames(
    chunks: Chunks,
    id: String,
    model: String,
    framing: Framing,
) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        let created = unix_millis() / 1000;
        let stamp = |mut chunk: ChatChunk| {
            chunk.id.clone_from(&id);
            chunk.created = created;
            data_frame(&chunk)
        };
        let mut saw_usage = false;
        let mut last_model = model;
        let mut finishing: Option<ChatChunk> = None;
        let mut chunks = chunks;
        while let Some(chunk) = chunks.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(body) => {
                    if let Some(held) = finishing.take() {
                        yield stamp(held);
                    }
                    yield framing.error(&body);
                    return;
                }
            };
            saw_usage |= chunk.usage.is_some();
            last_model.clone_from(&chunk.model);
            if framing.usage_chunk || is_progress(&chunk) {
                yield stamp(chunk);
            } else if chunk.choices.is_empty() {
                yield stamp(closing(finishing.take(), chunk));
            } else {
                chunk.usage = None;
                if finishes(&chunk) {
                    if let Some(held) = finishing.replace(chunk) {
                        yield stamp(held);
                    }
                } else {
                    yield stamp(chunk);
                }
            }
        }
        if let Some(held) = finishing.take() {
            yield stamp(held);
        }
        if framing.usage_chunk && !saw_usage {
            tracing::warn!(model = %last_model, "upstream stream carried no usage");
            yield stamp(empty_usage_chunk(last_model));
        }
        yield Bytes::from_static(b"data: [DONE]\n\n");
    }
}

fn finishes(chunk: &ChatChunk) -> bool {
    chunk.choices.iter().any(|c| c.finish_reason.is_some())
}

/// A fusion's progress chunk (`fusion_event`, no choices).
fn is_progress(chunk: &ChatChunk) -> bool {
    chunk.choices.is_empty() && chunk.extra.contains_key("fusion_event")
}

/// The stream's last chunk when it has no usage chunk: the held finishing chunk (or a bare
/// `stop`), carrying the run's `fusion` or `research` object from `last` (the usage-only chunk
/// that ends a run or a model's stream).
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

fn empty_usage_chunk(model: String) -> ChatChunk {
    let mut chunk = ChatChunk::empty(model);
    chunk.usage = Some(Usage {
        cost: Some(Default::default()),
        ..Usage::default()
    });
    chunk
}

/// Sends an SSE comment whenever `inner` is quiet for `every`, so proxies keep the connection.
pub fn with_keepalive(
    inner: impl Stream<Item = Bytes> + Send + 'static,
    every: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    async_stream::stream! {
        let mut inner = std::pin::pin!(inner);
        loop {
            tokio::select! {
                item = inner.next() => match item {
                    Some(frame) => yield frame,
                    None => return,
                },
                () = tokio::time::sleep(every) => yield Bytes::from_static(KEEPALIVE_FRAME),
            }
        }
    }
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert!(message("{\"model\": \"m\", \"messages\": [").starts_with("malformed JSON body"));
        assert!(message("{\"messages\": []}").contains("model"));
        let m =
            message("{\"model\": \"m\", \"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}");
        assert!(m.contains("messages[0]") && m.contains("bot"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":1,"content":"x"}]}"#);
        assert!(m.starts_with("messages[0].role: invalid type"), "{m}");
        let body = r#"{"model":"m","messages":[{"role":"user","content":"x","cache":{}}]}"#;
        let (request, _) = parse(body.as_bytes()).unwrap();
        assert!(
            request.messages[0].extra.contains_key("cache"),
            "unknown fields still forwarded"
        );
        let m = message("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": \"many\"}");
        assert!(m.starts_with("max_tokens"), "{m}");
        let m = message("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 9}");
        assert!(m.starts_with("temperature"), "{m}");
        let m = message("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"seed\": \"x\"}");
        assert!(m.starts_with("seed"), "{m}");
        let m = message("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": {\"type\": \"xml\"}}");
        assert!(m.starts_with("response_format") && m.contains("xml"), "{m}");
        assert!(
            message("{\"model\": \"m\", \"messages\": []} x").starts_with("malformed JSON body")
        );
        let alone = r#"{"models": ["a/x", "b/y"], "messages": [{"role": "user", "content": "x"}]}"#;
        let (request, _) = parse(alone.as_bytes()).unwrap();
        assert_eq!(
            (request.model.as_str(), request.fallbacks),
            ("a/x", Some(vec!["b/y".to_string()]))
        );
    }
}
