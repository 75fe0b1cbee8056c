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
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
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

/// The simulator answering `scripts`, and a gateway in front of it whose default fusion preset
/// has `panel` (see [`sim_config`]); each a process of its own, killed on drop, as are the files
/// they read.
pub struct SimStack {
    pub sim: tokio::process::Child,
    pub sim_url: String,
    pub gateway: tokio::process::Child,
    pub gateway_url: String,
    _files: TempFiles,
}

/// Files removed when dropped, whether the stack started or not.
struct TempFiles([PathBuf; 2]);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl SimStack {
    pub async fn start(
        name: &str,
        scripts: &serde_json::Value,
        panel: &[&str],
        sim_bin: &Option<PathBuf>,
        gateway_bin: &Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let files = TempFiles(["json", "toml"].map(|ext| {
            std::env::temp_dir().join(format!("quorate-bench-{name}-{}.{ext}", std::process::id()))
        }));
        let [scripts_file, config_file] = &files.0;
        std::fs::write(scripts_file, scripts.to_string())?;
        let scripts_arg = scripts_file.to_string_lossy().into_owned();
        let (sim, sim_url) = spawn_listening(
            &sibling(sim_bin, "quorate-sim")?,
            &["--listen", "127.0.0.1:0", "--scripts", &scripts_arg],
        )
        .await?;
        std::fs::write(
            config_file,
            sim_config(sim_url.trim_start_matches("http://"), panel),
        )?;
        let config_arg = config_file.to_string_lossy().into_owned();
        let (gateway, gateway_url) = spawn_listening(
            &sibling(gateway_bin, "quorate")?,
            &["serve", "--listen", "127.0.0.1:0", "--config", &config_arg],
        )
        .await?;
        Ok(Self {
            sim,
            sim_url,
            gateway,
            gateway_url,
            _files: files,
        })
    }
}

/// A gateway config with the simulator at `sim` as provider `sim` (no retries) and a default
/// fusion preset `bench` over `panel` (model ids on the sim), judged by `sim/judge` and written
/// by `sim/synth`.
pub fn sim_config(sim: &str, panel: &[&str]) -> String {
    let panel: Vec<String> = panel.iter().map(|m| format!("\"sim/{m}\"")).collect();
    format!(
        r#"
[providers.sim]
kind = "openai"
base_url = "http://{sim}/v1"
max_retries = 0

[fusion]
default_preset = "bench"

[presets.bench]
panel = [{}]
judge = "sim/judge"
synthesizer = "sim/synth"
member_timeout_s = 30
total_timeout_s = 60
"#,
        panel.join(", ")
    )
}

/// The judge's script: a valid analysis after `ttft_ms`.
pub fn judge_script(ttft_ms: u64) -> serde_json::Value {
    serde_json::json!({"ttft_ms": ttft_ms, "json": {"consensus": ["x"], "contradictions": [],
        "partial_coverage": [], "unique_insights": [], "blind_spots": []}})
}

/// The `q` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
