//! The grader, as the published protocol has it: one call per criterion, showing the criterion's
//! type (positive or negative), its text, the task and the response, never its weight or the
//! other criteria; the reply is schema-enforced JSON `{"explanation", "criterion_status"}`.

use quorate_api::{Message, ModelRequest, ResponseFormat, Role, Usage};
use quorate_providers::{RequestCtx, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Criterion;
use crate::prompts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Met,
    Unmet,
    /// The grader gave no valid verdict (after one retry); scored as UNMET and reported.
    Error,
}

/// One verdict, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub system: String,
    pub task_id: String,
    pub pass: u32,
    /// `section/criterion`.
    pub criterion: String,
    pub status: Status,
    pub explanation: String,
    pub usage: Usage,
}

pub struct Grader {
    pub router: Router,
    pub model: String,
    pub temperature: f64,
}

fn response_format() -> ResponseFormat {
    ResponseFormat::json_schema(
        "criterion_verdict",
        json!({"type": "object", "additionalProperties": false,
            "required": ["explanation", "criterion_status"],
            "properties": {
                "explanation": {"type": "string", "maxLength": 400},
                "criterion_status": {"type": "string", "enum": ["MET", "UNMET"]}}}),
    )
}

#[derive(Deserialize)]
struct Reply {
    explanation: String,
    criterion_status: Status,
}

impl Grader {
    /// The verdict on one criterion; a reply that is not a verdict gets one more try.
    pub async fn grade(
        &self,
        query: &str,
        response: &str,
        criterion: &Criterion,
        pass: u32,
    ) -> (Status, String, Usage) {
        let kind = if criterion.weight > 0 {
            "positive"
        } else {
            "negative"
        };
        let prompt = match prompts::render(
            prompts::GRADER,
            json!({"kind": kind, "criterion": criterion.requirement, "query": query,
                "response": response}),
        ) {
            Ok(p) => p,
            Err(e) => return (Status::Error, format!("{e:#}"), Usage::default()),
        };
        let mut usage = Usage::default();
        let mut last = String::new();
        for attempt in 0..2u64 {
            let mut req =
                ModelRequest::new(&self.model, vec![Message::new(Role::User, prompt.clone())]);
            req.temperature = Some(self.temperature);
            req.max_tokens = Some(600);
            req.response_format = Some(response_format());
            req.seed = Some(i64::from(pass) * 2 + attempt as i64);
            let ctx = RequestCtx::new(format!("eval-grade-{pass}-{attempt}"));
            match self.router.complete(&ctx, &req).await {
                Ok(c) => {
                    quorate_fusion::add_usage(&mut usage, &c.usage.clone().unwrap_or_default());
                    let text = c
                        .choices
                        .first()
                        .map(|ch| ch.message.text())
                        .unwrap_or_default();
                    match serde_json::from_str::<Reply>(text.trim()) {
                        Ok(r) if r.criterion_status != Status::Error => {
                            return (r.criterion_status, r.explanation, usage)
                        }
                        _ => {
                            last = format!(
                                "not a verdict: {}",
                                text.chars().take(200).collect::<String>()
                            )
                        }
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        (Status::Error, last, usage)
    }
}
