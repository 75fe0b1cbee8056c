//! Panel answers kept across runs, so that several strategies are applied to the very same
//! answers: the eval's `--reuse-panel` (paired comparisons, the panel paid for once). Only
//! members that answer without research are kept: a researching member's answer depends on
//! what live tools returned.

use futures::future::BoxFuture;
use quorate_api::{ModelRequest, Usage};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A member's answer as a cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptAnswer {
    pub content: String,
    pub usage: Usage,
    /// How long the member took when it answered: a replayed member reports it.
    pub latency_ms: u64,
}

pub trait PanelCache: Send + Sync {
    /// The answer kept under `key`, or else the one `fresh` gives, which is then kept. `None`
    /// when `fresh` fails: a failure is not kept, so the next run tries again.
    fn answer<'a>(
        &'a self,
        key: String,
        fresh: BoxFuture<'a, Option<KeptAnswer>>,
    ) -> BoxFuture<'a, Option<KeptAnswer>>;
}

/// What decides a member's answer, as one string: the model, the conversation, the seed and
/// the sampling settings. A solo request built the same way has the same key, so a solo
/// answer can be the first member's.
pub fn key(req: &ModelRequest) -> String {
    json!({
        "model": req.model,
        "messages": req.messages,
        "seed": req.seed,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "response_format": req.response_format,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::{Message, Role};

    #[test]
    fn the_key_ignores_which_field_caps_the_output_and_nothing_that_decides_the_answer() {
        let mut solo = ModelRequest::new("m", vec![Message::new(Role::User, "2+2?")]);
        solo.seed = Some(7);
        solo.max_tokens = Some(32);
        let mut member = solo.clone();
        member.cap_name = quorate_api::CapName::MaxCompletionTokens;
        assert_eq!(key(&solo), key(&member));
        let mut other_seed = solo.clone();
        other_seed.seed = Some(8);
        assert_ne!(key(&solo), key(&other_seed));
        let mut warmer = solo.clone();
        warmer.temperature = Some(0.7);
        assert_ne!(key(&solo), key(&warmer));
    }
}
