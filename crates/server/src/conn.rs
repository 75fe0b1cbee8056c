//! Connections: accepted within a limit, served over HTTP/1 or HTTP/2 (hyper-util's auto
//! builder), and closed when a client is too slow to send a request, so that slow clients
//! cannot hold the server's file descriptors.
//!
//! One watchdog per connection times what a slow client could hold: a connection with no request
//! in flight is closed after `header_timeout` before its first request (the bytes before hyper
//! knows the protocol, the HTTP/2 handshake, a request's headers) and between HTTP/1 requests
//! (the wait for, and the reading of, the next request's headers), and after `idle_timeout`
//! between HTTP/2 requests. hyper's own `header_read_timeout` is not used: it arms a timer for
//! every request, which wakes the runtime's driver thread once per request; the watchdog looks
//! once per limit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use quorate_config::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::rejection::JsonRejections;

/// Connections past `max_connections` get a lane of their own, this wide, that answers /health
/// and refuses the rest with a 503. Each of its connections serves one request and must send it
/// quickly, so a flood past the limit cannot hold the lane for long; past both, a connection is
/// closed as soon as it is accepted.
const OVERFLOW_CONNECTIONS: usize = 64;
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// File descriptors kept back from connections: the overflow lane's, the listener, log and model
/// files, the search index.
const RESERVED_FILES: u64 = OVERFLOW_CONNECTIONS as u64 + 64;

/// One kind of connection: the app it serves, how, and how many at once.
struct Lane {
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

impl Lane {
    fn new(app: axum::Router, server: &ServerConfig, width: usize, header: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // hyper's read buffer bounds the request line and headers: 431 past it.
            .max_buf_size(server.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
        Self {
            app,
            builder,
            permits: Arc::new(Semaphore::new(width)),
            header_timeout: header,
            idle_timeout: Duration::from_secs_f64(server.idle_timeout_s),
            max_header_bytes: server.max_header_bytes,
        }
    }

    /// Serves one connection until it ends, idles past its limit, or the server stops.
    async fn serve(self: Arc<Self>, tcp: TcpStream, mut stopping: watch::Receiver<bool>) {
        let activity = Arc::new(Activity::new());
        let requests = activity.clone();
        let app = self.app.clone();
        // Each request counts as in flight until hyper is done with its response body.
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::start(&requests, request.version());
            let response = app.clone().oneshot(request.map(Body::new));
            async move {
                let response = response.await?;
                // An SSE stream is a request in flight for as long as it lasts.
                Ok::<_, Infallible>(crate::body::guard(response, busy))
            }
        });
        let io = TokioIo::new(JsonRejections::new(tcp, self.max_header_bytes));
        let mut conn = pin!(self.builder.serve_connection(io, service));
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            // Nothing is in flight: closing loses no answer.
            () = idled(&activity, self.header_timeout, self.idle_timeout) => return,
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        conn.as_mut().graceful_shutdown();
        log_end(conn.await);
    }
}

/// Resolves once the connection has had no request in flight for its limit: `header` before its
/// first request and between HTTP/1 requests (headers must come within it), `idle` between
/// HTTP/2 requests. It looks once per limit rather than on every request, so a busy
/// connection's requests pay a few atomic updates and no timer.
async fn idled(activity: &Activity, header: Duration, idle: Duration) {
    loop {
        let multiplexed = activity.http2.load(Ordering::Relaxed);
        let limit = if multiplexed { idle } else { header };
        match activity.quiet_for() {
            Some(quiet) if quiet >= limit => return,
            Some(quiet) => tokio::time::sleep(limit - quiet).await,
            None => tokio::time::sleep(limit).await,
        }
    }
}

/// The requests of one connection: how many are in flight, how many began, and when the count
/// last changed (in nanoseconds since the connection began).
struct Activity {
    began: Instant,
    in_flight: AtomicUsize,
    /// Whether the connection speaks HTTP/2 (seen on its first request).
    http2: AtomicBool,
    changed_ns: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            began: Instant::now(),
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            changed_ns: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.changed_ns.store(now, Ordering::Relaxed);
    }

    /// How long nothing has been in flight; `None` while a request is.
    fn quiet_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let changed = Duration::from_nanos(self.changed_ns.load(Ordering::Relaxed));
        Some(self.began.elapsed().saturating_sub(changed))
    }
}

/// A request in flight on its connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>, version: http::Version) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        if version == http::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        activity.touch();
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// The main lane and the overflow lane.
pub struct Lanes {
    main: Arc<Lane>,
    overflow: Arc<Lane>,
}

impl Lanes {
    /// `app` serves up to `server.max_connections` (fewer when the open-file limit is lower);
    /// `overflow` the connections past it.
    pub fn new(app: axum::Router, overflow: axum::Router, server: &ServerConfig) -> Self {
        let header = Duration::from_secs_f64(server.header_timeout_s);
        let width = connection_budget(server.max_connections);
        let overflow_header = header.min(OVERFLOW_HEADER_TIMEOUT);
        let mut overflow = Lane::new(overflow, server, OVERFLOW_CONNECTIONS, overflow_header);
        overflow.builder.http1().keep_alive(false);
        Self {
            main: Arc::new(Lane::new(app, server, width, header)),
            overflow: Arc::new(overflow),
        }
    }

    /// Serves `tcp` on the first lane with room, or closes it.
    fn dispatch(&self, tcp: TcpStream, stopping: &watch::Sender<bool>) {
        // Without TCP_NODELAY a response written in two segments can wait on a delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let lanes = [&self.main, &self.overflow];
        let Some((lane, permit)) = lanes.into_iter().find_map(|lane| {
            let permit = lane.permits.clone().try_acquire_owned().ok()?;
            Some((lane.clone(), permit))
        }) else {
            tracing::debug!("connection closed: both lanes are full");
            return;
        };
        let stopping = stopping.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            lane.serve(tcp, stopping).await;
        });
    }
}

/// Serves until `shutdown` resolves; then stops accepting (the listener closes) and lets
/// in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    lanes: Lanes,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let (stopping, _) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => lanes.dispatch(tcp, &stopping),
                Err(e) => accept_failed(e).await,
            },
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    stopping.send_replace(true);
    // Each connection holds a receiver until it ends.
    if tokio::time::timeout(grace, stopping.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "in-flight requests outlived the shutdown grace; dropping them"
        );
    }
}

/// A failed accept is the client's problem, or the process is out of file descriptors: then
/// wait a moment for some to close rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::warn!("accept failed: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `configured`, or fewer when the open-file limit leaves no room for that many: each connection
/// may need an upstream connection too. The soft limit is raised to the hard one first.
fn connection_budget(configured: usize) -> usize {
    let Some(files) = raise_open_file_limit() else {
        return configured;
    };
    let budget = usize::try_from(files.saturating_sub(RESERVED_FILES) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if budget < configured {
        tracing::warn!(
            "server.max_connections lowered from {configured} to {budget}: the open-file limit \
             is {files} (raise it with ulimit -n)"
        );
    }
    configured.min(budget)
}

/// The open-file limit after raising the soft limit to the hard one; `None` when unlimited.
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            limit.current = Some(maximum);
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit.current = Some(current);
            }
        }
    }
    limit.current
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}
