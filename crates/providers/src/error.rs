//! The one error type of the request path, and the HTTP status each kind maps to.

use std::time::Duration;

use quorate_api::ErrorBody;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The caller's request is malformed or names an invalid field (or the upstream said so).
    #[error("{0}")]
    BadRequest(String),
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
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::InsufficientCredits(_) => 402,
            Error::UnknownModel(_) => 404,
            Error::Timeout(_) => 408,
            Error::PayloadTooLarge(_) => 413,
            Error::RateLimited { .. } => 429,
            Error::Upstream { .. } | Error::InvalidResponse(_) => 502,
            Error::Unavailable(_) => 503,
        }
    }

    /// Worth another try on the same model: transient by nature.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::RateLimited { .. } => true,
            Error::Upstream { status, .. } => status.is_none_or(|s| s >= 500),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Prefixes the message with where it happened, keeping the kind.
    pub fn context(self, prefix: &str) -> Self {
        let add = |m: String| format!("{prefix}: {m}");
        match self {
            Error::BadRequest(m) => Error::BadRequest(add(m)),
            Error::Unauthorized(m) => Error::Unauthorized(add(m)),
            Error::UnknownModel(m) => Error::UnknownModel(add(m)),
            Error::PayloadTooLarge(m) => Error::PayloadTooLarge(add(m)),
            Error::Timeout(m) => Error::Timeout(add(m)),
            Error::RateLimited {
                message,
                retry_after,
            } => Error::RateLimited {
                message: add(message),
                retry_after,
            },
            Error::InsufficientCredits(m) => Error::InsufficientCredits(add(m)),
            Error::Upstream { status, message } => Error::Upstream {
                status,
                message: add(message),
            },
            Error::InvalidResponse(m) => Error::InvalidResponse(add(m)),
            Error::Unavailable(m) => Error::Unavailable(add(m)),
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.status(), self.to_string());
        if let Error::Upstream {
            status: Some(s), ..
        } = self
        {
            body = body.with_metadata("upstream_status", *s);
        }
        if let Some(after) = self.retry_after() {
            body = body.with_metadata("retry_after_s", after.as_secs_f64().ceil());
        }
        body
    }

    /// Maps an upstream HTTP error status and its message to the error kind.
    pub fn from_upstream_status(
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        match status {
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
            _ => Error::Upstream {
                status: Some(status),
                message: format!("upstream error {status}: {message}"),
            },
        }
    }
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
        let e = Error::from_upstream_status(503, "x".into(), None);
        assert_eq!((e.status(), e.is_retryable()), (502, true));
        let e = Error::from_upstream_status(400, "bad".into(), None);
        assert_eq!((e.status(), e.is_retryable()), (400, false));
        let e = Error::from_upstream_status(401, "key sk-secret is wrong".into(), None);
        assert!(!e.to_string().contains("sk-secret"));
        let e = Error::Upstream {
            status: None,
            message: "connect".into(),
        };
        assert!(e.is_retryable());
        assert_eq!(Error::InvalidResponse("x".into()).status(), 502);
    }
}
