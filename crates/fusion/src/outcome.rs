//! Where a run ends. Every consumer of a run (the server's JSON and SSE responses, `quorate ask`,
//! eval) feeds the items it reads into one `RunOutcome`, so the answer, the report, the usage and
//! the event timeline come out the same way whoever read the run.

use futures::StreamExt;
use quorate_api::{ChatCompletion, Usage};
use quorate_providers::Error;
use serde_json::Value;

use crate::event::FusionEvent;
use crate::report::{FusionError, FusionReport};
use crate::run::{FusionStream, Item};

#[derive(Debug, Default)]
pub struct RunOutcome {
    /// The final answer's text as streamed so far.
    pub text: String,
    pub finish: Option<String>,
    /// A whole answer: the fusion tool's model answered without calling fusion, or research ran.
    pub answer: Option<Box<ChatCompletion>>,
    /// `url_citation` annotations of the answer.
    pub annotations: Vec<Value>,
    /// Every progress event, in order: the run's timeline.
    pub events: Vec<FusionEvent>,
    /// The report; present once the run ended well.
    pub report: Option<Box<FusionReport>>,
}

impl RunOutcome {
    /// Reads a run to its end.
    pub async fn read(items: FusionStream) -> Result<Self, FusionError> {
        Self::read_with(items, |_| {}).await
    }

    /// Reads a run to its end, showing `observe` each item as it comes (a recorder timing
    /// the events).
    pub async fn read_with(
        mut items: FusionStream,
        mut observe: impl FnMut(&Item),
    ) -> Result<Self, FusionError> {
        let mut outcome = Self::default();
        while let Some(item) = items.next().await {
            let item = item?;
            observe(&item);
            outcome.record(&item);
        }
        Ok(outcome)
    }

    /// Takes one item of the run in.
    pub fn record(&mut self, item: &Item) {
        match item {
            Item::Event(event) => self.events.push(event.clone()),
            Item::Chunk(chunk) => {
                for choice in &chunk.choices {
                    self.text
                        .push_str(choice.delta.content.as_deref().unwrap_or_default());
                    if choice.finish_reason.is_some() {
                        self.finish.clone_from(&choice.finish_reason);
                    }
                }
            }
            Item::Answer(completion) => self.answer = Some(completion.clone()),
            Item::Annotations(found) => self.annotations.clone_from(found),
            Item::Done(report) => self.report = Some(report.clone()),
        }
    }

    /// The caller's usage: the report's sum over every inner call, else the whole answer's own.
    pub fn usage(&self) -> Option<Usage> {
        match (&self.report, &self.answer) {
            (Some(report), _) => Some(report.total_usage()),
            (None, Some(answer)) => answer.usage.clone(),
            (None, None) => None,
        }
    }

    /// One `chat.completion`: the whole answer or the streamed text, with the summed usage, the
    /// `fusion` object when fusion ran, and the annotations.
    pub fn into_completion(self, model: String) -> Result<ChatCompletion, FusionError> {
        let usage = self.usage();
        let mut completion = match (self.answer, &self.report) {
            (Some(answer), _) => *answer,
            (None, Some(_)) => ChatCompletion::assistant(
                model,
                self.text,
                self.finish.or_else(|| Some("stop".into())),
            ),
            (None, None) => {
                return Err(FusionError::plain(Error::InvalidResponse(
                    "the fusion run ended without a result".into(),
                )))
            }
        };
        completion.usage = usage;
        if let Some(report) = &self.report {
            completion.extra.insert("fusion".into(), report.to_value());
        }
        if let Some(choice) = completion.choices.first_mut() {
            if !self.annotations.is_empty() {
                choice
                    .message
                    .extra
                    .insert("annotations".into(), Value::Array(self.annotations));
            }
        }
        Ok(completion)
    }
}
