//! A store dropped without `close` while its database refuses writes: the writer's thread must
//! not retry forever. Its own test binary, so no other test's writer thread is running.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use quorate_store::{Detail, Options, Run, Store, Summary};
use sqlx::Connection;

/// Threads of this process named as the writer's.
fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "quorate-store")
        .count()
}

#[tokio::test]
async fn a_dropped_store_stops_its_writer_while_the_database_is_locked() {
    let dir = std::env::temp_dir().join(format!("quorate-store-abandoned-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = Options {
        url: format!("sqlite://{}", dir.join("runs.db").display()),
        content: true,
        retention_days: None,
        queue: 10,
    };
    let store = Store::open(&options).await.unwrap();
    assert_eq!(writer_threads(), 1);
    let mut lock = sqlx::SqliteConnection::connect(&options.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    store.record(Run {
        summary: Summary {
            id: "gen-1".into(),
            ..Summary::default()
        },
        detail: Detail::default(),
    });
    drop(store);
    // The write under way fails when SQLite's busy wait ends (5 s); then the writer sees it was
    // abandoned and stops instead of backing off and retrying.
    let started = Instant::now();
    while writer_threads() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the writer is still retrying"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
