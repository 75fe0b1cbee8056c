//! A generation's events as OpenAI chunks (text, tool calls, finish, usage), and chunks back into
//! one completion.

use quorate_api::{
    ChatChunk, ChatCompletion, Delta, FunctionCall, FunctionDelta, Role, ToolCall, ToolCallDelta,
    Usage,
};
use quorate_providers::Error;
use serde_json::Map;

use crate::engine::{Event, Halt, Outcome};
use crate::tool_calls::{Piece, ToolCalls};

pub struct Output {
    model: String,
    /// Splits out tool calls when the request gave the model tools.
    calls: Option<ToolCalls>,
    made: u32,
    /// Stops the generation once its calls are made and it goes on to narrate their results.
    halt: Halt,
}

impl Output {
    pub fn new(model: &str, calls: Option<ToolCalls>, halt: Halt) -> Self {
        Self {
            model: model.to_string(),
            calls,
            made: 0,
            halt,
        }
    }

    pub fn role(&self) -> ChatChunk {
        self.chunk(
            Delta {
                role: Some(Role::Assistant),
                ..Delta::default()
            },
            None,
        )
    }

    /// The chunks one scheduler event becomes, and whether more events follow.
    pub fn chunks(&mut self, event: Event) -> (Vec<Result<ChatChunk, Error>>, bool) {
        match event {
            Event::Text(text) => {
                let pieces = match &mut self.calls {
                    Some(calls) => {
                        let pieces = calls.push(&text);
                        if calls.done() {
                            self.halt.stop();
                        }
                        pieces
                    }
                    None => vec![Piece::Text(text)],
                };
                (self.pieces(pieces), true)
            }
            Event::Done(outcome) => {
                let rest = self.calls.as_mut().map(ToolCalls::finish);
                let mut chunks = self.pieces(rest.unwrap_or_default());
                let reason = if self.made > 0 {
                    "tool_calls"
                } else {
                    outcome.finish.reason()
                };
                chunks.push(Ok(self.chunk(Delta::default(), Some(reason))));
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(usage(&outcome));
                chunks.push(Ok(last));
                (chunks, false)
            }
            Event::Failed(e) => (vec![Err(e)], false),
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> Vec<Result<ChatChunk, Error>> {
        pieces
            .into_iter()
            .map(|piece| Ok(self.piece(piece)))
            .collect()
    }

    fn piece(&mut self, piece: Piece) -> ChatChunk {
        let delta = match piece {
            Piece::Text(text) => Delta {
                content: Some(text),
                ..Delta::default()
            },
            Piece::Call { name, arguments } => {
                let index = self.made;
                self.made += 1;
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index,
                        id: Some(call_id(index)),
                        kind: Some("function".into()),
                        function: Some(FunctionDelta {
                            name: Some(name),
                            arguments: Some(arguments),
                        }),
                    }]),
                    ..Delta::default()
                }
            }
        };
        self.chunk(delta, None)
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::single("local", &self.model, delta, finish.map(str::to_string))
    }
}

/// A call id unique enough to pair a call with its result within a conversation.
fn call_id(index: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("call_{nanos:08x}{index}")
}

fn usage(outcome: &Outcome) -> Usage {
    let mut usage = Usage::new(outcome.prompt_tokens, outcome.completion_tokens);
    usage.cost = Some(Default::default());
    if outcome.cached_tokens > 0 {
        usage.extra.insert(
            "prompt_tokens_details".into(),
            serde_json::json!({"cached_tokens": outcome.cached_tokens}),
        );
    }
    usage
}

/// Chunks gathered back into one completion.
#[derive(Default)]
pub struct Whole {
    text: String,
    calls: Vec<ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Whole {
    pub fn add(&mut self, chunk: ChatChunk) {
        for choice in chunk.choices {
            self.text
                .push_str(choice.delta.content.as_deref().unwrap_or_default());
            for call in choice.delta.tool_calls.into_iter().flatten() {
                let function = call.function.unwrap_or_default();
                self.calls.push(ToolCall {
                    id: call.id.unwrap_or_default(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: function.name.unwrap_or_default(),
                        arguments: function.arguments.unwrap_or_default(),
                    },
                    extra: Map::new(),
                });
            }
            self.finish = choice.finish_reason.or(self.finish.take());
        }
        self.usage = chunk.usage.or(self.usage.take());
    }

    pub fn completion(self, model: String) -> ChatCompletion {
        let mut completion = ChatCompletion::assistant(model, self.text, self.finish);
        if !self.calls.is_empty() {
            if let Some(choice) = completion.choices.first_mut() {
                if choice.message.text().trim().is_empty() {
                    choice.message.content = None;
                }
                choice.message.tool_calls = Some(self.calls);
            }
        }
        completion.usage = self.usage;
        completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narration_after_a_call_halts_the_generation() {
        let halt = Halt::default();
        let mut output = Output::new("m", Some(ToolCalls::default()), halt.clone());
        let call = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n";
        let (chunks, more) = output.chunks(Event::Text(call.into()));
        assert!(more && chunks.len() == 1 && !halt.stopped());
        let (chunks, _) = output.chunks(Event::Text("It returned 4.".into()));
        assert!(chunks.is_empty(), "the narration is not passed on");
        assert!(halt.stopped());
    }

    #[test]
    fn text_alone_never_halts() {
        let halt = Halt::default();
        let mut output = Output::new("m", Some(ToolCalls::default()), halt.clone());
        output.chunks(Event::Text("Paris is the capital.".into()));
        assert!(!halt.stopped());
    }
}
