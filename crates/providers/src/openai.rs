//! Any OpenAI-compatible chat completions API: OpenRouter, OpenAI, vLLM, Ollama, llama.cpp's
//! server, Together, DeepSeek. The request goes out as the caller wrote it, model name aside.

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{CapName, ChatChunk, ChatCompletion, Message, ModelRequest, ResponseFormat};
use quorate_config::ProviderConfig;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::http::{embedded_error, Endpoint};
use crate::{sse, ChunkStream, Error, Provider, RequestCtx};

pub struct OpenAi {
    endpoint: Endpoint,
}

impl OpenAi {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: reqwest::Client,
    ) -> Result<Self, Error> {
        let auth = |key: &str| vec![(AUTHORIZATION, format!("Bearer {key}"))];
        let endpoint = Endpoint::new(
            name,
            config,
            client,
            "chat/completions",
            auth,
            HeaderMap::new(),
        )?;
        Ok(Self { endpoint })
    }
}

/// The chat completions request an OpenAI-compatible upstream gets, written from the internal
/// one without copying it.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    plugins: &'a [Value],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// Usage only comes at the end of a stream when asked for; the gateway always needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl<'a> Body<'a> {
    fn new(req: &'a ModelRequest, stream: bool) -> Self {
        let (max_tokens, max_completion_tokens) = match req.cap_name {
            CapName::MaxTokens => (req.max_tokens, None),
            CapName::MaxCompletionTokens => (None, req.max_tokens),
        };
        Self {
            model: &req.model,
            messages: &req.messages,
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens,
            max_completion_tokens,
            stop: &req.stop,
            seed: req.seed,
            response_format: req.response_format.as_ref(),
            tools: &req.tools,
            tool_choice: req.tool_choice.as_ref(),
            plugins: &req.plugins,
            stream,
            stream_options: stream.then(|| json!({"include_usage": true})),
            extra: &req.extra,
        }
    }
}

#[async_trait]
impl Provider for OpenAi {
    async fn complete(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChatCompletion, Error> {
        let value: Value = self
            .endpoint
            .post_json(&Body::new(&req, false), ctx)
            .await?;
        if let Some(error) = embedded_error(&value, &self.endpoint.name) {
            return Err(error);
        }
        let completion: ChatCompletion = serde_json::from_value(value).map_err(|e| {
            Error::InvalidResponse(format!(
                "{}: not a chat completion: {e}",
                self.endpoint.name
            ))
        })?;
        if completion.choices.is_empty() {
            return Err(Error::InvalidResponse(format!(
                "{}: upstream returned no choices",
                self.endpoint.name
            )));
        }
        Ok(completion)
    }

    async fn stream(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChunkStream, Error> {
        let response = self.endpoint.post(&Body::new(&req, true), ctx).await?;
        let events = sse::events(
            response.bytes_stream(),
            self.endpoint.idle,
            self.endpoint.name.clone(),
        );
        Ok(Box::pin(chunks(events, self.endpoint.name.clone())))
    }
}

/// OpenAI stream events to chunks: ends at `[DONE]`; an end without it (and without a finish
/// reason) means the upstream broke off.
fn chunks(
    events: impl futures::Stream<Item = Result<sse::SseEvent, Error>> + Send + 'static,
    who: String,
) -> impl futures::Stream<Item = Result<ChatChunk, Error>> + Send + 'static {
    async_stream::stream! {
        let mut events = std::pin::pin!(events);
        let mut finished = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => { yield Err(e); return; }
            };
            if event.data.trim() == "[DONE]" {
                return;
            }
            if event.data.trim().is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(&event.data) {
                Ok(v) => v,
                Err(e) => {
                    yield Err(Error::InvalidResponse(format!("{who}: malformed stream event: {e}")));
                    return;
                }
            };
            if let Some(error) = embedded_error(&value, &who) {
                yield Err(error);
                return;
            }
            match serde_json::from_value::<ChatChunk>(value) {
                Ok(chunk) => {
                    finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
                    yield Ok(chunk);
                }
                Err(e) => {
                    yield Err(Error::InvalidResponse(format!("{who}: not a chat completion chunk: {e}")));
                    return;
                }
            }
        }
        if !finished {
            yield Err(Error::InvalidResponse(format!("{who}: upstream stream ended early")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::ChatRequest;

    fn body(request: Value, stream: bool) -> Value {
        let wire: ChatRequest = serde_json::from_value(request).unwrap();
        let internal = wire.into_request().unwrap();
        serde_json::to_value(Body::new(&internal, stream)).unwrap()
    }

    #[test]
    fn stream_body_asks_for_usage_and_drops_fallback_list() {
        let request = json!({
            "model": "up", "messages": [{"role": "user", "content": "x"}],
            "models": ["a"], "stream_options": {"include_usage": false}, "seed": 3
        });
        let streamed = body(request.clone(), true);
        assert_eq!(streamed["stream_options"], json!({"include_usage": true}));
        assert!(streamed.get("models").is_none());
        assert_eq!(streamed["seed"], 3);
        let plain = body(request, false);
        assert!(plain.get("stream").is_none() && plain.get("stream_options").is_none());
    }

    /// What goes upstream is what the caller sent: every field read into the internal request
    /// comes back out under its name, unknown ones included; only the routing (`models`) and
    /// the stream's framing are the gateway's.
    #[test]
    fn a_request_goes_upstream_as_sent() {
        let sent = json!({
            "model": "up", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "x"}], "cache_control": {}},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type":
                    "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "ok", "tool_call_id": "c"}],
            "temperature": 0.3, "top_p": 0.9, "max_completion_tokens": 50, "stop": ["END"],
            "seed": 7, "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto", "plugins": [{"id": "web"}], "logprobs": true,
            "provider": {"order": ["a"]}
        });
        let mut with_routing = sent.clone();
        with_routing["models"] = json!(["b"]);
        with_routing["stream_options"] = json!({"include_usage": false});
        assert_eq!(body(with_routing, false), sent);
        let mut legacy = sent.clone();
        legacy
            .as_object_mut()
            .unwrap()
            .remove("max_completion_tokens");
        legacy["max_tokens"] = json!(50);
        assert_eq!(body(legacy.clone(), false), legacy);
    }
}
