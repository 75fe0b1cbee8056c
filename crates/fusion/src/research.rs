//! How a model researches: an agentic loop for models that call functions (the gateway runs
//! their `web_search` / `web_fetch` calls, in parallel within a turn, until they answer or spend
//! `max_tool_calls`), and prefetch for those that cannot (the gateway searches the question,
//! fetches the top results and puts the most relevant passages in the prompt).

use std::collections::HashSet;

use quorate_api::{ChatCompletion, Message, ModelRequest, Role, ToolCall, Usage};
use quorate_config::{Config, ProviderKind};
use quorate_providers::{Error, RequestCtx, Router};
use quorate_tools::{Session, Source};
use serde::Serialize;
use serde_json::{json, Value};

use crate::prompts::{self, Prompts};
use crate::report::add;

/// What a researched answer came with.
#[derive(Debug, Default)]
pub struct Researched {
    /// The last completion: the answer, or tool calls the gateway does not run (client tools).
    pub completion: Option<ChatCompletion>,
    /// Usage summed over every turn.
    pub usage: Usage,
    pub sources: Vec<Source>,
    pub tool_calls: u32,
}

/// Reports each tool call as it starts (for progress events).
pub type OnCall<'a> = &'a (dyn Fn(&str, &Value) + Send + Sync);

/// The agentic loop. `req` already carries any client tools; the research functions are added.
/// A reply that calls a client tool ends the loop (the client runs those).
pub async fn agent(
    router: &Router,
    ctx: &RequestCtx,
    prompts: &Prompts,
    tools: &Session,
    mut req: ModelRequest,
    max_calls: u32,
    on_call: OnCall<'_>,
) -> Result<Researched, Error> {
    let mut done = Researched::default();
    let functions = tools.functions();
    let names: HashSet<String> = functions
        .iter()
        .filter_map(|f| f.pointer("/function/name")?.as_str().map(str::to_string))
        .collect();
    if max_calls > 0 && !functions.is_empty() {
        req.tools.extend(functions.iter().cloned());
    }
    loop {
        let spent = done.tool_calls >= max_calls;
        if spent && done.tool_calls > 0 {
            // The last turn: tools off, and the model told why.
            req.tool_choice = Some(json!("none"));
            let note =
                prompts.render(prompts::TOOLS_SPENT, json!({"max_tool_calls": max_calls}))?;
            req.messages.push(Message::new(Role::User, note.trim()));
        }
        let completion = router.complete(ctx, &req).await?;
        add(
            &mut done.usage,
            &completion.usage.clone().unwrap_or_default(),
        );
        let calls = research_calls(&completion, &names);
        if spent || calls.is_empty() {
            done.completion = Some(completion);
            return Ok(done);
        }
        let room = (max_calls - done.tool_calls) as usize;
        let results = futures::future::join_all(calls.iter().enumerate().map(|(i, call)| {
            let run = i < room;
            async move {
                if !run {
                    return None;
                }
                let args: Value =
                    serde_json::from_str(&call.function.arguments).unwrap_or_default();
                on_call(&call.function.name, &args);
                Some(
                    tools
                        .call(&call.function.name, &call.function.arguments)
                        .await,
                )
            }
        }))
        .await;
        let assistant = completion
            .choices
            .into_iter()
            .next()
            .map(|c| c.message)
            .unwrap_or_else(|| Message::new(Role::Assistant, ""));
        req.messages.push(assistant);
        for (call, outcome) in calls.iter().zip(results) {
            let content = match outcome {
                Some(outcome) => {
                    done.tool_calls += 1;
                    done.sources.extend(outcome.sources);
                    outcome.content
                }
                None => json!({"error": format!(
                    "not run: the tool call budget ({max_calls}) is spent")})
                .to_string(),
            };
            let mut result = Message::new(Role::Tool, content);
            result.tool_call_id = Some(call.id.clone());
            req.messages.push(result);
        }
    }
}

/// The reply's tool calls when all are research calls; none when it answered, or when it also
/// called a client tool (those go back to the client, so the loop stops).
fn research_calls(completion: &ChatCompletion, names: &HashSet<String>) -> Vec<ToolCall> {
    let calls = completion
        .choices
        .first()
        .and_then(|c| c.message.tool_calls.clone())
        .unwrap_or_default();
    if calls.iter().all(|c| names.contains(&c.function.name)) {
        calls
    } else {
        Vec::new()
    }
}

/// A passage placed in a prompt by prefetch.
#[derive(Debug, Clone, Serialize)]
pub struct Extract {
    pub n: usize,
    pub url: String,
    pub title: String,
    pub text: String,
}

/// Prefetched material for models without tools: extracts within `budget` characters in all.
#[derive(Debug, Clone, Default)]
pub struct Prefetched {
    pub extracts: Vec<Extract>,
    pub sources: Vec<Source>,
    /// Why nothing was prefetched, when something went wrong.
    pub error: Option<String>,
}

/// Results fetched per prefetch: a small model's context holds a few passages, not a library.
const PREFETCH_RESULTS: usize = 3;

/// The most characters of prefetched extracts a prompt gets, whatever the context allows.
pub const PREFETCH_CHARS: usize = 6_000;

/// Whether `model` runs in-process (its prompts then use the templates' compact form).
pub fn is_local(config: &Config, model: &str) -> bool {
    config
        .resolve(model)
        .and_then(|m| config.providers.get(&m.provider))
        .is_some_and(|p| p.kind == ProviderKind::Local)
}

/// Replaces the request's last user message with it plus the prefetched extracts
/// (`prompts/prefetch.j2`). False when there is no user message to replace.
pub fn with_extracts(
    prompts: &Prompts,
    config: &Config,
    req: &mut ModelRequest,
    found: &Prefetched,
) -> Result<bool, Error> {
    let Some(last) = req.messages.iter().rposition(|m| m.role == Role::User) else {
        return Ok(false);
    };
    let text = prompts.render(
        prompts::PREFETCH,
        json!({"question": req.messages[last].text(), "extracts": found.extracts,
            "compact": is_local(config, &req.model)}),
    )?;
    req.messages[last] = Message::new(Role::User, text.trim());
    Ok(true)
}

/// Searches `question`, reads the top results (in parallel) and keeps each one's passages that
/// share the most words with the question, within `budget` characters in all.
pub async fn prefetch(tools: &Session, question: &str, budget: usize) -> Prefetched {
    let results = match tools.search(question).await {
        Ok(r) => r,
        Err(e) => {
            return Prefetched {
                error: Some(e),
                ..Prefetched::default()
            }
        }
    };
    let top: Vec<_> = results.into_iter().take(PREFETCH_RESULTS).collect();
    let docs = futures::future::join_all(top.iter().map(|r| tools.fetch(&r.url))).await;
    let share = budget / top.len().max(1);
    let mut out = Prefetched::default();
    for (result, doc) in top.iter().zip(docs) {
        // A page that cannot be read still has its search snippet.
        let (title, text) = match doc {
            Ok(doc) => (doc.title, passages(&doc.content, question, share)),
            Err(_) => (result.title.clone(), result.snippet.clone()),
        };
        if text.trim().is_empty() {
            continue;
        }
        out.sources.push(Source {
            url: result.url.clone(),
            title: title.clone(),
            via: "prefetch",
        });
        out.extracts.push(Extract {
            n: out.extracts.len() + 1,
            url: result.url.clone(),
            title,
            text,
        });
    }
    out
}

/// The paragraphs of `text` that share the most words with `question`, in their original order,
/// within `budget` characters.
fn passages(text: &str, question: &str, budget: usize) -> String {
    let words: HashSet<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_lowercase)
        .collect();
    let paragraphs: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let score = |p: &str| {
        p.split(|c: char| !c.is_alphanumeric())
            .filter(|w| words.contains(&w.to_lowercase()))
            .count()
    };
    let mut ranked: Vec<usize> = (0..paragraphs.len()).collect();
    ranked.sort_by_key(|&i| std::cmp::Reverse(score(paragraphs[i])));
    let mut chosen = Vec::new();
    let mut used = 0;
    for i in ranked {
        let len = paragraphs[i].len();
        if used + len > budget {
            if chosen.is_empty() {
                // One long paragraph: keep its beginning.
                let (head, _) = quorate_tools::clip(paragraphs[i], budget);
                return format!("{head} […]");
            }
            continue;
        }
        used += len + 2;
        chosen.push(i);
    }
    chosen.sort_unstable();
    chosen
        .iter()
        .map(|&i| paragraphs[i])
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_keep_the_relevant_paragraphs_in_order_within_budget() {
        let text = "Cookie banner and menu.\n\nParis is the capital of France.\n\nUnrelated sports news here.\n\nFrance has had Paris as its capital city since 987.";
        let got = passages(text, "Which city is the capital of France?", 90);
        assert_eq!(
            got,
            "Paris is the capital of France.\n\nFrance has had Paris as its capital city since 987."
        );
        let long = "capital ".repeat(100);
        let got = passages(&long, "capital", 40);
        assert!(got.len() <= 46 && got.ends_with("[…]"), "{got}");
    }
}
