//! Incremental Server-Sent Events parsing of upstream streams.
//!
//! Handles what real upstreams send: comments (`: OPENROUTER PROCESSING`), CRLF or CR line ends,
//! multi-line `data:`, and frames split anywhere across reads. A stream that ends inside a frame
//! is reported, so a cut connection is an error rather than a silently short answer.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the upstream names its events (Anthropic does).
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let end_len = match self.buf[i] {
                b'\n' => 1,
                // A CR at the end of the buffer may be the first half of a CRLF: wait for more.
                b'\r' if i + 1 == self.buf.len() => break,
                b'\r' if self.buf[i + 1] == b'\n' => 2,
                b'\r' => 1,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            i += end_len;
            start = i;
        }
        self.buf.drain(..start);
        events
    }

    /// True when bytes or fields are pending: the stream stopped inside a frame.
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty() || !self.data.is_empty() || self.event.is_some()
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(SseEvent {
                event: self.event.take(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields mean nothing to us
        }
        None
    }
}

/// Turns a response body into SSE events. `idle` bounds the wait for each read, so an upstream
/// that stops sending is a timeout, not a hang; `who` names the provider in errors.
pub fn events<S>(
    body: S,
    idle: Duration,
    who: String,
) -> impl Stream<Item = Result<SseEvent, Error>>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    async_stream::stream! {
        let mut parser = SseParser::default();
        let mut body = std::pin::pin!(body);
        loop {
            let read = match tokio::time::timeout(idle, body.next()).await {
                Ok(read) => read,
                Err(_) => {
                    yield Err(Error::Timeout(format!("{who}: no data from upstream for {}s", idle.as_secs_f64())));
                    return;
                }
            };
            match read {
                Some(Ok(bytes)) => {
                    for event in parser.push(&bytes) {
                        yield Ok(event);
                    }
                }
                Some(Err(e)) => {
                    yield Err(Error::Upstream { status: None, message: format!("{who}: stream broke: {}", crate::http::describe(&e)) });
                    return;
                }
                None => {
                    if parser.is_mid_frame() {
                        yield Err(Error::InvalidResponse(format!("{who}: upstream stream was cut mid-event")));
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> (Vec<SseEvent>, bool) {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c));
        }
        (out, p.is_mid_frame())
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn comments_and_crlf() {
        let (ev, mid) =
            feed(&[b": OPENROUTER PROCESSING\r\n\r\ndata: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n"]);
        assert_eq!(data(&ev), vec!["{\"a\":1}", "[DONE]"]);
        assert!(!mid);
    }

    #[test]
    fn frames_split_anywhere() {
        let whole = b"event: message_start\ndata: {\"x\": \"\xc3\xa9\"}\n\ndata: b\r\n\r\n";
        for cut in 1..whole.len() {
            let (ev, mid) = feed(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(data(&ev), vec!["{\"x\": \"é\"}", "b"], "cut at {cut}");
            assert_eq!(ev[0].event.as_deref(), Some("message_start"));
            assert!(!mid);
        }
    }

    #[test]
    fn multi_line_data_and_bare_cr() {
        let (ev, _) = feed(&[b"data: one\rdata:two\r\rdata\n\n"]);
        assert_eq!(data(&ev), vec!["one\ntwo", ""]);
    }

    #[test]
    fn cut_mid_frame_is_detected() {
        let (ev, mid) = feed(&[b"data: {\"a\":1}\n\ndata: {\"b\""]);
        assert_eq!(ev.len(), 1);
        assert!(mid);
        let (_, mid) = feed(&[b"data: {\"a\":1}\n"]);
        assert!(
            mid,
            "a data line without its blank line is an unfinished frame"
        );
    }
}

/// Property tests: `PROPTEST_CASES=1000000 cargo test -p quorate-providers properties` runs the
/// million-case check (the default run takes proptest's 256).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn encode(events: &[(Option<String>, String)], crlf: bool) -> Vec<u8> {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut bytes = String::from(": keep-alive comment");
        bytes.push_str(end);
        for (event, data) in events {
            if let Some(name) = event {
                bytes.push_str(&format!("event: {name}{end}"));
            }
            for line in data.split('\n') {
                bytes.push_str(&format!("data: {line}{end}"));
            }
            bytes.push_str(end);
        }
        bytes.into_bytes()
    }

    proptest! {
        /// Frames split at any byte (CRLF halves and UTF-8 sequences included) parse to the
        /// events they hold, as if read whole.
        #[test]
        fn events_survive_any_split(
            events in prop::collection::vec(
                (prop::option::of("[a-z_]{1,12}"), "[^\r\n]{1,30}(\n[^\r\n]{1,30})?"), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            crlf in any::<bool>(),
        ) {
            let bytes = encode(&events, crlf);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut parser = SseParser::default();
            let mut parsed = Vec::new();
            let mut from = 0;
            for point in points {
                parsed.extend(parser.push(&bytes[from..point]));
                from = point;
            }
            parsed.extend(parser.push(&bytes[from..]));
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|(event, data)| SseEvent { event: event.clone(), data: data.clone() })
                .collect();
            prop_assert_eq!(parsed, expected);
            prop_assert!(!parser.is_mid_frame());
        }

        /// Any bytes at all: no panic, and what is left is reported as mid-frame or not.
        #[test]
        fn any_bytes_parse(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut parser = SseParser::default();
            for chunk in &chunks {
                let _ = parser.push(chunk);
            }
            let _ = parser.is_mid_frame();
        }
    }
}
