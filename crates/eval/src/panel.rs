//! `--reuse-panel`: panel answers kept in `panel.jsonl` under the run's folder, so every
//! strategy (and the solo answer, which is the first member's) is applied to the same answers
//! and the panel is paid for once. Systems asking for the same member at once wait for one
//! answer instead of each generating it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quorate_fusion::{KeptAnswer, PanelCache};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::store::{self, Appender};

/// A replayed member waits this fraction of its first latency, so members still finish in the
/// order they first did (what `auto`'s early exit depends on) without the wait.
const REPLAY_SLOWDOWN: u64 = 50;

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    answer: KeptAnswer,
}

type Slot = Arc<OnceCell<KeptAnswer>>;

pub struct PanelStore {
    kept: Mutex<HashMap<String, Slot>>,
    file: Appender,
}

impl PanelStore {
    /// The answers already kept in `folder/panel.jsonl`; new ones are appended to it.
    pub fn open(folder: &Path) -> anyhow::Result<Self> {
        let path = folder.join("panel.jsonl");
        let kept = store::load::<Line>(&path)?
            .into_iter()
            .map(|line| (line.key, Arc::new(OnceCell::new_with(Some(line.answer)))))
            .collect();
        Ok(Self {
            kept: Mutex::new(kept),
            file: Appender::open(&path)?,
        })
    }

    pub fn len(&self) -> usize {
        self.kept
            .lock()
            .map(|k| k.values().filter(|s| s.initialized()).count())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &str) -> Slot {
        match self.kept.lock() {
            Ok(mut kept) => kept.entry(key.to_string()).or_default().clone(),
            // A panic elsewhere poisoned the map: answer without keeping.
            Err(_) => Arc::new(OnceCell::new()),
        }
    }
}

impl PanelCache for PanelStore {
    fn answer<'a>(
        &'a self,
        key: String,
        fresh: BoxFuture<'a, Option<KeptAnswer>>,
    ) -> BoxFuture<'a, Option<KeptAnswer>> {
        Box::pin(async move {
            let slot = self.slot(&key);
            if let Some(kept) = slot.get() {
                tokio::time::sleep(Duration::from_millis(kept.latency_ms / REPLAY_SLOWDOWN)).await;
                return Some(kept.clone());
            }
            let mut made = false;
            // A failed answer leaves the slot empty: a waiting system then answers itself.
            let answer = slot
                .get_or_try_init(|| async {
                    made = true;
                    fresh.await.ok_or(())
                })
                .await
                .ok()?
                .clone();
            if made {
                if let Err(e) = self.file.append(&Line {
                    key,
                    answer: answer.clone(),
                }) {
                    tracing::warn!(error = %e, "a panel answer could not be kept");
                }
            }
            Some(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::Usage;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(text: &str) -> KeptAnswer {
        KeptAnswer {
            content: text.into(),
            usage: Usage::default(),
            latency_ms: 100,
        }
    }

    #[tokio::test]
    async fn an_answer_is_made_once_kept_on_disk_and_failures_are_not_kept() {
        let dir = std::env::temp_dir().join(format!("quorate-panel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let calls = AtomicUsize::new(0);
        let fresh = |text: Option<&'static str>| {
            let calls = &calls;
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                text.map(answer)
            }) as BoxFuture<'_, Option<KeptAnswer>>
        };
        let store = PanelStore::open(&dir).unwrap();
        // Two systems ask at once: one answer is made, both get it.
        let (a, b) = tokio::join!(
            store.answer("k".into(), fresh(Some("42"))),
            store.answer("k".into(), fresh(Some("other")))
        );
        assert_eq!(
            (a.unwrap().content, b.unwrap().content),
            ("42".into(), "42".into())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.answer("bad".into(), fresh(None)).await, None);
        assert_eq!(
            store
                .answer("bad".into(), fresh(Some("later")))
                .await
                .unwrap()
                .content,
            "later",
            "a failure is tried again"
        );
        drop(store);
        let reopened = PanelStore::open(&dir).unwrap();
        assert_eq!(reopened.len(), 2);
        let replay = reopened
            .answer("k".into(), fresh(Some("new")))
            .await
            .unwrap();
        assert_eq!(replay, answer("42"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the kept answer is not made again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
