//! Off the request path: records wait in a bounded queue and one task writes them in batches.
//! A slow or dead database never holds a request up: when the queue is full, records are
//! dropped and counted; a failed batch is retried with backoff until the database is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};

use crate::db;
use crate::record::Run;

/// Rows written per transaction at most.
const BATCH: usize = 256;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The last batch's write time, in microseconds.
    pub last_write_us: AtomicU64,
}

pub struct Writer {
    pub pool: AnyPool,
    pub runs: mpsc::Receiver<Run>,
    pub counters: Arc<Counters>,
    pub retention: Option<Duration>,
    /// Set to true to flush what is queued and stop.
    pub stop: watch::Receiver<bool>,
}

impl Writer {
    pub async fn run(mut self) {
        let mut batch = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        let mut last_prune: Option<Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                last_prune = Some(Instant::now());
            }
            if batch.is_empty() {
                let stopping = *self.stop.borrow();
                tokio::select! {
                    // Queued records first: stopping flushes them.
                    biased;
                    run = self.runs.recv() => match run {
                        Some(run) => batch.push(run),
                        None => return,
                    },
                    _ = self.stop.changed(), if !stopping => continue,
                    // Stopping with nothing queued: done.
                    () = std::future::ready(()), if stopping => return,
                    () = tokio::time::sleep(PRUNE_EVERY) => continue,
                }
            }
            while batch.len() < BATCH {
                match self.runs.try_recv() {
                    Ok(run) => batch.push(run),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            match db::insert(&self.pool, &batch).await {
                Ok(()) => {
                    let us = started.elapsed().as_micros() as u64;
                    self.counters.last_write_us.store(us, Ordering::Relaxed);
                    self.counters
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
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
                    if *self.stop.borrow() {
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

    async fn prune(&self) {
        let Some(keep) = self.retention else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = now.saturating_sub(keep).as_millis() as i64;
        match db::prune(&self.pool, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned runs past retention_days"),
            Err(e) => tracing::warn!(error = %e, "pruning old runs failed"),
        }
    }
}
