//! `[store]`: where every request and fusion run is kept.

use serde::Deserialize;

/// Records past this many waiting to be written are dropped (and counted).
const QUEUE: usize = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "crate::defaults::yes")]
    pub enabled: bool,
    /// `sqlite://PATH` or `postgres://...`; default: SQLite at `<data dir>/quorate.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// Keep prompt and answer text; `false` keeps only the figures.
    #[serde(default = "crate::defaults::yes")]
    pub content: bool,
    /// Rows older than this many days are pruned; none: kept forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Records waiting to be written, at most.
    #[serde(default = "queue")]
    pub queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            content: true,
            retention_days: None,
            queue: QUEUE,
        }
    }
}

impl StoreConfig {
    /// The database URL, the default one filled in.
    pub fn url(&self) -> String {
        self.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                crate::data_dir().join("quorate.db").display()
            )
        })
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(url) = &self.url {
            if !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err((
                    "url".into(),
                    "want sqlite://PATH or postgres://USER@HOST/DB".into(),
                ));
            }
        }
        if self.queue == 0 {
            return Err(("queue".into(), "must be at least 1".into()));
        }
        if self.retention_days == Some(0) {
            return Err((
                "retention_days".into(),
                "must be at least 1 (leave it out to keep every row)".into(),
            ));
        }
        Ok(())
    }
}

fn queue() -> usize {
    QUEUE
}
