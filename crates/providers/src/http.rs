//! HTTP plumbing shared by the HTTP providers: sending, and turning failures into `Error`s.
//! Upstream messages pass through, but never a URL (keys sometimes ride in query strings).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response};
use serde_json::Value;

use crate::Error;

/// Error bodies are read up to this size: enough for any message, not for a hostile upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub fn client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
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

/// Reads a whole success body, mapping transport failures.
pub async fn body(response: Response, who: &str) -> Result<bytes::Bytes, Error> {
    response.bytes().await.map_err(|e| transport_error(e, who))
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

/// Errors that an upstream sends inside a 200 body or stream: `{"error": {"code", "message"}}`.
pub fn embedded_error(value: &Value, who: &str) -> Option<Error> {
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    let code = error
        .get("code")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()))
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(502);
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
