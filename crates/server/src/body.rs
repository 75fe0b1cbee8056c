//! A response body that holds a guard until hyper is done with the body: written out (or its
//! client gone), on the connection's own task. Work that must follow a response without
//! delaying it (a request's record) runs in the guard's `Drop`, after the bytes went out and
//! without waking another worker thread for a task of its own.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body::{Frame, SizeHint};

pub struct Guarded<G> {
    body: Body,
    _guard: G,
}

/// `response` with `guard` dropped once its body is.
pub fn guard<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response<Guarded<G>> {
    response.map(|body| Guarded {
        body,
        _guard: guard,
    })
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
