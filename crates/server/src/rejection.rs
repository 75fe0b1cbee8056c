//! hyper answers a request it cannot parse (400 malformed, 414 URI too long, 431 headers too
//! large) itself, before any service runs, with an empty body. This wrapper around a connection
//! rewrites those answers into the JSON error envelope every other response carries. It knows
//! them as the only 4xx heads that declare an empty body and no content type: every error the
//! app writes is JSON.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use quorate_api::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct JsonRejections<I> {
    io: I,
    max_header_bytes: usize,
    /// A rewritten answer still being written.
    pending: Bytes,
}

impl<I> JsonRejections<I> {
    pub fn new(io: I, max_header_bytes: usize) -> Self {
        Self {
            io,
            max_header_bytes,
            pending: Bytes::new(),
        }
    }
}

impl<I: AsyncWrite + Unpin> JsonRejections<I> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonRejections<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonRejections<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf, self.max_header_bytes) {
            // Taken whole; written out by the next write, flush or shutdown.
            self.pending = answer;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// No vectored writes: hyper then hands each response head to one `poll_write`, whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// hyper's own error answer, rewritten with a JSON body; `None` for anything else.
fn rewrite(written: &[u8], max_header_bytes: usize) -> Option<Bytes> {
    if !written.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(written)
        .ok()?
        .strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let fields: Vec<&str> = lines.collect();
    let is = |field: &str, name: &str| {
        field
            .get(..name.len())
            .is_some_and(|f| f.eq_ignore_ascii_case(name))
    };
    let empty = fields.iter().any(|f| is(f, "content-length: 0"));
    if !empty || fields.iter().any(|f| is(f, "content-type:")) {
        return None;
    }
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    // No route was chosen, so the default dialect: OpenAI's, as on `/v1`.
    let error = ErrorBody::new(status, message(status, max_header_bytes));
    let body = serde_json::to_string(&error.openai()).ok()?;
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for field in fields.iter().filter(|f| !is(f, "content-length:")) {
        answer.push_str(field);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(Bytes::from(answer))
}

fn message(status: u16, max_header_bytes: usize) -> String {
    match status {
        400 => "malformed HTTP request: the request line or a header does not parse".into(),
        414 => "the request URI is too long".into(),
        431 => format!(
            "request headers are larger than server.max_header_bytes allows ({max_header_bytes} \
             bytes)"
        ),
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("request refused")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_answers_become_json_and_the_apps_pass_untouched() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = rewrite(hyper, 8192).unwrap();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json") && head.contains("date: x"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["status"], 431);
        assert_eq!(body["error"]["code"], "headers_too_large");
        assert!(body["error"]["message"].as_str().unwrap().contains("8192"));

        let app = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite(app, 8192).is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 8192).is_none());
        assert!(rewrite(b"data: {\"x\": 1}\n\n", 8192).is_none());
    }
}
