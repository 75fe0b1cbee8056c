//! The store on a real SQLite file: written off the caller's path, read back by id and in
//! filtered pages, text dropped when content is off, records past a full queue dropped and
//! counted, a steady trickle gathered into few transactions.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use quorate_store::{Cursor, Detail, Filter, Options, Reader, Run, Store, Summary};
use serde_json::json;

fn options(name: &str, content: bool, queue: usize) -> (Options, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("quorate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("nested/runs.db");
    let options = Options {
        url: format!("sqlite://{}", file.display()),
        content,
        retention_days: None,
        queue,
    };
    (options, dir)
}

fn run(i: i64, model: &str, status: u16) -> Run {
    Run {
        summary: Summary {
            id: format!("gen-{i}"),
            created_ms: 1_000 + i / 2,
            caller: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
            surface: "chat".into(),
            model: model.into(),
            answered_by: Some(model.into()),
            status,
            latency_ms: 10 + i as u64,
            prompt_tokens: 3,
            completion_tokens: 4,
            cost_usd: Some(0.25),
            ..Summary::default()
        },
        detail: Detail {
            answer: Some(format!("the answer number {i}")),
            request: Some(json!({"messages": [{"role": "user", "content": "the question"}]})),
            ..Detail::default()
        },
    }
}

#[tokio::test]
async fn a_trickle_is_written_in_few_batches_with_the_request_parsed_by_the_writer() {
    let (options, dir) = options("trickle", true, 100);
    let store = Store::open(&options).await.unwrap();
    let body = r#"{"model": "m/a", "messages": [{"role": "user", "content": "the question"}]}"#;
    // One record a millisecond, as a gateway at 1,000 requests a second makes them.
    for i in 0..30 {
        let mut record = run(i, "m/a", 200);
        record.detail.request = None;
        store.record_with_request(record, Some(body.as_bytes().to_vec().into()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let counters = store.counters();
    let written = || counters.written.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..200 {
        if written() == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(written(), 30);
    // Written as they came, each record would be a transaction of its own.
    let batches = counters.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches <= 5, "30 records in {batches} transactions");
    let kept = store.reader().get("gen-3").await.unwrap().unwrap();
    assert_eq!(
        kept.detail.request,
        Some(serde_json::from_str::<serde_json::Value>(body).unwrap())
    );
    store.close(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn runs_are_written_and_read_back_by_id_and_in_pages() {
    let (options, dir) = options("pages", true, 100);
    let store = Store::open(&options).await.unwrap();
    for i in 0..25 {
        store.record(run(
            i,
            if i < 20 { "m/a" } else { "m/b" },
            if i == 7 { 502 } else { 200 },
        ));
    }
    store.close(Duration::from_secs(10)).await;
    assert_eq!(
        store
            .counters()
            .written
            .load(std::sync::atomic::Ordering::Relaxed),
        25
    );
    // Reopened for reading (as `quorate runs` does): the schema is there already and the rows too.
    let store = Reader::open(&options.url).await.unwrap();
    let got = store.get("gen-7").await.unwrap().unwrap();
    assert_eq!(got, run(7, "m/a", 502));
    assert_eq!(store.get("gen-99").await.unwrap(), None);
    // Newest first, 10 a page, ties on time broken by id; the pages cover every row once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&Filter {
                limit: 10,
                cursor: cursor.as_deref().and_then(Cursor::decode),
                ..Filter::default()
            })
            .await
            .unwrap();
        seen.extend(page.data.iter().map(|r| r.id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut expected: Vec<String> = (0..25).rev().map(|i| format!("gen-{i}")).collect();
    expected.sort_by_key(|id| {
        let i: i64 = id[4..].parse().unwrap();
        (
            std::cmp::Reverse(1_000 + i / 2),
            std::cmp::Reverse(id.clone()),
        )
    });
    assert_eq!(seen, expected);
    let filtered = store
        .list(&Filter {
            model: Some("m/a".into()),
            caller: Some("bob".into()),
            status: Some(200),
            since_ms: Some(1_002),
            until_ms: Some(1_009),
            limit: 50,
            ..Filter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = filtered.data.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["gen-17", "gen-15", "gen-13", "gen-11", "gen-9", "gen-5"]
    );
    assert_eq!(filtered.next_cursor, None);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn content_off_keeps_no_text_in_the_file() {
    let (options, dir) = options("content", false, 100);
    let store = Store::open(&options).await.unwrap();
    store.record(run(1, "m/a", 200));
    store.close(Duration::from_secs(10)).await;
    let store = Store::open(&options).await.unwrap();
    let got = store.reader().get("gen-1").await.unwrap().unwrap();
    assert_eq!(
        (got.summary.completion_tokens, got.detail.answer),
        (4, None)
    );
    store.close(Duration::from_secs(5)).await;
    for entry in std::fs::read_dir(dir.join("nested")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("the answer number") && !text.contains("the question"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another connection holds the file's write lock, so the writer (on its own thread) is stuck
/// on its first batch while fifty records arrive: recording never waits, the queue of 2 keeps
/// what it can, the rest is dropped and counted, and what was kept is written once the lock goes.
#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    use sqlx::Connection;
    let (options, dir) = options("full", true, 2);
    let store = Store::open(&options).await.unwrap();
    let mut lock = sqlx::SqliteConnection::connect(&options.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..50 {
        store.record(run(i, "m/a", 200));
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    let counters = store.counters();
    let dropped = counters.dropped.load(std::sync::atomic::Ordering::Relaxed);
    // At most the queue and the few records the writer took before it reached the lock.
    assert!((40..=48).contains(&dropped), "{dropped} dropped");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    store.close(Duration::from_secs(10)).await;
    let written = counters.written.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written + dropped, 50, "{written} written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The writer has a connection of its own, so an in-memory database (one per connection) would
/// keep the records where no reader sees them: refused, with the way out.
#[tokio::test]
async fn an_in_memory_database_is_refused_with_a_reason() {
    let (mut options, _dir) = options("memory", true, 100);
    options.url = "sqlite::memory:".into();
    let error = Store::open(&options).await.err().unwrap().to_string();
    assert!(
        error.contains("in-memory") && error.contains("sqlite://PATH"),
        "{error}"
    );
}
