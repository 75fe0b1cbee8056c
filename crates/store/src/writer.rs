//! Off the request path: records wait in a bounded queue and one task writes them in batches.
//! A slow or dead database never holds a request up: when the queue is full, records are
//! dropped and counted; a failed batch is retried with backoff until the database is back.
//!
//! The task runs on a thread of its own at a lower CPU priority, with connections of its own
//! (SQLite's worker thread, started from it, inherits the priority): on a small machine, encoding
//! and inserting records otherwise takes turns with request handling and shows in its p99.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot, watch};

use crate::db;
use crate::record::Run;
use crate::StoreError;

/// Rows written per transaction at most.
const BATCH: usize = 256;
/// How long records gather after the first since the last write: at 1,000 requests a second,
/// twenty transactions of fifty rows instead of a thousand of one or two, and this thread (and
/// SQLite's) woken twenty times instead of a thousand, on CPUs the requests share. A run read by
/// id right after its request waits for its record (`GET /v1/runs/{id}`).
const LINGER: Duration = Duration::from_millis(50);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A record on its way to the database.
pub struct Queued {
    pub run: Run,
    /// The request's body, not yet parsed into `run.detail.request`.
    pub request: Option<Bytes>,
}

impl Queued {
    fn into_run(self) -> Run {
        let mut run = self.run;
        if let Some(body) = self.request {
            run.detail.request = serde_json::from_slice(&body).ok();
        }
        run
    }
}

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub written: AtomicU64,
    /// Transactions written: `written / batches` is the rows per batch.
    pub batches: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The last batch's write time, in microseconds.
    pub last_write_us: AtomicU64,
}

pub struct Writer {
    pub runs: mpsc::Receiver<Queued>,
    pub counters: Arc<Counters>,
    pub retention: Option<Duration>,
    /// Set to true to flush what is queued and stop.
    pub stop: watch::Receiver<bool>,
}

/// Starts the writer on its own thread once its connection is open; the receiver resolves when
/// the writer has stopped.
pub async fn spawn(url: String, writer: Writer) -> Result<oneshot::Receiver<()>, StoreError> {
    let (opened, open) = oneshot::channel();
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("quorate-store".into())
        .spawn(move || {
            write_on_this_thread(url, writer, opened);
            let _ = done.send(());
        })
        .map_err(|e| StoreError::Connect(format!("cannot start the writer's thread: {e}")))?;
    match open.await {
        Ok(result) => result.map(|()| finished),
        Err(_) => Err(StoreError::Connect("the writer's thread stopped".into())),
    }
}

/// The writer thread's whole life: a lower priority, a runtime and connections of its own (its
/// open or its failure reported on `opened`), then writing until told to stop.
fn write_on_this_thread(url: String, writer: Writer, opened: Opened) {
    lower_priority();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let message = format!("cannot start the writer's runtime: {e}");
            let _ = opened.send(Err(StoreError::Connect(message)));
            return;
        }
    };
    runtime.block_on(async move {
        match db::connect(&url).await {
            Ok(pool) => {
                let _ = opened.send(Ok(()));
                writer.run(&pool).await;
                pool.close().await;
            }
            Err(e) => {
                let _ = opened.send(Err(e));
            }
        }
    });
}

type Opened = oneshot::Sender<Result<(), StoreError>>;

/// Ten nice steps below the process (Linux keeps a nice value per thread), so request handling
/// goes first when both want a CPU. Not worth failing over: the writer works without it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, thread);
        if libc::setpriority(libc::PRIO_PROCESS, thread, (current + 10).min(19)) != 0 {
            tracing::debug!("run store writer: could not lower its CPU priority");
        }
    }
}

impl Writer {
    pub async fn run(mut self, pool: &AnyPool) {
        let mut batch = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        let mut last_prune: Option<Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.prune(pool).await;
                last_prune = Some(Instant::now());
            }
            if batch.is_empty() {
                let stopping = *self.stop.borrow();
                tokio::select! {
                    // Queued records first: stopping flushes them.
                    biased;
                    run = self.runs.recv() => match run {
                        Some(run) => batch.push(run.into_run()),
                        None => return,
                    },
                    _ = self.stop.changed(), if !stopping => continue,
                    // Stopping with nothing queued: done.
                    () = std::future::ready(()), if stopping => return,
                    () = tokio::time::sleep(PRUNE_EVERY) => continue,
                }
                self.linger().await;
            }
            while batch.len() < BATCH {
                match self.runs.try_recv() {
                    Ok(run) => batch.push(run.into_run()),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            match db::insert(pool, &batch).await {
                Ok(()) => {
                    let us = started.elapsed().as_micros() as u64;
                    self.counters.last_write_us.store(us, Ordering::Relaxed);
                    self.counters
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    batch.clear();
                    backoff = FIRST_BACKOFF;
                    if failing {
                        tracing::info!("run store writes resumed");
                        failing = false;
                    }
                }
                Err(e) => {
                    self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %e, rows = batch.len(), "run store write failed; retrying until the database is back (records past the queue are dropped)");
                        failing = true;
                    }
                    if self.stopping() {
                        tracing::warn!(
                            rows = batch.len(),
                            "run store stopping with a batch unwritten"
                        );
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Lets more records queue up, unless a batch is waiting already (a flood is written
    /// back to back; a small queue counts as full at half) or the store is stopping.
    async fn linger(&mut self) {
        let enough = BATCH.min(self.runs.max_capacity() / 2);
        // The batch holds one record already.
        if self.runs.len() + 1 >= enough || *self.stop.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(LINGER) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// Told to stop, or abandoned: the store was dropped without `close` (its queue and stop
    /// signal are gone), so a failing database must not keep this thread retrying forever.
    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.runs.is_closed() || self.stop.has_changed().is_err()
    }

    async fn prune(&self, pool: &AnyPool) {
        let Some(keep) = self.retention else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = now.saturating_sub(keep).as_millis() as i64;
        match db::prune(pool, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned runs past retention_days"),
            Err(e) => tracing::warn!(error = %e, "pruning old runs failed"),
        }
    }
}
