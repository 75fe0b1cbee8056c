//! Server tools on an ordinary request: `tools: [{"type": "quorate:web_search"}]` (and
//! `quorate:web_fetch`, aliases `openrouter:*`) on a plain model. The gateway runs the research
//! loop for that model (prefetch for a model without tool support) and returns its final answer
//! with usage summed over every turn, `url_citation` annotations, and a `research` object with
//! the sources. Client tools in the same request go back to the client as usual.

use quorate_api::{ChatCompletion, Message, ModelRequest, Role};
use quorate_config::{Config, MAX_TOOL_CALLS};
use quorate_providers::{Error, RequestCtx};
use quorate_tools::{Session, ToolName, ToolSpec};
use serde_json::{json, Value};

use crate::citations;
use crate::research::{self, Researched, PREFETCH_CHARS};
use crate::run::{FusionStream, Item};
use crate::Fusion;

/// The research tools a request's `tools` asks the gateway to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearchPlan {
    pub tools: Vec<ToolSpec>,
    pub max_tool_calls: u32,
}

impl ResearchPlan {
    /// `None` when the request names no research server tool.
    pub fn from_request(config: &Config, req: &ModelRequest) -> Result<Option<Self>, Error> {
        let mut tools = Vec::new();
        let mut max_tool_calls = config.tools.max_tool_calls;
        for (i, tool) in req.tools.iter().enumerate() {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
            if !is_research_tool(kind) {
                continue;
            }
            let mut tool = tool.clone();
            // The loop's budget rides on either tool's parameters.
            if let Some(n) = tool
                .get_mut("parameters")
                .and_then(Value::as_object_mut)
                .and_then(|p| p.remove("max_tool_calls"))
            {
                max_tool_calls = n
                    .as_u64()
                    .filter(|n| *n <= u64::from(MAX_TOOL_CALLS))
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "tools[{i}].parameters.max_tool_calls: 0 to {MAX_TOOL_CALLS}"
                        ))
                    })? as u32;
            }
            let spec = ToolSpec::parse(&tool, &format!("tools[{i}]")).map_err(Error::BadRequest)?;
            if tools.iter().any(|t: &ToolSpec| t.name == spec.name) {
                return Err(Error::BadRequest(format!(
                    "tools[{i}]: {kind} is listed twice"
                )));
            }
            tools.push(spec);
        }
        Ok((!tools.is_empty()).then_some(Self {
            tools,
            max_tool_calls,
        }))
    }
}

/// `quorate:web_search`, `openrouter:web_fetch`, ...
pub fn is_research_tool(kind: &str) -> bool {
    let server = kind.starts_with("quorate:") || kind.starts_with("openrouter:");
    server && ToolName::parse(kind).is_some()
}

impl Fusion {
    /// The research tools a plain request asks for, if any.
    pub fn research_plan(&self, req: &ModelRequest) -> Result<Option<ResearchPlan>, Error> {
        ResearchPlan::from_request(self.router.config(), req)
    }

    /// Runs the request's model with the research tools; yields its final answer.
    pub fn run_research(
        &self,
        ctx: &RequestCtx,
        plan: ResearchPlan,
        request: ModelRequest,
    ) -> FusionStream {
        let this = self.clone();
        let ctx = ctx.clone();
        Box::pin(async_stream::stream! {
            let session = this.toolbox.session(&plan.tools);
            match this.research(&ctx, &session, &plan, request).await {
                Ok(completion) => yield Ok(Item::Answer(Box::new(completion))),
                Err(e) => yield Err(e.into()),
            }
        })
    }

    async fn research(
        &self,
        ctx: &RequestCtx,
        session: &Session,
        plan: &ResearchPlan,
        mut req: ModelRequest,
    ) -> Result<ChatCompletion, Error> {
        req.stream = false;
        req.tools.retain(|t| {
            !is_research_tool(t.get("type").and_then(Value::as_str).unwrap_or_default())
        });
        if req.tools.is_empty() {
            req.tool_choice = None;
        }
        let config = self.router.config();
        let model = config.resolve(&req.model);
        let supports_tools = model.as_ref().is_some_and(|m| m.supports_tools);
        let done = if supports_tools {
            let on_call = |tool: &str, arguments: &Value| {
                tracing::debug!(tool, %arguments, "research tool call");
            };
            research::agent(
                &self.router,
                ctx,
                &self.prompts,
                session,
                req,
                plan.max_tool_calls,
                &on_call,
            )
            .await?
        } else {
            let budget = model
                .and_then(|m| m.context_length)
                .map_or(PREFETCH_CHARS, |c| (c as usize).min(PREFETCH_CHARS));
            self.prefetched(ctx, session, req, budget).await?
        };
        Ok(self.answer(session, done))
    }

    /// A model without tool support: prefetched extracts in its prompt, then one call.
    async fn prefetched(
        &self,
        ctx: &RequestCtx,
        session: &Session,
        mut req: ModelRequest,
        budget: usize,
    ) -> Result<Researched, Error> {
        let question = req.messages.iter().rev().find(|m| m.role == Role::User);
        let mut done = Researched::default();
        if let (Some(question), true) = (question.map(Message::text), session.has_search()) {
            let found = research::prefetch(session, &question, budget).await;
            if !found.extracts.is_empty()
                && research::with_extracts(&self.prompts, self.router.config(), &mut req, &found)?
            {
                done.sources = found.sources;
            }
        }
        let completion = self.router.complete(ctx, &req).await?;
        done.usage = completion.usage.clone().unwrap_or_default();
        done.completion = Some(completion);
        Ok(done)
    }

    /// The last completion with usage summed, citations annotated and the `research` object.
    fn answer(&self, session: &Session, done: Researched) -> ChatCompletion {
        let mut completion = done
            .completion
            .unwrap_or_else(|| ChatCompletion::assistant("", String::new(), None));
        let numbered = citations::number(&done.sources);
        let unverified =
            citations::check_completion(&mut completion, &numbered, &done.sources, false);
        completion.usage = Some(done.usage);
        completion.extra.insert(
            "research".into(),
            json!({"tool_calls": done.tool_calls, "sources": done.sources,
                "unverified_citations": unverified, "tools_note": session.note()}),
        );
        completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(tools: Value) -> Result<Option<ResearchPlan>, Error> {
        let req: quorate_api::ChatRequest =
            serde_json::from_value(json!({"model": "m", "messages": [], "tools": tools})).unwrap();
        ResearchPlan::from_request(&Config::builtin(), &req.into())
    }

    #[test]
    fn research_tools_are_found_among_client_tools() {
        let client = json!({"type": "function", "function": {"name": "f"}});
        assert!(plan(json!([client])).unwrap().is_none());
        let p = plan(json!([client, {"type": "openrouter:web_search",
            "parameters": {"max_tool_calls": 3, "excluded_domains": ["hf.co"]}},
            {"type": "quorate:web_fetch"}]))
        .unwrap()
        .unwrap();
        assert_eq!(p.tools.len(), 2);
        assert_eq!(p.max_tool_calls, 3);
        assert!(!p.tools[0].filter.permits_str("https://hf.co/x"));
        let e = plan(json!([{"type": "quorate:web_search", "parameters": {"max_tool_calls": 99}}]))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tools[0].parameters.max_tool_calls"),
            "{e}"
        );
        let e = plan(json!([{"type": "quorate:web_search"}, {"type": "openrouter:web_search"}]))
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
