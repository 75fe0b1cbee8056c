//! The run store: every request the gateway answers is kept (SQLite by default, PostgreSQL for
//! replicas sharing one database), written off the request path, and read back by id or as
//! filtered pages.

mod db;
mod record;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

pub use record::{
    Attempt, Cursor, Detail, FailureCount, Filter, Kind, Page, Run, Summary, TimedEvent, Usage,
    UsageRow,
};
pub use writer::Counters;
use writer::Queued;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run store: {0}")]
    Connect(String),
    #[error("cannot migrate the run store's schema: {0}")]
    Migrate(String),
    #[error("run store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("run store: a record does not encode: {0}")]
    Encode(String),
}

/// How the store is opened (from `[store]`).
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    /// Keep prompt and answer text.
    pub content: bool,
    pub retention_days: Option<u32>,
    /// Records waiting to be written, at most.
    pub queue: usize,
}

/// The store opened for reading only (`quorate runs`): no queue, no writer thread.
pub struct Reader {
    pool: AnyPool,
}

impl Reader {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pool: db::open(url).await?,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Run>, StoreError> {
        db::get(&self.pool, id).await
    }

    pub async fn list(&self, filter: &Filter) -> Result<Page, StoreError> {
        db::list(&self.pool, filter).await
    }

    /// Totals per day, model and kind over `[since_ms, until_ms)`, and failures per reason.
    pub async fn usage(&self, since_ms: i64, until_ms: i64) -> Result<Usage, StoreError> {
        db::usage(&self.pool, since_ms, until_ms).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The store the gateway writes: records queued and written off the request path, and read
/// back through `reader`.
pub struct Store {
    reader: Reader,
    queue: mpsc::Sender<Queued>,
    capacity: usize,
    content: bool,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    /// Resolves when the writer's thread has finished.
    writer: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Store {
    /// Connects, migrates the schema and starts the writer.
    pub async fn open(options: &Options) -> Result<Self, StoreError> {
        let reader = Reader::open(&options.url).await?;
        let (queue, runs) = mpsc::channel(options.queue.max(1));
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let writer = writer::Writer {
            runs,
            counters: counters.clone(),
            retention: options
                .retention_days
                .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
            stop: stopped,
        };
        let written = writer::spawn(options.url.clone(), writer).await?;
        Ok(Self {
            reader,
            queue,
            capacity: options.queue.max(1),
            content: options.content,
            counters,
            stop,
            writer: Mutex::new(Some(written)),
        })
    }

    /// Queues `run` for writing, never waiting: with the queue full it is dropped and counted.
    pub fn record(&self, run: Run) {
        self.record_with_request(run, None);
    }

    /// `record`, with the request's body as the client sent it: parsed into the record's
    /// `request` on the writer's thread, not on the request's.
    pub fn record_with_request(&self, run: Run, request: Option<Bytes>) {
        let queued = if self.content {
            Queued { run, request }
        } else {
            Queued {
                run: run.without_content(),
                request: None,
            }
        };
        if self.queue.try_send(queued).is_err() {
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first drop and then one line per thousand: a dead database must not flood
            // the log too.
            if dropped % 1000 == 1 {
                tracing::warn!(dropped, "run store queue full; records dropped");
            }
        }
    }

    /// What is written, read back.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Whether prompt and answer text are kept (`[store] content`).
    pub fn keeps_content(&self) -> bool {
        self.content
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// Writes what is queued and stops the writer, waiting at most `grace`.
    pub async fn close(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let Some(writer) = self.writer.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(grace, writer).await.is_err() {
            tracing::warn!(
                queued = self.queued(),
                "run store: the queue was not written within the shutdown grace"
            );
        }
        self.reader.close().await;
    }
}
