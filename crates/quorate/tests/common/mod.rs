//! Test harness: the real `quorate serve` binary on a random port, in front of an in-process
//! `quorate-sim`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

pub mod postgres;

use quorate_sim::{Script, Sim};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Gateway {
    pub child: Child,
    pub base: String,
    pub stderr: tokio::task::JoinHandle<String>,
    /// The gateway's own run store (SQLite), unless the test's env names another.
    pub store: std::path::PathBuf,
    _config: tempfile_path::TempPath,
    _store: tempfile_path::TempPath,
}

mod tempfile_path {
    /// A file removed when dropped, with SQLite's `-wal` and `-shm` beside it.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            for suffix in ["-wal", "-shm"] {
                let mut side = self.0.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(side);
            }
        }
    }
}

pub async fn sim(scripts: &[(&str, Value)]) -> (Sim, SocketAddr) {
    let scripts: HashMap<String, Script> = scripts
        .iter()
        .map(|(name, v)| (name.to_string(), serde_json::from_value(v.clone()).unwrap()))
        .collect();
    let sim = Sim::new(scripts);
    let addr = sim.spawn("127.0.0.1:0").await.unwrap();
    (sim, addr)
}

/// A config with an OpenAI-kind provider `sim` and an Anthropic-kind `simant` on the simulator,
/// fast retries, and models `sim/a`, `sim/b`, `simant/c`; `extra` is appended.
pub fn config(sim: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
keepalive_s = 0.3
shutdown_grace_s = 10

[providers.sim]
kind = "openai"
base_url = "http://{sim}/v1"
timeout_s = 2
max_retries = 2
backoff_ms = 10
max_retry_after_s = 5

[providers.simant]
kind = "anthropic"
base_url = "http://{sim}/v1"
api_key_env = "SIM_ANTHROPIC_KEY"
timeout_s = 2
max_retries = 0

[models."sim/a"]
provider = "sim"
upstream = "a"
input_usd_per_mtok = 1
output_usd_per_mtok = 2
context_length = 4096

[models."sim/b"]
provider = "sim"
upstream = "b"

[models."simant/c"]
provider = "simant"
upstream = "c"
input_usd_per_mtok = "3"
output_usd_per_mtok = "15"
{extra}
"#
    )
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub async fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("quorate-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let store = std::env::temp_dir().join(format!("quorate-test-{}-{n}.db", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_quorate"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("QUORATE_CONFIG")
        .env_remove("QUORATE_LISTEN")
        // The binary's own OpenMP settings, whatever the shell running the tests has.
        .env_remove("OMP_WAIT_POLICY")
        .env_remove("GOMP_SPINCOUNT")
        .env("QUORATE_STORE_URL", format!("sqlite://{}", store.display()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("gateway did not start in time")
        .unwrap()
        .expect("gateway exited before listening");
    let base = line
        .trim()
        .strip_prefix("quorate listening on ")
        .unwrap()
        .to_string();
    Gateway {
        child,
        base,
        stderr,
        store: store.clone(),
        _config: tempfile_path::TempPath(path),
        _store: tempfile_path::TempPath(store),
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/v1/chat/completions"))
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Reads an SSE body whole; returns its data payloads (comments dropped) and the raw text.
pub async fn sse(response: reqwest::Response) -> (Vec<String>, String) {
    let raw = response.text().await.unwrap();
    let data = raw
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    (data, raw)
}

/// The text of a stream's content deltas.
pub fn content(data: &[String]) -> String {
    data.iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Polls until `check` holds or two seconds pass.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
