//! Any OpenAI-compatible chat completions API: OpenRouter, OpenAI, vLLM, Ollama, llama.cpp's
//! server, Together, DeepSeek. The request goes out as the caller wrote it, model name aside.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{ChatChunk, ChatCompletion, ChatRequest};
use quorate_config::ProviderConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use crate::http::{self, embedded_error};
use crate::{sse, ChunkStream, Error, Provider};

pub struct OpenAi {
    name: String,
    client: reqwest::Client,
    /// Parsed once: reqwest would otherwise parse the URL string on every request.
    url: reqwest::Url,
    headers: HeaderMap,
    missing_key: Option<String>,
    idle: Duration,
}

impl OpenAi {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: reqwest::Client,
    ) -> Result<Self, Error> {
        let (mut headers, missing_key) = auth_headers(name, config, |key| {
            vec![(AUTHORIZATION, format!("Bearer {key}"))]
        })?;
        headers.extend(extra_headers(name, config)?);
        Ok(Self {
            name: name.to_string(),
            client,
            url: endpoint(name, config, "chat/completions")?,
            headers,
            missing_key,
            idle: Duration::from_secs_f64(config.timeout_s),
        })
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, Error> {
        if let Some(message) = &self.missing_key {
            return Err(Error::Unavailable(message.clone()));
        }
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(body);
        http::send(request, &self.name).await
    }
}

/// Reads the key named by `api_key_env` once, at start-up, into sensitive header values (they are
/// redacted from `Debug`). A missing key is not an error until the provider is used.
pub(crate) fn auth_headers(
    name: &str,
    config: &ProviderConfig,
    make: impl Fn(&str) -> Vec<(HeaderName, String)>,
) -> Result<(HeaderMap, Option<String>), Error> {
    let mut headers = HeaderMap::new();
    let Some(env) = &config.api_key_env else {
        return Ok((headers, None));
    };
    let key = std::env::var(env).ok().filter(|k| !k.trim().is_empty());
    let Some(key) = key else {
        let message = format!("provider {name} has no API key: set the environment variable {env}");
        return Ok((headers, Some(message)));
    };
    for (header, value) in make(key.trim()) {
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            Error::Unavailable(format!(
                "provider {name}: the key in {env} is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok((headers, None))
}

/// `base_url` joined with an endpoint path, as a parsed URL.
pub(crate) fn endpoint(
    name: &str,
    config: &ProviderConfig,
    path: &str,
) -> Result<reqwest::Url, Error> {
    let base = config.base_url.as_deref().unwrap_or_default();
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    reqwest::Url::parse(&url)
        .map_err(|e| Error::Unavailable(format!("providers.{name}.base_url: not a valid URL: {e}")))
}

pub(crate) fn extra_headers(name: &str, config: &ProviderConfig) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    for (key, value) in &config.headers {
        let bad = || {
            Error::Unavailable(format!(
                "providers.{name}.headers.{key}: not a valid header"
            ))
        };
        let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad())?;
        headers.insert(header, HeaderValue::from_str(value).map_err(|_| bad())?);
    }
    Ok(headers)
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
    async fn complete(&self, req: ChatRequest) -> Result<ChatCompletion, Error> {
        let response = self.post(&request_body(&req, false)?).await?;
        let bytes = http::body(response, &self.name).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidResponse(format!("{}: upstream sent invalid JSON: {e}", self.name))
        })?;
        if let Some(error) = embedded_error(&value, &self.name) {
            return Err(error);
        }
        let completion: ChatCompletion = serde_json::from_value(value).map_err(|e| {
            Error::InvalidResponse(format!("{}: not a chat completion: {e}", self.name))
        })?;
        if completion.choices.is_empty() {
            return Err(Error::InvalidResponse(format!(
                "{}: upstream returned no choices",
                self.name
            )));
        }
        Ok(completion)
    }

    async fn stream(&self, req: ChatRequest) -> Result<ChunkStream, Error> {
        let response = self.post(&request_body(&req, true)?).await?;
        let events = sse::events(response.bytes_stream(), self.idle, self.name.clone());
        Ok(Box::pin(chunks(events, self.name.clone())))
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
