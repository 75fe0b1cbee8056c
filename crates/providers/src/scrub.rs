//! Upstream text enters the process through a provider, and here it is scrubbed of every
//! configured secret (some APIs echo the key they were given in their errors), before a response,
//! a fusion report or a log line can carry it. Every error a provider returns passes through:
//! its HTTP layer's, and its parsers', which can quote the upstream's body.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use quorate_api::ModelRequest;
use quorate_config::Secrets;

use crate::{ChunkStream, Error, Provider, RequestCtx};

/// A provider whose errors, returned or streamed, come out scrubbed. Not a `Provider` itself:
/// a wrapper provider would box every call's future a second time and move the request into
/// it, on every request.
pub(crate) struct Scrubbed {
    inner: Arc<dyn Provider>,
    secrets: Secrets,
}

impl Scrubbed {
    pub fn wrap(inner: Arc<dyn Provider>, secrets: &Secrets) -> Self {
        Self {
            inner,
            secrets: secrets.clone(),
        }
    }

    /// A call to the provider (`complete`, `count_tokens`), its error scrubbed.
    pub fn call<'a, T: 'a>(
        &'a self,
        call: impl FnOnce(&'a dyn Provider) -> BoxFuture<'a, Result<T, Error>>,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'a {
        call(self.inner.as_ref()).map(|result| result.map_err(|e| scrub(e, &self.secrets)))
    }

    /// A stream opened on the provider, its errors scrubbed: on opening and midway.
    pub fn stream<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        req: ModelRequest,
    ) -> impl Future<Output = Result<ChunkStream, Error>> + Send + 'a {
        self.inner.stream(ctx, req).map(|opened| {
            let chunks = opened.map_err(|e| scrub(e, &self.secrets))?;
            let secrets = self.secrets.clone();
            let chunks: ChunkStream =
                Box::pin(chunks.map(move |item| item.map_err(|e| scrub(e, &secrets))));
            Ok(chunks)
        })
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
