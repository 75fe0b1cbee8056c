//! The Anthropic dialect: `/v1/messages`, written with the gateway's own Anthropic wire types
//! (`quorate_api::anthropic`), which its Anthropic provider reads.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use quorate_api::anthropic::{
    Block, BlockDelta, ErrorDetail, ErrorResponse, MessageDelta, MessageResponse, MessageUsage,
    MessagesRequest, Stop, StopReason, StreamEvent, TokenCount,
};
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
    let count = TokenCount {
        input_tokens: prompt_tokens(&body),
    };
    axum::Json(count).into_response()
}

struct AnthropicDialect;

impl AnthropicDialect {
    fn usage(ctx: &Ctx, output_tokens: u64) -> MessageUsage {
        MessageUsage {
            input_tokens: ctx.prompt_tokens,
            output_tokens,
            ..MessageUsage::default()
        }
    }
}

fn events(events: impl IntoIterator<Item = StreamEvent>) -> String {
    events.into_iter().map(|e| e.sse()).collect()
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Dialect for AnthropicDialect {
    fn frame(&self, piece: &Piece, ctx: &Ctx) -> String {
        match piece {
            Piece::Start => {
                let mut message = MessageResponse::new("msg_sim", &ctx.model);
                message.usage = Self::usage(ctx, 1);
                events([StreamEvent::MessageStart { message }, StreamEvent::Ping])
            }
            // The first token also opens the text block; a block start carries no text.
            Piece::Text(text) => events([StreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta { text: text.clone() },
            }]),
            Piece::ToolStart { index, id, name } => {
                // A new block closes the one before it.
                let close = index
                    .checked_sub(1)
                    .map(|index| StreamEvent::ContentBlockStop { index });
                let start = StreamEvent::ContentBlockStart {
                    index: *index,
                    content_block: Block::ToolUse {
                        id: id.clone(),
                        name: name.clone(),
                        input: json!({}),
                    },
                };
                events(close.into_iter().chain([start]))
            }
            Piece::ToolArgs { index, arguments } => events([StreamEvent::ContentBlockDelta {
                index: *index,
                delta: BlockDelta::InputJsonDelta {
                    partial_json: arguments.clone(),
                },
            }]),
            Piece::Finish { tool_calls } => events([
                StreamEvent::ContentBlockStop {
                    index: tool_calls.saturating_sub(1),
                },
                StreamEvent::MessageDelta(MessageDelta {
                    delta: Stop {
                        stop_reason: Some(stop_reason(*tool_calls)),
                        stop_sequence: None,
                    },
                    usage: MessageUsage {
                        output_tokens: ctx.completion_tokens,
                        ..MessageUsage::default()
                    },
                    ..MessageDelta::default()
                }),
            ]),
            Piece::Usage => events([StreamEvent::MessageStop]),
        }
    }

    /// Anthropic refuses a body that is not a Messages request (no `max_tokens`, a turn of an
    /// unknown role, ...).
    fn check(&self, body: &Value) -> Result<(), String> {
        <MessagesRequest as serde::Deserialize>::deserialize(body)
            .map(drop)
            .map_err(|e| format!("not a Messages request: {e}"))
    }

    fn done(&self) -> Option<String> {
        None
    }

    fn error_event(&self) -> String {
        StreamEvent::Error {
            error: ErrorDetail::new(529, "simulated mid-stream failure"),
        }
        .sse()
    }

    fn error_body(&self, status: u16, message: &str) -> Value {
        to_json(ErrorResponse::new(status, message))
    }

    fn completion(&self, answer: &Answer, ctx: &Ctx) -> Value {
        let mut message = MessageResponse::new("msg_sim", &ctx.model);
        let (content, stop) = match answer {
            Answer::Text(text) => (vec![Block::text(text.as_str())], StopReason::EndTurn),
            Answer::ToolCalls(calls) => (
                calls
                    .iter()
                    .map(|c| Block::ToolUse {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        input: serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({})),
                    })
                    .collect(),
                StopReason::ToolUse,
            ),
        };
        message.content = content;
        message.stop_reason = Some(stop);
        message.usage = Self::usage(ctx, ctx.completion_tokens);
        to_json(message)
    }
}

fn stop_reason(tool_calls: usize) -> StopReason {
    if tool_calls > 0 {
        StopReason::ToolUse
    } else {
        StopReason::EndTurn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_anthropic_would_refuse_is_refused() {
        let valid = json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(AnthropicDialect.check(&valid).is_ok());
        let mut capless = valid.clone();
        capless.as_object_mut().unwrap().remove("max_tokens");
        let reason = AnthropicDialect.check(&capless).unwrap_err();
        assert!(reason.contains("max_tokens"), "{reason}");
        let system_turn = json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "system", "content": "hi"}]});
        assert!(AnthropicDialect.check(&system_turn).is_err());
    }
}
