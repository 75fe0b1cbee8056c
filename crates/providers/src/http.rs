//! HTTP plumbing shared by the HTTP providers: sending, and turning failures into `Error`s.
//! Upstream messages pass through, but never a URL (keys sometimes ride in query strings).

use std::time::Duration;

use quorate_api::{FUSION_DEPTH_HEADER, REQUEST_ID_HEADER};
use quorate_config::{ProviderConfig, ServerConfig};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, Response};
use serde_json::Value;

use crate::{Error, RequestCtx};

/// Parsed once: a header named by a string is parsed again on every request.
static REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
static FUSION_DEPTH: HeaderName = HeaderName::from_static(FUSION_DEPTH_HEADER);

/// Error bodies are read up to this size: enough for any message, not for a hostile upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One upstream URL with its headers: what every HTTP provider posts to.
pub struct Endpoint {
    pub name: String,
    client: reqwest::Client,
    /// Parsed once: reqwest would otherwise parse the URL string on every request.
    url: reqwest::Url,
    headers: HeaderMap,
    /// Why the provider cannot be used (its key variable is unset), checked at each call.
    missing_key: Option<String>,
    /// The longest wait for any read of a response.
    pub idle: Duration,
}

impl Endpoint {
    /// `auth` turns the API key into headers; `fixed` headers go on every request.
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: reqwest::Client,
        path: &str,
        auth: impl Fn(&str) -> Vec<(HeaderName, String)>,
        fixed: HeaderMap,
    ) -> Result<Self, Error> {
        let (mut headers, missing_key) = auth_headers(name, config, auth)?;
        headers.extend(fixed);
        headers.extend(extra_headers(name, config)?);
        Ok(Self {
            name: name.to_string(),
            client,
            url: endpoint(name, config, path)?,
            headers,
            missing_key,
            idle: Duration::from_secs_f64(config.timeout_s),
        })
    }

    /// Posts `body` with the request's id; a fusion depth above 0 marks an inner call of a run.
    pub async fn post(
        &self,
        body: &impl serde::Serialize,
        ctx: &RequestCtx,
    ) -> Result<Response, Error> {
        if let Some(message) = &self.missing_key {
            return Err(Error::Unavailable(message.clone()));
        }
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(REQUEST_ID.clone(), ctx.id())
            .json(body);
        if ctx.fusion_depth > 0 {
            request = request.header(FUSION_DEPTH.clone(), ctx.fusion_depth.to_string());
        }
        send(request, &self.name).await
    }

    /// Posts and reads the whole answer as JSON of the type the API answers with.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        body: &impl serde::Serialize,
        ctx: &RequestCtx,
    ) -> Result<T, Error> {
        let response = self.post(body, ctx).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, &self.name))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let what = if e.is_data() {
                "not the answer its API sends"
            } else {
                "invalid JSON"
            };
            Error::InvalidResponse(format!("{}: upstream sent {what}: {e}", self.name))
        })
    }
}

/// Reads the key named by `api_key_env` once, at start-up, into sensitive header values (they are
/// redacted from `Debug`). A missing key is not an error until the provider is used.
fn auth_headers(
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
fn endpoint(name: &str, config: &ProviderConfig, path: &str) -> Result<reqwest::Url, Error> {
    let base = config.base_url.as_deref().unwrap_or_default();
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    reqwest::Url::parse(&url)
        .map_err(|e| Error::Unavailable(format!("providers.{name}.base_url: not a valid URL: {e}")))
}

fn extra_headers(name: &str, config: &ProviderConfig) -> Result<HeaderMap, Error> {
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

/// One client for every HTTP provider: its pool keeps at most `upstream_idle_per_host` idle
/// connections per host, so the sockets and buffers of a burst are given back when it ends.
pub fn client(server: &ServerConfig) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(server.upstream_idle_per_host)
        .pool_idle_timeout(Duration::from_secs_f64(server.upstream_idle_s))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Unavailable(format!("cannot build the HTTP client: {}", describe(&e))))
}

pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

fn transport_error(e: reqwest::Error, who: &str) -> Error {
    let e = e.without_url();
    if e.is_timeout() {
        Error::Timeout(format!("{who}: upstream timed out"))
    } else {
        Error::Upstream {
            status: None,
            message: format!("{who}: {}", describe(&e)),
        }
    }
}

/// Sends and returns the response if its status is a success; otherwise the mapped error.
pub async fn send(request: RequestBuilder, who: &str) -> Result<Response, Error> {
    let response = request.send().await.map_err(|e| transport_error(e, who))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = read_capped(response).await;
    let message = upstream_message(&body);
    Err(Error::from_upstream_status(status.as_u16(), message, retry_after).context(who))
}

async fn read_capped(mut response: Response) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= MAX_ERROR_BODY {
            buf.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The human part of an upstream error body: `error.message` (OpenAI, OpenRouter, Anthropic
/// shapes), else the text itself, shortened.
pub fn upstream_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let error = v.get("error")?;
        error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    if text.is_empty() {
        return "(no message)".to_string();
    }
    shorten(&text, 500)
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `Retry-After` in seconds (`retry-after-ms` where sent); HTTP dates are not worth honouring.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    if let Some(ms) = get("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    get("retry-after").map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// Errors that an upstream sends inside a 200 body or stream: `{"error": {"code", "message"}}`,
/// the status as OpenRouter's `code` or as `status` beside OpenAI's named `code` (another
/// Quorate's `/v1` sends both).
pub fn embedded_error(value: &Value, who: &str) -> Option<Error> {
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    let status = |key: &str| {
        let field = error.get(key)?;
        let n = field.as_u64().or_else(|| field.as_str()?.parse().ok())?;
        u16::try_from(n).ok().filter(|c| (400..600).contains(c))
    };
    let code = status("code").or_else(|| status("status")).unwrap_or(502);
    let message = upstream_message(&value.to_string());
    Some(Error::from_upstream_status(code, message, None).context(who))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_from_common_shapes() {
        assert_eq!(
            upstream_message(r#"{"error":{"message":"nope","code":400}}"#),
            "nope"
        );
        assert_eq!(
            upstream_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            "busy"
        );
        assert_eq!(
            upstream_message("<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
        assert_eq!(upstream_message(""), "(no message)");
        assert!(upstream_message(&"x".repeat(2000)).chars().count() <= 501);
    }

    #[test]
    fn embedded_errors_keep_their_code() {
        let e = embedded_error(&json!({"error": {"code": 429, "message": "slow"}}), "p").unwrap();
        assert_eq!(e.status(), 429);
        let e = embedded_error(&json!({"error": {"message": "odd"}}), "p").unwrap();
        assert_eq!(e.status(), 502);
        // Another Quorate's /v1: OpenAI's named code, the status beside it.
        let openai =
            json!({"error": {"code": "rate_limit_exceeded", "status": 429, "message": "x"}});
        assert_eq!(embedded_error(&openai, "p").unwrap().status(), 429);
        assert!(embedded_error(&json!({"choices": []}), "p").is_none());
    }

    #[test]
    fn retry_after_header_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }
}
