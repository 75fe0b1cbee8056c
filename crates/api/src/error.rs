//! The error envelope every failed request gets, in two dialects over one value:
//! OpenRouter's (`/api/v1`: `code` is the HTTP status) and OpenAI's (`/v1`: `code` is a name such
//! as `context_length_exceeded`, the status is repeated as `status`). Both carry OpenAI's `type`
//! and `param` and Quorate's `metadata`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// OpenRouter's shape; [`ErrorBody::openai`] gives OpenAI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status, repeated in the body so streamed errors carry it too.
    pub code: u16,
    pub message: String,
    /// OpenAI's error class (`invalid_request_error`, `rate_limit_error`, `server_error`, ...).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// OpenAI's field at fault. Quorate names the field at the start of `message` instead
    /// (`messages[1].role: ...`), so this is null; it is here for clients that read it.
    #[serde(default)]
    pub param: Option<String>,
    /// OpenAI's string code: what frameworks match on (`context_length_exceeded`,
    /// `rate_limit_exceeded`, `model_not_found`). Only the OpenAI dialect shows it as `code`.
    #[serde(skip)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl ErrorBody {
    /// An error of this status, with the type and code name OpenAI gives that status.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        let (kind, name) = by_status(code);
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                kind: kind.to_string(),
                param: None,
                name: name.to_string(),
                metadata: Map::new(),
            },
        }
    }

    /// A more precise code name than the status gives.
    pub fn named(mut self, name: &str) -> Self {
        self.error.name = name.to_string();
        self
    }

    pub fn with_metadata(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.metadata.insert(key.to_string(), value.into());
        self
    }

    /// The same error in OpenAI's dialect.
    pub fn openai(&self) -> OpenAiErrorBody<'_> {
        let e = &self.error;
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: &e.message,
                kind: &e.kind,
                param: e.param.as_deref(),
                // A body read back from JSON has no name: the status's stands in.
                code: if e.name.is_empty() {
                    by_status(e.code).1
                } else {
                    &e.name
                },
                status: e.code,
                metadata: &e.metadata,
            },
        }
    }
}

/// OpenAI's error body, borrowed from an [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct OpenAiErrorBody<'a> {
    pub error: OpenAiErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct OpenAiErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: &'a str,
    /// The HTTP status, as OpenRouter's `code` carries it.
    pub status: u16,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: &'a Map<String, Value>,
}

/// OpenAI's type and code name for a status.
fn by_status(status: u16) -> (&'static str, &'static str) {
    match status {
        401 => ("authentication_error", "invalid_api_key"),
        402 => ("insufficient_quota", "insufficient_quota"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        405 => ("invalid_request_error", "method_not_allowed"),
        408 => ("timeout_error", "timeout"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        431 => ("invalid_request_error", "headers_too_large"),
        400..=499 => ("invalid_request_error", "invalid_request_error"),
        503 => ("server_error", "overloaded"),
        _ => ("server_error", "server_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_error_in_both_dialects() {
        let body = ErrorBody::new(400, "too long")
            .named("context_length_exceeded")
            .with_metadata("retry_after_s", 2);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": 400, "message": "too long", "type": "invalid_request_error",
                "param": null, "metadata": {"retry_after_s": 2}}})
        );
        assert_eq!(
            serde_json::to_value(body.openai()).unwrap(),
            json!({"error": {"message": "too long", "type": "invalid_request_error",
                "param": null, "code": "context_length_exceeded", "status": 400,
                "metadata": {"retry_after_s": 2}}})
        );
    }

    #[test]
    fn the_status_gives_the_type_and_code() {
        let openai = |status| {
            let body = ErrorBody::new(status, "x");
            let v = serde_json::to_value(body.openai()).unwrap();
            (
                v["error"]["type"].as_str().unwrap().to_string(),
                v["error"]["code"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(
            openai(429),
            ("rate_limit_error".into(), "rate_limit_exceeded".into())
        );
        assert_eq!(
            openai(401),
            ("authentication_error".into(), "invalid_api_key".into())
        );
        assert_eq!(openai(502), ("server_error".into(), "server_error".into()));
        assert_eq!(
            openai(422),
            (
                "invalid_request_error".into(),
                "invalid_request_error".into()
            )
        );
    }
}
