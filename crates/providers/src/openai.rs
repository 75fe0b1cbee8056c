//! Any OpenAI-compatible chat completions API: OpenRouter, OpenAI, vLLM, Ollama, llama.cpp's
//! server, Together, DeepSeek. The request goes out as the caller wrote it, model name aside.

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{ChatChunk, ChatCompletion, ChatRequest};
use quorate_config::ProviderConfig;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde_json::{json, Value};

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

fn request_body(req: &ChatRequest, stream: bool) -> Result<Value, Error> {
    let mut body = serde_json::to_value(req)
        .map_err(|e| Error::BadRequest(format!("request does not serialize: {e}")))?;
    let Some(object) = body.as_object_mut() else {
        return Err(Error::BadRequest("request is not a JSON object".into()));
    };
    object.remove("models");
    if stream {
        object.insert("stream".into(), Value::Bool(true));
        // Usage only comes at the end of a stream when asked for; we always need it.
        let options = object.entry("stream_options").or_insert_with(|| json!({}));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    } else {
        object.remove("stream");
        object.remove("stream_options");
    }
    Ok(body)
}

#[async_trait]
impl Provider for OpenAi {
    async fn complete(&self, ctx: &RequestCtx, req: ChatRequest) -> Result<ChatCompletion, Error> {
        let value: Value = self
            .endpoint
            .post_json(&request_body(&req, false)?, ctx)
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

    async fn stream(&self, ctx: &RequestCtx, req: ChatRequest) -> Result<ChunkStream, Error> {
        let response = self.endpoint.post(&request_body(&req, true)?, ctx).await?;
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

    #[test]
    fn stream_body_asks_for_usage_and_drops_fallback_list() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "up", "messages": [{"role": "user", "content": "x"}],
            "models": ["a"], "stream_options": {"foo": 1}, "seed": 3
        }))
        .unwrap();
        let body = request_body(&req, true).unwrap();
        assert_eq!(
            body["stream_options"],
            json!({"foo": 1, "include_usage": true})
        );
        assert!(body.get("models").is_none());
        assert_eq!(body["seed"], 3);
        let body = request_body(&req, false).unwrap();
        assert!(body.get("stream").is_none() && body.get("stream_options").is_none());
    }
}
