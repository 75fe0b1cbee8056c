//! Fusion as a tool (`tools: [{"type": "quorate:fusion"}]`): the caller's model is offered a
//! `fusion` function next to the client's own tools. If it calls it, the panel and the judge run,
//! their answers and analysis go back as the tool result, and the same model writes the final
//! answer. If it does not, its answer is returned as it is, for the price of one call. Client tool
//! calls always go back to the client.

use futures::StreamExt;
use quorate_api::{ChatCompletion, Message, ModelRequest, Role, ToolCall};
use quorate_providers::Error;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::citations;
use crate::event::FusionEvent;
use crate::plan::FUSION_TOOL_TYPES;
use crate::prompts;
use crate::report::{add, FusionReport, MemberStatus};
use crate::run::{
    all_sources, clipped, millis, Analysed, AnswerView, FusionStream, Item, Phase, Run,
};

/// An answer with neither text nor tool calls.
fn says_nothing(completion: &ChatCompletion) -> bool {
    completion.choices.first().is_none_or(|choice| {
        choice.message.text().trim().is_empty() && choice.message.tool_calls.is_none()
    })
}

/// The function name the model sees.
const FUNCTION: &str = "fusion";

impl Run {
    /// Runs the caller's model with the fusion tool at `tools[index]`.
    pub fn tool_stream(self, index: usize) -> FusionStream {
        Box::pin(async_stream::stream! {
            let started = Instant::now();
            let first_request = match self.outer_request(index) {
                Ok(r) => r,
                Err(e) => { yield Err(e.into()); return; }
            };
            let first = match self.outer_call(first_request.clone()).await {
                Ok(c) => c,
                Err(e) => { yield Err(e.into()); return; }
            };
            let (first, call) = take_fusion_call(first);
            let Some(call) = call else {
                yield Ok(Item::Answer(Box::new(first)));
                return;
            };
            yield Ok(Item::Event(FusionEvent::FusionCalled { model: self.request.model.clone() }));
            let mut analysis = std::pin::pin!(self.analysis());
            let mut analysed = None;
            while let Some(step) = analysis.next().await {
                match step {
                    Phase::Event(event) => yield Ok(Item::Event(event)),
                    Phase::Analysed(result) => analysed = Some(*result),
                }
            }
            let (mut report, answers) = match analysed {
                Some(Ok(Analysed::Judged(report, answers))) => (report, answers),
                // The tool's plan is always `fuse` (`Plan::for_tool`), which never decides alone.
                Some(Ok(Analysed::Decided(..))) => {
                    yield Err(Error::Internal("the fusion tool's run was decided without its judge".into()).into());
                    return;
                }
                Some(Err(e)) => { yield Err(e); return; }
                None => return,
            };
            report.synthesizer.clone_from(&self.request.model);
            report.usage.synthesis = first.usage.clone().unwrap_or_default();
            report.sources = citations::number(&all_sources(&report.panel));
            let follow = self.after_tool(first_request, &first, call, &report, &answers);
            if self.request.stream {
                let mut answer = std::pin::pin!(self.final_answer(&self.ctx, follow, report, started));
                while let Some(item) = answer.next().await {
                    yield item;
                }
                return;
            }
            yield Ok(Item::Event(FusionEvent::SynthesisStarted { model: self.request.model.clone() }));
            let synthesis_started = Instant::now();
            let mut tries = 0;
            let mut completion = loop {
                tries += 1;
                let completion = match self.outer_call(follow.clone()).await {
                    Ok(completion) => completion,
                    Err(e) => { yield Err(self.synthesis_failure(report, e)); return; }
                };
                add(&mut report.usage.synthesis, &completion.usage.clone().unwrap_or_default());
                if !says_nothing(&completion) {
                    break completion;
                }
                if tries == 2 {
                    yield Err(self.empty_synthesis(report));
                    return;
                }
                tracing::warn!("the final answer came back empty; asking once more");
            };
            report.unverified_citations = citations::check_completion(
                &mut completion,
                &report.sources,
                &all_sources(&report.panel),
                self.plan.strict_citations,
            );
            yield Ok(Item::Answer(Box::new(completion)));
            report.timings.synthesis_ms = millis(synthesis_started);
            report.timings.total_ms = millis(started);
            yield Ok(Item::Done(Box::new(report)));
        })
    }

    /// The caller's request with the fusion tool turned into a function the model can call.
    fn outer_request(&self, index: usize) -> Result<ModelRequest, Error> {
        let mut req = self.request.clone();
        req.stream = false;
        let description = self.prompts.render(prompts::FUSION_TOOL, json!({}))?;
        if let Some(tool) = req.tools.get_mut(index) {
            *tool = json!({"type": "function", "function": {
                "name": FUNCTION, "description": description.trim(),
                "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}});
        }
        if req.tool_choice.as_ref().is_some_and(names_fusion) {
            req.tool_choice = Some(json!({"type": "function", "function": {"name": FUNCTION}}));
        }
        Ok(req)
    }

    async fn outer_call(&self, req: ModelRequest) -> Result<ChatCompletion, Error> {
        tokio::time::timeout_at(self.deadline, self.router.complete(&self.ctx, &req))
            .await
            .unwrap_or_else(|_| Err(self.timeout()))
    }

    /// The follow-up request: the model's call, the panel's answers and analysis as its result,
    /// and the client's own tools only (the model may not call fusion twice).
    fn after_tool(
        &self,
        mut req: ModelRequest,
        first: &ChatCompletion,
        call: ToolCall,
        report: &FusionReport,
        answers: &[AnswerView],
    ) -> ModelRequest {
        let mut assistant = first
            .choices
            .first()
            .map(|c| c.message.clone())
            .unwrap_or_else(|| Message::new(Role::Assistant, ""));
        let id = call.id.clone();
        assistant.tool_calls = Some(vec![call]);
        let mut result = Message::new(Role::Tool, self.tool_result(report, answers));
        result.tool_call_id = Some(id);
        req.messages.extend([assistant, result]);
        req.tools
            .retain(|t| t.pointer("/function/name").and_then(Value::as_str) != Some(FUNCTION));
        req.tool_choice = None;
        req.stream = self.request.stream;
        req
    }

    fn tool_result(&self, report: &FusionReport, answers: &[AnswerView]) -> String {
        let budget = self.answer_budget(&self.request.model, answers.len(), 2048, &[]);
        let failed: Vec<Value> = report
            .panel
            .iter()
            .filter(|m| m.status != MemberStatus::Ok)
            .map(|m| {
                json!({"answer": format!("#{}", m.slot + 1), "model": m.model,
                "reason": m.error.as_ref().map(|e| e.reason)})
            })
            .collect();
        json!({
            "analysis": report.analysis,
            "judge_failure": report.failure_reason.map(|r| r.as_str()),
            "answers": clipped(answers, budget),
            "sources": report.sources,
            "failed_members": failed,
        })
        .to_string()
    }
}

/// True for a `tool_choice` that points at the fusion tool.
fn names_fusion(choice: &Value) -> bool {
    let kind = choice
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    FUSION_TOOL_TYPES.contains(&kind)
        || choice.pointer("/function/name").and_then(Value::as_str) == Some(FUNCTION)
}

/// Splits the fusion call off the model's reply. If the model also called client tools, those go
/// back to the client and fusion is not run (the client cannot answer a call it never offered).
fn take_fusion_call(mut completion: ChatCompletion) -> (ChatCompletion, Option<ToolCall>) {
    let Some(calls) = completion
        .choices
        .first_mut()
        .and_then(|c| c.message.tool_calls.as_mut())
    else {
        return (completion, None);
    };
    let is_fusion = |c: &ToolCall| c.function.name == FUNCTION;
    let position = calls.iter().position(is_fusion);
    let only_fusion = calls.iter().all(is_fusion);
    let call = match position {
        Some(i) if only_fusion => Some(calls.swap_remove(i)),
        Some(_) => {
            calls.retain(|c| !is_fusion(c));
            None
        }
        None => None,
    };
    (completion, call)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(calls: Value) -> ChatCompletion {
        serde_json::from_value(json!({"id": "x", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": calls},
            "finish_reason": "tool_calls"}]}))
        .unwrap()
    }

    #[test]
    fn only_a_lone_fusion_call_runs_fusion() {
        let fusion = json!({"id": "c1", "type": "function", "function": {"name": "fusion", "arguments": "{}"}});
        let weather = json!({"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}});
        let (_, call) = take_fusion_call(reply(json!([fusion.clone()])));
        assert_eq!(call.unwrap().id, "c1");
        let (rest, call) = take_fusion_call(reply(json!([fusion, weather])));
        assert!(call.is_none());
        let left = rest.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].function.name, "weather");
        assert!(names_fusion(&json!({"type": "quorate:fusion"})));
        assert!(names_fusion(
            &json!({"type": "function", "function": {"name": "fusion"}})
        ));
        assert!(!names_fusion(&json!("required")));
    }
}
