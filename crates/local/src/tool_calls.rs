//! Tool calls in a local model's output. Models whose chat template renders `tools` (Qwen2.5
//! among them) answer a call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; this
//! splits their text as it streams into plain text and calls in OpenAI's shape. Small models also
//! write the call's JSON in a code fence or bare, echo the template's `<tools>` list, and after a
//! call often go on to narrate results they have not seen: a fence of calls is calls (as
//! llama.cpp's own parser takes them); an echo is dropped, and so is anything after the calls
//! that cannot open another call (prose, a fence of something else, JSON).

use quorate_api::ModelRequest;
use quorate_providers::Error;
use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const FENCE: &str = "```";
/// The template lists the tools within `<tools></tools>`; a model repeating that is no answer, and
/// left in the conversation it leads the next turn astray.
const ECHO: &str = "<tools>";
const ECHO_CLOSE: &str = "</tools>";

/// What starts in a model's text.
#[derive(Clone, Copy)]
enum Mark {
    Call,
    Fence,
    Echo,
}

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
    /// Whether any text went out yet: an answer that opens with `{` is held whole, since small
    /// models sometimes write the call's JSON without its tags.
    spoke: bool,
    /// Calls were made and text that cannot be another call followed: the rest is dropped.
    done: bool,
}

impl ToolCalls {
    /// The pieces that are complete after `text`; a possible start of a tag is held back.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.held.push_str(text);
        loop {
            if self.in_call {
                let Some(end) = self.held.find(CLOSE) else {
                    break;
                };
                let body: String = self.held.drain(..end + CLOSE.len()).collect();
                self.call(&body[..end], &mut out);
                self.in_call = false;
            } else if self.calls > 0 && !may_open(self.held.trim_start()) {
                self.end();
                break;
            } else if !self.spoke && self.held.trim_start().starts_with('{') {
                // Perhaps an untagged call, whose arguments may hold anything: judged whole.
                break;
            } else if let Some((start, mark)) = opening(&self.held) {
                let before: String = self.held.drain(..start).collect();
                self.text(&before, &mut out);
                match mark {
                    Mark::Call => {
                        self.held.drain(..OPEN.len());
                        self.in_call = true;
                    }
                    Mark::Fence => {
                        let Some(end) = fence_end(&self.held) else {
                            break;
                        };
                        let block: String = self.held.drain(..end).collect();
                        match fenced_calls(&block) {
                            Some(calls) => self.made(calls, &mut out),
                            // After calls, a fence of anything else is imagined results.
                            None if self.calls > 0 => {
                                self.end();
                                break;
                            }
                            None => self.text(&block, &mut out),
                        }
                    }
                    Mark::Echo => match echo(&self.held) {
                        None => break,
                        Some(false) => {
                            let tag: String = self.held.drain(..ECHO.len()).collect();
                            self.text(&tag, &mut out);
                        }
                        Some(true) => {
                            let Some(end) = self.held.find(ECHO_CLOSE) else {
                                break;
                            };
                            self.held.drain(..end + ECHO_CLOSE.len());
                        }
                    },
                }
            } else {
                let keep = partial_opening(&self.held);
                let cut = self.held.len() - keep;
                let before: String = self.held.drain(..cut).collect();
                self.text(&before, &mut out);
                break;
            }
        }
        out
    }

    /// Whether the calls are made and the model went on to write something else, so its
    /// generation can stop.
    pub fn done(&self) -> bool {
        self.done
    }

    /// What is left when the output ends: a call the model did not close (tag or fence) is still
    /// a call if its JSON is whole; anything else is text, but for what follows calls and a
    /// tool-list echo.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.in_call {
            self.in_call = false;
            match parse(&rest) {
                Some(call) => self.made(vec![call], &mut out),
                None => out.push(Piece::Text(format!("{OPEN}{rest}"))),
            }
            return out;
        }
        let calls = if rest.starts_with(FENCE) {
            // A fence the model did not close (it stopped after the call inside).
            fenced_calls(&rest)
        } else {
            (!self.spoke).then(|| bare_calls(&rest)).flatten()
        };
        match calls {
            Some(calls) => self.made(calls, &mut out),
            // What is held after calls could only have opened another; an echo is dropped.
            None if self.calls > 0 || echo(&rest) == Some(true) => {}
            None => self.text(&rest, &mut out),
        }
        out
    }

    fn made(&mut self, calls: Vec<Piece>, out: &mut Vec<Piece>) {
        self.calls += calls.len();
        out.extend(calls);
    }

    /// Calls are made and what follows cannot be another: the rest is dropped.
    fn end(&mut self) {
        self.done = true;
        self.held.clear();
    }

    /// A closed `<tool_call>`: the call, or its text as written when its JSON is no call.
    fn call(&mut self, body: &str, out: &mut Vec<Piece>) {
        match parse(body) {
            Some(call) => self.made(vec![call], out),
            None => out.push(Piece::Text(format!("{OPEN}{body}{CLOSE}"))),
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

/// Whether `start` (what follows a call, leading space trimmed) may still open another call.
fn may_open(start: &str) -> bool {
    let begins = |mark: &str| mark.starts_with(start) || start.starts_with(mark);
    begins(OPEN) || begins(FENCE)
}

/// A code fence (closed, or cut short) that holds only calls, tagged or not, as those calls.
fn fenced_calls(block: &str) -> Option<Vec<Piece>> {
    bare_calls(block).or_else(|| tagged_calls(fence_body(block)))
}

/// Text that holds only tagged calls (and space between them), as its calls; what a nested
/// parse drops (an echo, text after the calls) does not count against it.
fn tagged_calls(text: &str) -> Option<Vec<Piece>> {
    let mut inner = ToolCalls::default();
    let mut pieces = inner.push(text);
    pieces.extend(inner.finish());
    let only_calls = pieces.iter().all(|piece| match piece {
        Piece::Call { .. } => true,
        Piece::Text(text) => text.trim().is_empty(),
    });
    let calls: Vec<Piece> = pieces
        .into_iter()
        .filter(|piece| matches!(piece, Piece::Call { .. }))
        .collect();
    (only_calls && !calls.is_empty()).then_some(calls)
}

/// A fence's content, without its info string (`json`, `xml`, ...) or closing fence.
fn fence_body(block: &str) -> &str {
    let inner = block.strip_prefix(FENCE).unwrap_or(block);
    let inner = inner.strip_suffix(FENCE).unwrap_or(inner);
    inner.split_once('\n').map_or("", |(_, body)| body)
}

/// Whether `text`, which starts with `<tools>`, echoes the template's tool list (the tools'
/// JSON objects, or nothing, up to `</tools>`) or is something else; `None` while it cannot tell.
fn echo(text: &str) -> Option<bool> {
    let after = text.strip_prefix(ECHO)?.trim_start();
    let starts = [ECHO_CLOSE, "{\"type\"", "{\"function\""];
    if starts.iter().any(|s| after.starts_with(s)) {
        Some(true)
    } else if starts.iter().any(|s| s.starts_with(after)) {
        None
    } else {
        Some(false)
    }
}

/// Where the first call tag, code fence or tools echo starts, and which.
fn opening(text: &str) -> Option<(usize, Mark)> {
    [(OPEN, Mark::Call), (FENCE, Mark::Fence), (ECHO, Mark::Echo)]
        .into_iter()
        .filter_map(|(mark, kind)| text.find(mark).map(|i| (i, kind)))
        .min_by_key(|(i, _)| *i)
}

/// The length of the code fence `text` opens, up to its closing fence; `None` while unclosed.
fn fence_end(text: &str) -> Option<usize> {
    let body = FENCE.len();
    text[body..].find(FENCE).map(|i| body + i + FENCE.len())
}

/// Length of the longest suffix of `text` that begins the call tag, a code fence or an echo.
fn partial_opening(text: &str) -> usize {
    let partial = |mark: &str| {
        (1..mark.len())
            .rev()
            .find(|&n| text.ends_with(&mark[..n]))
            .unwrap_or(0)
    };
    [OPEN, FENCE, ECHO]
        .map(partial)
        .into_iter()
        .max()
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
                Piece::Text("<tools>".into()),
                Piece::Text(" are fine".into())
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

    /// What Qwen2.5-Coder 1.5B wrote given the research tools: a plan, a fenced call, then the
    /// results it imagined. The call is made and the imagined rest is dropped.
    #[test]
    fn a_fenced_call_after_text_is_a_call_and_what_follows_it_is_dropped() {
        let mut calls = ToolCalls::default();
        let mut out = Vec::new();
        for part in [
            "I'll search first.\n\n<tools></tools>\n\n`",
            "``json\n{\"name\": \"web_search\", \"arguments\": ",
            "{\"query\": \"Lindesnes\"}}\n``",
            "`\n\n",
        ] {
            out.extend(calls.push(part));
            assert!(!calls.done(), "{out:?}");
        }
        out.extend(calls.push("After searching, I found that it was lit in"));
        assert!(calls.done());
        out.extend(calls.push(" 1700."));
        out.extend(calls.finish());
        assert_eq!(
            out,
            [
                Piece::Text("I'll search first.\n\n".into()),
                Piece::Text("\n\n".into()),
                call("web_search", r#"{"query":"Lindesnes"}"#),
            ]
        );
    }

    #[test]
    fn an_echo_of_the_tool_list_is_dropped() {
        let list = "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\"}}\n</tools>";
        assert_eq!(
            run(&["Tools:\n", list, "\nI know it: 3."]),
            [
                Piece::Text("Tools:\n".into()),
                Piece::Text("\nI know it: 3.".into())
            ]
        );
        // Cut short inside the echo: nothing of it is kept.
        assert_eq!(run(&["<tools>\n{\"type\": \"fun"]), []);
    }

    #[test]
    fn code_fences_hold_calls_or_stay_text() {
        assert_eq!(
            run(&["Run:\n``", "`sh\nls\n`", "``\nthen ", "look."]),
            [
                Piece::Text("Run:\n".into()),
                Piece::Text("```sh\nls\n```".into()),
                Piece::Text("\nthen ".into()),
                Piece::Text("look.".into()),
            ]
        );
        // A fence around a tagged call is the call.
        assert_eq!(
            run(&["Calling:\n```xml\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n```"]),
            [Piece::Text("Calling:\n".into()), call("f", "{}")]
        );
        // Cut short before its closing fence: still text.
        assert_eq!(
            run(&["See ```json\n{\"a\": 1}"]),
            [
                Piece::Text("See ".into()),
                Piece::Text("```json\n{\"a\": 1}".into())
            ]
        );
    }

    #[test]
    fn calls_may_follow_calls_but_text_after_them_ends_the_answer() {
        let tagged = |name: &str| {
            format!("<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {{}}}}\n</tool_call>")
        };
        let two = format!("{}\n{}\n", tagged("f"), tagged("g"));
        assert_eq!(run(&[&two]), [call("f", "{}"), call("g", "{}")]);
        let mut calls = ToolCalls::default();
        let first = calls.push(&format!("{}\nThe result is 3.", tagged("f")));
        assert_eq!(first, [call("f", "{}")]);
        assert!(calls.done());
        assert!(calls.push(&tagged("g")).is_empty());
        assert!(calls.finish().is_empty());
        // Imagined results in a fence, or as JSON, end the answer as prose does.
        for results in ["```json\n{\"t\": 21}\n```\nIt is 21.", "{\"results\": []}"] {
            let mut calls = ToolCalls::default();
            let mut out = calls.push(&format!("{}\n", tagged("f")));
            out.extend(calls.push(results));
            assert!(calls.done(), "{results}");
            out.extend(calls.finish());
            assert_eq!(out, [call("f", "{}")], "{results}");
        }
    }

    #[test]
    fn fences_and_tags_inside_calls_or_around_them() {
        // An untagged call whose arguments hold a fence is one call.
        let code = r#"{"name": "write", "arguments": {"text": "```py\nx = 1\n```"}}"#;
        assert_eq!(
            run(&[&code[..30], &code[30..]]),
            [call("write", r#"{"text":"```py\nx = 1\n```"}"#)]
        );
        // The model stopped after the call inside a fence it never closed.
        assert_eq!(
            run(&["```xml\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n"]),
            [call("f", "{}")]
        );
        // `<tools>` before a real call, or in prose, is no echo: kept.
        assert_eq!(
            run(&["<tools>\n<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"]),
            [
                Piece::Text("<tools>".into()),
                Piece::Text("\n".into()),
                call("f", "{}")
            ]
        );
        assert_eq!(
            run(&["Wrap them as <tools>{x}</tools>."]),
            [
                Piece::Text("Wrap them as ".into()),
                Piece::Text("<tools>".into()),
                Piece::Text("{x}</tools>.".into())
            ]
        );
    }
}
