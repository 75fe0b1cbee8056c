//! `quorate models pull`: fetch a GGUF model with a progress display on stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use quorate_local::pull::{self, Progress};

pub async fn run(name: &str) -> anyhow::Result<()> {
    let path = fetch(name).await?;
    println!("{}", path.display());
    Ok(())
}

/// Resolves a `gguf` setting to a file, fetching and verifying it if needed.
pub async fn fetch(gguf: &str) -> anyhow::Result<PathBuf> {
    let tty = std::io::stderr().is_terminal();
    let path = pull::resolve(gguf, &move |p| show(p, tty))
        .await
        .map_err(anyhow::Error::msg)?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(path)
}

fn show(progress: Progress, tty: bool) {
    let mut err = std::io::stderr().lock();
    let _ = match progress {
        Progress::Trying(source) => writeln!(err, "fetching the model from {source} …"),
        Progress::Verifying if tty => write!(err, "\r\x1b[2Kverifying SHA-256 …"),
        Progress::Bytes { done, total } if tty => {
            let mb = |b: u64| b as f64 / 1_048_576.0;
            match total {
                Some(t) if t > 0 => write!(
                    err,
                    "\r\x1b[2K{:.1} / {:.1} MiB ({:.0}%)",
                    mb(done),
                    mb(t),
                    100.0 * done as f64 / t as f64
                ),
                _ => write!(err, "\r\x1b[2K{:.1} MiB", mb(done)),
            }
        }
        _ => Ok(()),
    };
}
