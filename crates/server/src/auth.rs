//! Gateway keys: when configured, every API request needs `Authorization: Bearer <key>` (or, as
//! Anthropic's clients send it, `x-api-key: <key>`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quorate_providers::Error;

use crate::ApiError;

/// A gateway key and the name runs are recorded under.
pub struct Key {
    pub name: String,
    pub secret: String,
}

/// Comma-separated keys, each `NAME:KEY` or a bare `KEY` (named `key-1`, `key-2`, ... by
/// position). A name is letters, digits, `_`, `-` and `.`.
pub fn parse_keys(raw: &str) -> Vec<Key> {
    raw.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, entry)| match entry.split_once(':') {
            Some((name, secret)) if is_name(name) && !secret.is_empty() => Key {
                name: name.to_string(),
                secret: secret.to_string(),
            },
            _ => Key {
                name: format!("key-{}", i + 1),
                secret: entry.to_string(),
            },
        })
        .collect()
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The layer in front of the API, added only when keys are configured.
pub async fn require_key(
    State(keys): State<Arc<Vec<Key>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    // Anthropic's SDKs send the key as `x-api-key`.
    let presented = bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let path = request.uri().path();
    let anthropic = path.ends_with("/messages") || path.ends_with("/messages/count_tokens");
    let matched = presented.and_then(|key| {
        keys.iter()
            .find(|k| constant_time_eq(k.secret.as_bytes(), key.as_bytes()))
    });
    match (matched, presented) {
        (Some(key), _) => {
            request
                .extensions_mut()
                .insert(crate::record::Caller(key.name.clone()));
            next.run(request).await
        }
        (None, Some(_)) => refuse(anthropic, "invalid gateway API key"),
        (None, None) => refuse(
            anthropic,
            "missing gateway API key: send Authorization: Bearer <key> (or x-api-key: <key>)",
        ),
    }
}

/// A 401 in the shape of the surface asked.
fn refuse(anthropic: bool, message: &str) -> Response {
    if anthropic {
        crate::messages::anthropic_error(401, message, None)
    } else {
        ApiError(Error::Unauthorized(message.into())).into_response()
    }
}

/// Compares without an early exit, so response time does not leak how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_named_or_numbered() {
        let keys = super::parse_keys(" alice:sk-1, sk-2==,bad name:sk-3 ,");
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.name.as_str(), k.secret.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("alice", "sk-1"),
                ("key-2", "sk-2=="),
                ("key-3", "bad name:sk-3")
            ]
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }
}
