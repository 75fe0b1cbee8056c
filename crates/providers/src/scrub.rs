//! Upstream text enters the process through a provider, and here it is scrubbed of every
//! configured secret (some APIs echo the key they were given in their errors), before a response,
//! a fusion report or a log line can carry it. Every error a provider returns passes through:
//! its HTTP layer's, and its parsers', which can quote the upstream's body.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use quorate_api::{ChatCompletion, ModelRequest};
use quorate_config::Secrets;

use crate::{ChunkStream, Error, Provider, RequestCtx};

/// A provider whose errors, returned or streamed, come out scrubbed.
pub(crate) struct Scrubbed {
    inner: Arc<dyn Provider>,
    secrets: Secrets,
}

impl Scrubbed {
    pub fn wrap(inner: Arc<dyn Provider>, secrets: &Secrets) -> Arc<dyn Provider> {
        Arc::new(Self {
            inner,
            secrets: secrets.clone(),
        })
    }
}

#[async_trait]
impl Provider for Scrubbed {
    async fn complete(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChatCompletion, Error> {
        let result = self.inner.complete(ctx, req).await;
        result.map_err(|e| scrub(e, &self.secrets))
    }

    async fn stream(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<ChunkStream, Error> {
        let chunks = self.inner.stream(ctx, req).await;
        let chunks = chunks.map_err(|e| scrub(e, &self.secrets))?;
        let secrets = self.secrets.clone();
        Ok(Box::pin(
            chunks.map(move |item| item.map_err(|e| scrub(e, &secrets))),
        ))
    }

    async fn count_tokens(&self, ctx: &RequestCtx, req: ModelRequest) -> Result<u64, Error> {
        let result = self.inner.count_tokens(ctx, req).await;
        result.map_err(|e| scrub(e, &self.secrets))
    }
}

/// The same error with every message scrubbed, the kind kept.
fn scrub(error: Error, secrets: &Secrets) -> Error {
    error.map_messages(&|message| secrets.scrub(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_status_and_loses_the_secret() {
        let secrets = Secrets::new(["sk-test-abcdefgh".to_string()]);
        let leak = || "echo sk-test-abcdefgh".to_string();
        for status in [400, 402, 408, 429, 500, 503] {
            let e = Error::from_upstream_status(status, leak(), None);
            let scrubbed = scrub(e.clone(), &secrets);
            assert_eq!(scrubbed.status(), e.status());
            assert!(!scrubbed.to_string().contains("sk-test"), "{scrubbed}");
            assert!(scrubbed.to_string().contains("[redacted]"), "{scrubbed}");
        }
        let e = scrub(Error::InvalidResponse(leak()), &secrets);
        assert_eq!(e.to_string(), "echo [redacted]");
    }
}
