//! A response body that holds a guard until hyper is done with the body: its last frame taken
//! (or its client gone), on the connection's own task. Work that follows a response (a request's
//! record) runs in the guard's `Drop`, without waking another worker thread for a task of its
//! own. hyper drops a body as soon as it has buffered the last frame, just before it writes the
//! buffer out, so that work still comes before the last write: about 5 K instructions (1-2 µs).
//! Running it after the write (a queue that each connection's task drains after every poll) cost
//! 0.5-0.9 K instructions more per request and made no difference that `quorate-bench` could see.

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
