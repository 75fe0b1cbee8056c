//! Results as JSONL files under `--out`, one record per line, appended as each one is done: a
//! rerun reads them back and skips what is there, so an interrupted run resumes where it stopped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::progress::Progress;

/// The records in `path` (none if it does not exist). A line cut short by an interruption is
/// skipped: that record is simply done again.
pub fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// Appends records to a JSONL file, one whole line per write.
pub struct Appender {
    file: Mutex<File>,
}

impl Appender {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // A torn last line must not swallow the next record.
        if file.seek(SeekFrom::End(0))? > 0 {
            file.seek(SeekFrom::End(-1))?;
            let mut last = [0u8];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    pub fn append(&self, record: &impl Serialize) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| anyhow::anyhow!("result file lock poisoned"))?;
        file.write_all(&line)?;
        file.flush()?;
        Ok(())
    }
}

/// Guards a resumed run against mixing results: `run.json` in `out` records the settings every
/// result depends on and each system's spec. A rerun with other settings, or with a system name
/// that meant another spec, is refused; new systems are added.
pub fn check_manifest(
    out: &Path,
    settings: &serde_json::Value,
    systems: &[(String, String)],
) -> anyhow::Result<()> {
    let path = out.join("run.json");
    let mut known = serde_json::Map::new();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run manifest", path.display()))?;
        if &old["settings"] != settings {
            anyhow::bail!(
                "{} holds results made with other settings ({}), not ({settings}); use another --out",
                out.display(),
                old["settings"]
            );
        }
        known = old["systems"].as_object().cloned().unwrap_or_default();
    }
    for (name, spec) in systems {
        match known.get(name).and_then(serde_json::Value::as_str) {
            Some(old) if old != spec => anyhow::bail!(
                "{}: system {name} was {old:?} there, not {spec:?}; rename it or use another --out",
                out.display()
            ),
            _ => {
                known.insert(name.clone(), serde_json::Value::from(spec.clone()));
            }
        }
    }
    let manifest = serde_json::json!({"settings": settings, "systems": known});
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)?;
    Ok(())
}

/// Runs `jobs`, at most `concurrency` at a time, appending each record to `path` as soon as it is
/// made and counting it in a progress line (`failed` says which count as failures).
pub async fn record_all<R, F>(
    what: &'static str,
    path: &Path,
    jobs: Vec<F>,
    concurrency: usize,
    failed: impl Fn(&R) -> bool,
) -> anyhow::Result<()>
where
    R: Serialize,
    F: std::future::Future<Output = R>,
{
    let log = Appender::open(path)?;
    let progress = Progress::new(what, jobs.len());
    let mut running = futures::stream::iter(jobs).buffer_unordered(concurrency.max(1));
    while let Some(record) = running.next().await {
        log.append(&record)?;
        progress.step(failed(&record));
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn a_rerun_must_keep_settings_and_specs() {
        let out = std::env::temp_dir().join(format!("quorate-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let systems = |spec: &str| vec![("s".to_string(), spec.to_string())];
        let settings = json!({"temperature": 0.4});
        check_manifest(&out, &settings, &systems("m/a")).unwrap();
        check_manifest(&out, &settings, &systems("m/a")).unwrap();
        let more = vec![("t".to_string(), "m/b".to_string())];
        check_manifest(&out, &settings, &more).unwrap();
        let e = check_manifest(&out, &settings, &systems("m/c")).unwrap_err();
        assert!(e.to_string().contains("system s was \"m/a\""), "{e}");
        let e = check_manifest(&out, &json!({"temperature": 1.0}), &more).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_torn_line_is_skipped_and_appending_resumes_on_a_new_line() {
        let path = std::env::temp_dir().join(format!("quorate-store-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"a\": 1}\n{\"a\": 2").unwrap();
        assert_eq!(load::<Value>(&path).unwrap(), [json!({"a": 1})]);
        Appender::open(&path)
            .unwrap()
            .append(&json!({"a": 3}))
            .unwrap();
        assert_eq!(
            load::<Value>(&path).unwrap(),
            [json!({"a": 1}), json!({"a": 3})]
        );
        let _ = std::fs::remove_file(&path);
    }
}
