//! The Anthropic dialect: `/v1/messages`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::openai::{error, prompt_tokens, respond, Ctx, Dialect, Piece};
use crate::script::Answer;
use crate::Sim;

pub(crate) async fn messages(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    respond(sim, "/v1/messages", headers, body, AnthropicDialect).await
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as usage counts them. Like Anthropic's,
/// it refuses the generation fields (`max_tokens`, `stream`, ...).
pub(crate) async fn count_tokens(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // What a generation takes and a count does not.
    const REFUSED: &[&str] = &[
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
    ];
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(&AnthropicDialect, 400, &format!("invalid JSON: {e}"), None),
    };
    sim.record("/v1/messages/count_tokens", &headers, &body);
    let fields = body.as_object().into_iter().flat_map(|o| o.keys());
    if let Some(extra) = fields.into_iter().find(|k| REFUSED.contains(&k.as_str())) {
        let message = format!("{extra}: Extra inputs are not permitted");
        return error(&AnthropicDialect, 400, &message, None);
    }
    axum::Json(json!({"input_tokens": prompt_tokens(&body)})).into_response()
}

struct AnthropicDialect;

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Dialect for AnthropicDialect {
    fn frame(&self, piece: &Piece, ctx: &Ctx) -> String {
        match piece {
            Piece::Start => {
                let message = json!({"id": "msg_sim", "type": "message", "role": "assistant", "model": ctx.model,
                    "content": [], "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": 1}});
                event(
                    "message_start",
                    json!({"type": "message_start", "message": message}),
                ) + &event("ping", json!({"type": "ping"}))
            }
            Piece::Text(t) => {
                // The first token also opens the text block; a block start carries no text.
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": t}}),
                )
            }
            Piece::ToolStart { index, id, name } => {
                // A new block closes the one before it.
                let close = if *index > 0 {
                    event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index - 1}),
                    )
                } else {
                    String::new()
                };
                close
                    + &event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    )
            }
            Piece::ToolArgs { index, arguments } => event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ),
            Piece::Finish { tool_calls } => {
                event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": tool_calls.saturating_sub(1)}),
                ) + &event(
                    "message_delta",
                    json!({"type": "message_delta",
                        "delta": {"stop_reason": if *tool_calls > 0 { "tool_use" } else { "end_turn" }},
                        "usage": {"output_tokens": ctx.completion_tokens}}),
                )
            }
            Piece::Usage => event("message_stop", json!({"type": "message_stop"})),
        }
    }

    fn done(&self) -> Option<String> {
        None
    }

    fn error_event(&self) -> String {
        event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "simulated mid-stream failure"}}),
        )
    }

    fn error_body(&self, status: u16, message: &str) -> Value {
        let kind = match status {
            429 => "rate_limit_error",
            400 => "invalid_request_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }

    fn completion(&self, answer: &Answer, ctx: &Ctx) -> Value {
        let (content, stop) = match answer {
            Answer::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
            Answer::ToolCalls(calls) => {
                let blocks: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        let input: Value =
                            serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
                    })
                    .collect();
                (Value::Array(blocks), "tool_use")
            }
        };
        json!({
            "id": "msg_sim", "type": "message", "role": "assistant", "model": ctx.model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": ctx.completion_tokens},
        })
    }
}
