//! Shared by the benchmark binaries: starting the server binaries they measure, percentiles.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `explicit`, else the binary `name` next to the running one.
pub fn sibling(explicit: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path.clone()),
        None => Ok(std::env::current_exe()?.with_file_name(name)),
    }
}

/// Starts a server binary and reads the URL from its first line ("... listening on http://ADDR").
pub async fn spawn_listening(
    bin: &Path,
    args: &[&str],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release)",
                bin.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default();
    let Some((_, url)) = line.trim().split_once(" listening on ") else {
        bail!("{} did not start: {line:?}", bin.display());
    };
    Ok((child, url.to_string()))
}

/// The `q` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
