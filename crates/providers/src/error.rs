//! The error type of the request path. Each variant is a kind, and the kind decides the HTTP
//! status at the edge; a chain of failed tries (retries and fallbacks) keeps every attempt and
//! answers with the last one's kind.

use std::time::Duration;

use quorate_api::ErrorBody;
use quorate_config::ResolvedModel;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The caller's request is malformed or names an invalid field (or the upstream said so).
    #[error("{0}")]
    BadRequest(String),
    /// The prompt is longer than the model's context (400, `context_length_exceeded`).
    #[error("{0}")]
    ContextTooLong(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    UnknownModel(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    InsufficientCredits(String),
    /// Busy for now (an upstream's 503, a local model's full queue): worth another try, after
    /// `retry_after` when it was said.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The upstream failed: a connection error (`status: None`) or an error status.
    #[error("{message}")]
    Upstream {
        status: Option<u16>,
        message: String,
    },
    /// The upstream answered something that is not a valid chat completion.
    #[error("{0}")]
    InvalidResponse(String),
    /// No provider can serve: every candidate is unconfigured or refused.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the gateway itself (a prompt template that does not render, a broken
    /// invariant): never the caller's fault, never worth a retry.
    #[error("{0}")]
    Internal(String),
    /// Every try failed: each attempt in order; the last one's error decides the response.
    #[error("{}", describe(attempts, last))]
    Attempts {
        attempts: Vec<Attempt>,
        last: Box<Error>,
    },
}

/// One try at one model, as the router made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub model: String,
    pub provider: String,
    /// 0 for the first try at this model, then 1, 2... for its retries.
    pub retry: u32,
    /// The status this attempt's error maps to.
    pub status: u16,
    /// A stable name of the error kind (`rate_limited`, `timeout`, `upstream_error`, ...).
    pub reason: &'static str,
    pub message: String,
    pub elapsed_ms: u64,
}

impl Attempt {
    /// A try that was answered (for a stream: that opened).
    pub fn ok(model: &ResolvedModel, retry: u32, started: std::time::Instant) -> Self {
        Self {
            model: model.id.clone(),
            provider: model.provider.clone(),
            retry,
            status: 200,
            reason: "ok",
            message: String::new(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}

fn describe(attempts: &[Attempt], last: &Error) -> String {
    let tries: Vec<String> = attempts
        .iter()
        .map(|a| format!("{} try {}: {}", a.model, a.retry + 1, a.message))
        .collect();
    format!(
        "{last} (after {} attempts: {})",
        attempts.len(),
        tries.join("; ")
    )
}

impl Error {
    /// The error that decides the response: for a chain of attempts, the last one's.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Attempts { last, .. } => last.cause(),
            other => other,
        }
    }

    /// Every try that failed, in order; empty when the error did not come from tries.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Error::Attempts { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// A stable name of the kind, for failure reasons and metrics.
    pub fn reason(&self) -> &'static str {
        match self.cause() {
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::InsufficientCredits(_) => "insufficient_credits",
            Error::Timeout(_) => "timeout",
            Error::BadRequest(_) | Error::PayloadTooLarge(_) => "bad_request",
            Error::ContextTooLong(_) => "context_length_exceeded",
            Error::Unauthorized(_) => "unauthorized",
            Error::UnknownModel(_) => "unknown_model",
            Error::Upstream { .. } => "upstream_error",
            Error::InvalidResponse(_) => "invalid_response",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) | Error::Attempts { .. } => "internal",
        }
    }

    pub fn status(&self) -> u16 {
        match self.cause() {
            Error::BadRequest(_) | Error::ContextTooLong(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::InsufficientCredits(_) => 402,
            Error::UnknownModel(_) => 404,
            Error::Timeout(_) => 408,
            Error::PayloadTooLarge(_) => 413,
            Error::RateLimited { .. } => 429,
            Error::Upstream { .. } | Error::InvalidResponse(_) => 502,
            Error::Unavailable(_) | Error::Overloaded { .. } => 503,
            Error::Internal(_) | Error::Attempts { .. } => 500,
        }
    }

    /// Worth another try on the same model: transient by nature.
    pub fn is_retryable(&self) -> bool {
        match self.cause() {
            Error::Timeout(_) | Error::RateLimited { .. } | Error::Overloaded { .. } => true,
            Error::Upstream { status, .. } => status.is_none_or(|s| s >= 500),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self.cause() {
            Error::RateLimited { retry_after, .. } | Error::Overloaded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Prefixes the message with where it happened, keeping the kind (and, for a chain of
    /// attempts, prefixing the error that decides the response).
    pub fn context(self, prefix: &str) -> Self {
        match self {
            Error::Attempts { attempts, last } => Error::Attempts {
                attempts,
                last: Box::new(last.context(prefix)),
            },
            other => other.map_messages(&|m| format!("{prefix}: {m}")),
        }
    }

    /// The same error with every message (each attempt's too) passed through `f`, the kind kept.
    pub fn map_messages(self, f: &impl Fn(String) -> String) -> Self {
        match self {
            Error::BadRequest(m) => Error::BadRequest(f(m)),
            Error::ContextTooLong(m) => Error::ContextTooLong(f(m)),
            Error::Unauthorized(m) => Error::Unauthorized(f(m)),
            Error::UnknownModel(m) => Error::UnknownModel(f(m)),
            Error::PayloadTooLarge(m) => Error::PayloadTooLarge(f(m)),
            Error::Timeout(m) => Error::Timeout(f(m)),
            Error::RateLimited {
                message,
                retry_after,
            } => Error::RateLimited {
                message: f(message),
                retry_after,
            },
            Error::InsufficientCredits(m) => Error::InsufficientCredits(f(m)),
            Error::Overloaded {
                message,
                retry_after,
            } => Error::Overloaded {
                message: f(message),
                retry_after,
            },
            Error::Upstream { status, message } => Error::Upstream {
                status,
                message: f(message),
            },
            Error::InvalidResponse(m) => Error::InvalidResponse(f(m)),
            Error::Unavailable(m) => Error::Unavailable(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
            Error::Attempts { attempts, last } => Error::Attempts {
                attempts: attempts
                    .into_iter()
                    .map(|a| Attempt {
                        message: f(a.message),
                        ..a
                    })
                    .collect(),
                last: Box::new(last.map_messages(f)),
            },
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.status(), self.to_string());
        if let Some(name) = self.openai_code() {
            body = body.named(name);
        }
        if let Error::Upstream {
            status: Some(s), ..
        } = self.cause()
        {
            body = body.with_metadata("upstream_status", *s);
        }
        if let Some(after) = self.retry_after() {
            body = body.with_metadata("retry_after_s", after.as_secs_f64().ceil());
        }
        if let Error::Attempts { attempts, .. } = self {
            if let Ok(list) = serde_json::to_value(attempts) {
                body = body.with_metadata("attempts", list);
            }
        }
        body
    }

    /// OpenAI's code name where the kind says more than the status does.
    fn openai_code(&self) -> Option<&'static str> {
        match self.cause() {
            Error::ContextTooLong(_) => Some("context_length_exceeded"),
            Error::UnknownModel(_) => Some("model_not_found"),
            Error::InsufficientCredits(_) => Some("insufficient_quota"),
            Error::Upstream { .. } => Some("upstream_error"),
            Error::InvalidResponse(_) => Some("invalid_response"),
            Error::Unavailable(_) => Some("unavailable"),
            _ => None,
        }
    }

    /// Maps an upstream HTTP error status and its message to the error kind.
    pub fn from_upstream_status(
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        match status {
            400 | 413 | 422 if overflows_context(&message) => {
                Error::ContextTooLong(format!("upstream rejected the request: {message}"))
            }
            400 | 413 | 422 => {
                Error::BadRequest(format!("upstream rejected the request: {message}"))
            }
            401 | 403 => Error::Upstream {
                status: Some(status),
                message: "upstream refused the provider's credentials (check its API key)".into(),
            },
            402 => Error::InsufficientCredits(format!("upstream: insufficient credits: {message}")),
            408 => Error::Timeout(format!("upstream timed out: {message}")),
            429 => Error::RateLimited {
                message: format!("upstream rate limit: {message}"),
                retry_after,
            },
            503 => Error::Overloaded {
                message: format!("upstream overloaded: {message}"),
                retry_after,
            },
            _ => Error::Upstream {
                status: Some(status),
                message: format!("upstream error {status}: {message}"),
            },
        }
    }
}

/// How OpenAI (`context_length_exceeded`, "maximum context length"), Anthropic ("prompt is too
/// long") and llama.cpp's server ("exceeds the available context size") say the prompt is too long.
fn overflows_context(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "exceeds the available context size",
    ]
    .iter()
    .any(|phrase| message.contains(phrase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retryability() {
        let e = Error::from_upstream_status(429, "slow down".into(), Some(Duration::from_secs(2)));
        assert_eq!(e.status(), 429);
        assert!(e.is_retryable());
        assert_eq!(e.to_body().error.metadata["retry_after_s"], 2.0);
        let e = Error::from_upstream_status(503, "x".into(), Some(Duration::from_secs(1)));
        assert_eq!((e.status(), e.is_retryable()), (503, true));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let e = Error::from_upstream_status(500, "x".into(), None);
        assert_eq!((e.status(), e.is_retryable()), (502, true));
        let e = Error::from_upstream_status(400, "bad".into(), None);
        assert_eq!((e.status(), e.is_retryable()), (400, false));
        let e = Error::from_upstream_status(
            400,
            "This model's maximum context length is 8192 tokens".into(),
            None,
        );
        assert_eq!((e.status(), e.reason()), (400, "context_length_exceeded"));
        assert_eq!(e.to_body().error.name, "context_length_exceeded");
        for wording in [
            "prompt is too long: 250000 tokens > 200000 maximum",
            "the request exceeds the available context size, try increasing it",
        ] {
            let e = Error::from_upstream_status(400, wording.into(), None);
            assert_eq!(e.reason(), "context_length_exceeded", "{wording}");
        }
        let e = Error::from_upstream_status(401, "key sk-secret is wrong".into(), None);
        assert!(!e.to_string().contains("sk-secret"));
        let e = Error::Upstream {
            status: None,
            message: "connect".into(),
        };
        assert!(e.is_retryable());
        assert_eq!(Error::InvalidResponse("x".into()).status(), 502);
        assert_eq!(Error::Internal("template".into()).status(), 500);
        assert!(!Error::Internal("template".into()).is_retryable());
    }

    #[test]
    fn a_chain_of_attempts_answers_with_the_last_kind_and_lists_every_try() {
        let attempt = |model: &str, retry, status, reason| Attempt {
            model: model.into(),
            provider: "p".into(),
            retry,
            status,
            reason,
            message: format!("{model} failed"),
            elapsed_ms: 1,
        };
        let e = Error::Attempts {
            attempts: vec![
                attempt("a", 0, 502, "upstream_error"),
                attempt("a", 1, 502, "upstream_error"),
                attempt("b", 0, 429, "rate_limited"),
            ],
            last: Box::new(Error::RateLimited {
                message: "slow down".into(),
                retry_after: Some(Duration::from_secs(3)),
            }),
        };
        assert_eq!(
            (e.status(), e.reason(), e.is_retryable()),
            (429, "rate_limited", true)
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let body = e.to_body();
        let listed = body.error.metadata["attempts"].as_array().unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[1]["model"], "a");
        assert_eq!(listed[1]["retry"], 1);
        assert_eq!(listed[2]["reason"], "rate_limited");
        assert!(body
            .error
            .message
            .starts_with("slow down (after 3 attempts"));
        let e = e.context("fusion synthesis");
        assert_eq!(e.attempts().len(), 3, "context keeps the attempts");
        assert!(e.to_string().starts_with("fusion synthesis: slow down"));
    }
}
