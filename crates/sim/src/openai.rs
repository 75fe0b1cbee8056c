//! The OpenAI dialect: `/v1/chat/completions`, plus the answer machinery both dialects share.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::script::{count_tokens, tokens, Answer, Fault, Script};
use crate::{Guard, Sim};

/// One step of an answer, rendered differently by each dialect.
pub(crate) enum Piece {
    Start,
    Text(String),
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolArgs {
        index: usize,
        arguments: String,
    },
    /// How many tool calls the answer made (0: it answered with text).
    Finish {
        tool_calls: usize,
    },
    Usage,
}

/// How a dialect writes answers and errors.
pub(crate) trait Dialect: Send + Sync + 'static {
    fn frame(&self, piece: &Piece, ctx: &Ctx) -> String;
    /// Refuses a body the real API would refuse, with its reason.
    fn check(&self, _body: &Value) -> Result<(), String> {
        Ok(())
    }
    fn done(&self) -> Option<String>;
    fn error_event(&self) -> String;
    fn error_body(&self, status: u16, message: &str) -> Value;
    fn completion(&self, answer: &Answer, ctx: &Ctx) -> Value;
}

/// What a dialect needs to render: the request's model and the counted usage.
pub(crate) struct Ctx {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: Option<f64>,
}

pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The prompt's tokens: every message's text and the system prompt, a word each.
pub(crate) fn prompt_tokens(body: &Value) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array);
    let mut tokens: u64 = messages
        .into_iter()
        .flatten()
        .map(|m| count_tokens(&text_of(m.get("content").unwrap_or(&Value::Null))))
        .sum();
    if let Some(system) = body.get("system") {
        tokens += count_tokens(&text_of(system));
    }
    tokens
}

/// Parses the body and answers it per script, in `dialect`.
pub(crate) async fn respond(
    sim: Sim,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
    dialect: impl Dialect,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(&dialect, 400, &format!("invalid JSON: {e}"), None),
    };
    if let Err(reason) = dialect.check(&body) {
        return error(&dialect, 400, &reason, None);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let prompt_tokens = prompt_tokens(&body);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (script, faulty, guard) = sim.begin(path, &headers, &body, &model);
    let fault = if faulty { script.fault } else { None };
    let answer = script.answer(&last_user);
    let completion_tokens = match &answer {
        Answer::Text(t) => count_tokens(t),
        Answer::ToolCalls(calls) => calls.iter().map(|c| count_tokens(&c.arguments) + 1).sum(),
    };
    let ctx = Ctx {
        model,
        prompt_tokens,
        completion_tokens,
        cost: script.cost,
    };
    match fault {
        Some(Fault::Status) => {
            pause(script.ttft()).await;
            guard.complete();
            let message = script
                .reply
                .clone()
                .unwrap_or_else(|| "simulated upstream failure".into());
            error(
                &dialect,
                script.status.unwrap_or(500),
                &message,
                script.retry_after,
            )
        }
        Some(Fault::Hang) => {
            futures::future::pending::<()>().await;
            unreachable_response()
        }
        _ if stream => stream_response(script, fault, answer, ctx, dialect, guard),
        Some(Fault::Malformed) => {
            guard.complete();
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"id\": \"x\", \"choices\": [",
            )
                .into_response()
        }
        _ => {
            let steps = tokens_of(&answer).len() as u32;
            pause(script.ttft() + script.token_delay() * steps).await;
            guard.complete();
            axum::Json(dialect.completion(&answer, &ctx)).into_response()
        }
    }
}

/// Sleeps, but not at all for zero: a zero tokio sleep still waits for the next timer tick
/// (about a millisecond), which would dwarf the latencies the benchmark measures.
async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn unreachable_response() -> Response {
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

fn tokens_of(answer: &Answer) -> Vec<String> {
    match answer {
        Answer::Text(t) => tokens(t),
        Answer::ToolCalls(calls) => calls.iter().map(|c| c.arguments.clone()).collect(),
    }
}

pub(crate) fn error(
    dialect: &impl Dialect,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, axum::Json(dialect.error_body(status, message))).into_response();
    if let Some(after) = retry_after {
        if let Ok(value) = after.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

fn pieces(answer: &Answer) -> Vec<Piece> {
    let mut out = vec![Piece::Start];
    match answer {
        Answer::Text(text) => out.extend(tokens(text).into_iter().map(Piece::Text)),
        Answer::ToolCalls(calls) => {
            for (index, call) in calls.iter().enumerate() {
                out.push(Piece::ToolStart {
                    index,
                    id: call.id.clone(),
                    name: call.name.clone(),
                });
                let args = &call.arguments;
                let mid = args
                    .char_indices()
                    .nth(args.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for part in [&args[..mid], &args[mid..]] {
                    out.push(Piece::ToolArgs {
                        index,
                        arguments: part.to_string(),
                    });
                }
            }
        }
    }
    out.push(Piece::Finish {
        tool_calls: match answer {
            Answer::ToolCalls(calls) => calls.len(),
            Answer::Text(_) => 0,
        },
    });
    out.push(Piece::Usage);
    out
}

fn stream_response(
    script: Script,
    fault: Option<Fault>,
    answer: Answer,
    ctx: Ctx,
    dialect: impl Dialect,
    guard: Guard,
) -> Response {
    let frames = async_stream::stream! {
        let pieces = pieces(&answer);
        let mut sent_tokens = 0;
        for (i, piece) in pieces.iter().enumerate() {
            let is_token = matches!(piece, Piece::Text(_) | Piece::ToolArgs { .. });
            if is_token {
                let delay = if sent_tokens == 0 { script.ttft() } else { script.token_delay() };
                pause(delay).await;
                if sent_tokens == script.cut_after() {
                    match fault {
                        Some(Fault::Cut) => {
                            yield Ok::<_, std::io::Error>(Bytes::from("data: {\"id\": \"cut\", \"choices\": [{\"delta\": {\"content\": \"tru"));
                            guard.complete();
                            return;
                        }
                        Some(Fault::ErrorEvent) => {
                            yield Ok(Bytes::from(dialect.error_event()));
                            guard.complete();
                            return;
                        }
                        _ => {}
                    }
                }
                sent_tokens += 1;
            }
            if i == 0 && fault == Some(Fault::Malformed) {
                yield Ok(Bytes::from("data: {not json\n\n"));
                guard.complete();
                return;
            }
            let frame = dialect.frame(piece, &ctx);
            if fault == Some(Fault::Drip) {
                for byte in frame.into_bytes() {
                    pause(Duration::from_millis(script.drip_ms.unwrap_or(1))).await;
                    yield Ok(Bytes::from(vec![byte]));
                }
            } else {
                yield Ok(Bytes::from(frame));
            }
        }
        if let Some(done) = dialect.done() {
            yield Ok(Bytes::from(done));
        }
        guard.complete();
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| unreachable_response())
}

pub(crate) async fn chat(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    respond(sim, "/v1/chat/completions", headers, body, OpenAiDialect).await
}

struct OpenAiDialect;

fn usage_json(ctx: &Ctx) -> Value {
    let mut usage = json!({
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "total_tokens": ctx.prompt_tokens + ctx.completion_tokens,
    });
    if let Some(cost) = ctx.cost {
        usage["cost"] = json!(cost);
    }
    usage
}

fn chunk(ctx: &Ctx, delta: Value, finish: Option<&str>) -> String {
    let value = json!({
        "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 0, "model": ctx.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {value}\n\n")
}

impl Dialect for OpenAiDialect {
    fn frame(&self, piece: &Piece, ctx: &Ctx) -> String {
        match piece {
            Piece::Start => chunk(ctx, json!({"role": "assistant", "content": ""}), None),
            Piece::Text(t) => chunk(ctx, json!({"content": t}), None),
            Piece::ToolStart { index, id, name } => chunk(
                ctx,
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            Piece::ToolArgs { index, arguments } => chunk(
                ctx,
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            ),
            Piece::Finish { tool_calls } => chunk(
                ctx,
                json!({}),
                Some(if *tool_calls > 0 {
                    "tool_calls"
                } else {
                    "stop"
                }),
            ),
            Piece::Usage => {
                let value = json!({
                    "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 0, "model": ctx.model,
                    "choices": [], "usage": usage_json(ctx),
                });
                format!("data: {value}\n\n")
            }
        }
    }

    fn done(&self) -> Option<String> {
        Some("data: [DONE]\n\n".to_string())
    }

    fn error_event(&self) -> String {
        format!(
            "data: {}\n\n",
            json!({"error": {"code": 502, "message": "simulated mid-stream failure"}})
        )
    }

    fn error_body(&self, status: u16, message: &str) -> Value {
        json!({"error": {"code": status, "message": message}})
    }

    fn completion(&self, answer: &Answer, ctx: &Ctx) -> Value {
        let (message, finish) = match answer {
            Answer::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
            Answer::ToolCalls(calls) => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
                (
                    json!({"role": "assistant", "content": null, "tool_calls": calls}),
                    "tool_calls",
                )
            }
        };
        json!({
            "id": "chatcmpl-sim", "object": "chat.completion", "created": 0, "model": ctx.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage_json(ctx),
        })
    }
}
