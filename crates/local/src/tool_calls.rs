//! Tool calls in a local model's output. Models whose chat template renders `tools` (Qwen2.5
//! among them) answer a call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; this
//! splits their text as it streams into plain text and calls in OpenAI's shape.

use quorate_api::ModelRequest;
use quorate_providers::Error;
use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// How a request uses tools on a local model.
pub struct ToolUse<'a> {
    /// The tools the template shows the model; `None` when the model is to answer in text.
    pub tools: Option<&'a [Value]>,
    /// What the answer is made to start with: a call's opening when `tool_choice` forces one
    /// (the model cannot choose not to call, or to call another function).
    pub prefill: String,
}

impl<'a> ToolUse<'a> {
    /// Reads `tools` and `tool_choice`; the errors name the field.
    pub fn of(req: &'a ModelRequest, model: &str, template_has_tools: bool) -> Result<Self, Error> {
        let bad = |m: String| Error::BadRequest(m);
        let tools = Some(req.tools.as_slice()).filter(|t| !t.is_empty());
        let choice = req.tool_choice.as_ref();
        let Some(tools) = tools.filter(|_| choice.and_then(Value::as_str) != Some("none")) else {
            return Ok(Self {
                tools: None,
                prefill: String::new(),
            });
        };
        if !template_has_tools {
            return Err(bad(format!(
                "tools: {model}'s chat template has no tools, so it cannot call them"
            )));
        }
        let prefill = match choice {
            None => String::new(),
            Some(Value::String(s)) if s == "auto" => String::new(),
            Some(Value::String(s)) if s == "required" => format!("{OPEN}\n"),
            Some(v) => {
                let name = v.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                    bad("tool_choice: must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}".into())
                })?;
                let known = tools
                    .iter()
                    .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
                if !known {
                    return Err(bad(format!(
                        "tool_choice.function.name: {name:?} is not one of the tools"
                    )));
                }
                format!("{OPEN}\n{{\"name\": {}, \"arguments\": ", Value::from(name))
            }
        };
        Ok(Self {
            tools: Some(tools),
            prefill,
        })
    }

    /// The parser for the answer, already past the prefill.
    pub fn parser(&self) -> Option<ToolCalls> {
        self.tools?;
        let mut calls = ToolCalls::default();
        calls.push(&self.prefill);
        Some(calls)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// `arguments` is JSON text, as OpenAI sends it.
    Call {
        name: String,
        arguments: String,
    },
}

#[derive(Default)]
pub struct ToolCalls {
    held: String,
    in_call: bool,
    calls: usize,
    /// Whether any text went out yet: an answer that opens with `{` or a code fence is held
    /// whole, since small models sometimes write the call's JSON without its tags.
    spoke: bool,
}

impl ToolCalls {
    /// The pieces that are complete after `text`; a possible start of a tag is held back.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.held.find(CLOSE) else {
                    break;
                };
                let body: String = self.held.drain(..end + CLOSE.len()).collect();
                out.push(self.call(&body[..end]));
                self.in_call = false;
            } else if let Some(start) = self.held.find(OPEN) {
                let before: String = self.held.drain(..start + OPEN.len()).collect();
                self.text(&before[..start], &mut out);
                self.in_call = true;
            } else if !self.spoke && may_be_bare(&self.held) {
                break;
            } else {
                let keep = partial_tag(&self.held);
                let cut = self.held.len() - keep;
                let before: String = self.held.drain(..cut).collect();
                self.text(&before, &mut out);
                break;
            }
        }
        out
    }

    /// What is left when the output ends: a call the model did not close is still a call if its
    /// JSON is whole; anything else is text, so nothing the model wrote is lost.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        if self.in_call {
            self.in_call = false;
            match parse(&rest) {
                Some(call) => {
                    self.calls += 1;
                    out.push(call);
                }
                None => out.push(Piece::Text(format!("{OPEN}{rest}"))),
            }
        } else if let Some(calls) = (!self.spoke).then(|| bare_calls(&rest)).flatten() {
            self.calls += calls.len();
            out.extend(calls);
        } else {
            self.text(&rest, &mut out);
        }
        out
    }

    fn call(&mut self, body: &str) -> Piece {
        match parse(body) {
            Some(call) => {
                self.calls += 1;
                call
            }
            None => Piece::Text(format!("{OPEN}{body}{CLOSE}")),
        }
    }

    /// Text between calls is only the template's line breaks: kept before the first call only.
    fn text(&mut self, text: &str, out: &mut Vec<Piece>) {
        let between_calls = self.calls > 0 && text.trim().is_empty();
        if !text.is_empty() && !between_calls {
            self.spoke |= !text.trim().is_empty();
            out.push(Piece::Text(text.to_string()));
        }
    }
}

fn parse(body: &str) -> Option<Piece> {
    call(&serde_json::from_str(body.trim()).ok()?)
}

/// `{"name": ..., "arguments": ...}` as a call; arguments as JSON text.
fn call(value: &Value) -> Option<Piece> {
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = match value.get("arguments") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(Piece::Call { name, arguments })
}

/// A whole answer that is only calls' JSON objects, untagged (one after another, as small models
/// write several): each must have both keys, so a JSON answer of another shape stays text.
fn bare_calls(text: &str) -> Option<Vec<Piece>> {
    let json = quorate_api::text::unfenced(text);
    let values = serde_json::Deserializer::from_str(json).into_iter::<Value>();
    let calls = values
        .map(|value| {
            let value = value.ok()?;
            value.get("arguments")?;
            call(&value)
        })
        .collect::<Option<Vec<Piece>>>()?;
    (!calls.is_empty()).then_some(calls)
}

/// Whether the output so far may still turn out to be an untagged call.
fn may_be_bare(held: &str) -> bool {
    let start = held.trim_start();
    start.starts_with('{') || "```".starts_with(start) || start.starts_with("```")
}

/// Length of the longest suffix of `text` that begins the opening tag.
fn partial_tag(text: &str) -> usize {
    (1..OPEN.len())
        .rev()
        .find(|&n| text.ends_with(&OPEN[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parts: &[&str]) -> Vec<Piece> {
        let mut calls = ToolCalls::default();
        let mut out: Vec<Piece> = parts.iter().flat_map(|p| calls.push(p)).collect();
        out.extend(calls.finish());
        out
    }

    fn call(name: &str, arguments: &str) -> Piece {
        Piece::Call {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn calls_split_across_pieces_are_parsed() {
        let out = run(&[
            "Let me look.\n<tool",
            "_call>\n{\"name\": \"web_search\", \"argu",
            "ments\": {\"query\": \"tallest tower\"}}\n</tool_call>\n<tool_call>\n",
            "{\"name\": \"web_fetch\", \"arguments\": {\"url\": \"https://a.example/\"}}\n</tool_call>",
        ]);
        assert_eq!(
            out,
            [
                Piece::Text("Let me look.\n".into()),
                call("web_search", r#"{"query":"tallest tower"}"#),
                call("web_fetch", r#"{"url":"https://a.example/"}"#),
            ]
        );
    }

    #[test]
    fn plain_text_and_broken_calls_stay_text() {
        assert_eq!(
            run(&["a < b and <tool", "s> are fine"]),
            [
                Piece::Text("a < b and ".into()),
                Piece::Text("<tools> are fine".into())
            ]
        );
        assert_eq!(
            run(&["<tool_call>{not json}</tool_call>"]),
            [Piece::Text("<tool_call>{not json}</tool_call>".into())]
        );
        // Stopped at the end-of-turn token before the closing tag: still a whole call.
        assert_eq!(
            run(&["<tool_call>\n{\"name\": \"f\", \"arguments\": \"{}\"}\n"]),
            [call("f", "{}")]
        );
        assert_eq!(
            run(&["<tool_call>{\"name\": \"f\""]),
            [Piece::Text("<tool_call>{\"name\": \"f\"".into())]
        );
    }

    #[test]
    fn several_untagged_calls_are_several_calls() {
        let two =
            "{\"name\": \"f\", \"arguments\": {}}\n{\"name\": \"g\", \"arguments\": {\"u\": 2}}";
        assert_eq!(run(&[two]), [call("f", "{}"), call("g", r#"{"u":2}"#)]);
    }

    #[test]
    fn an_untagged_call_is_a_call_and_other_json_is_text() {
        assert_eq!(
            run(&[
                "{\"name\": \"web_fetch\", ",
                "\"arguments\": {\"url\": \"u\"}}"
            ]),
            [call("web_fetch", r#"{"url":"u"}"#)]
        );
        assert_eq!(
            run(&[
                "```json\n{\"name\": \"f\",",
                " \"arguments\": {\"q\": 1}}\n```"
            ]),
            [call("f", r#"{"q":1}"#)]
        );
        assert_eq!(
            run(&["{\"city\": ", "\"Paris\"}"]),
            [Piece::Text("{\"city\": \"Paris\"}".into())]
        );
        assert_eq!(
            run(&["Here: ", "{\"name\": \"f\", \"arguments\": {}}"]),
            [
                Piece::Text("Here: ".into()),
                Piece::Text("{\"name\": \"f\", \"arguments\": {}}".into())
            ]
        );
    }
}
