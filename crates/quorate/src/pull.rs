//! `quorate models pull`: fetch a GGUF model with a progress display on stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use quorate_local::pull::{self, Part, Progress};

pub async fn run(name: &str) -> anyhow::Result<()> {
    let path = fetch(name).await?;
    println!("{}", path.display());
    Ok(())
}

/// Resolves a `gguf` setting to a file, fetching and verifying it if needed.
pub async fn fetch(gguf: &str) -> anyhow::Result<PathBuf> {
    let tty = std::io::stderr().is_terminal();
    // The part last announced, so that a log (no terminal) gets one line per part.
    let announced = AtomicUsize::new(0);
    let path = pull::resolve(gguf, &|p| show(p, tty, &announced))
        .await
        .map_err(anyhow::Error::msg)?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(path)
}

fn show(progress: Progress, tty: bool, announced: &AtomicUsize) {
    let mut err = std::io::stderr().lock();
    let _ = match progress {
        Progress::Trying(source) => writeln!(err, "fetching the model from {source} …"),
        Progress::Verifying if tty => write!(err, "\r\x1b[2Kverifying SHA-256 …"),
        Progress::Bytes { done, total, part } if tty => {
            write!(err, "\r\x1b[2K{}", bytes_line(done, total, part))
        }
        Progress::Bytes {
            done,
            total,
            part: Some(part),
        } if announced.swap(part.number, Ordering::Relaxed) != part.number => {
            writeln!(err, "{}", bytes_line(done, total, Some(part)))
        }
        _ => Ok(()),
    };
}

/// "part 3/6, 178.0 / 468.6 MiB (38%)": how far the whole file is, across its parts.
fn bytes_line(done: u64, total: Option<u64>, part: Option<Part>) -> String {
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let amount = match total {
        Some(t) if t > 0 => format!(
            "{:.1} / {:.1} MiB ({:.0}%)",
            mb(done),
            mb(t),
            100.0 * done as f64 / t as f64
        ),
        _ => format!("{:.1} MiB", mb(done)),
    };
    match part {
        Some(p) => format!("part {}/{}, {amount}", p.number, p.of),
        None => amount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_part_and_the_whole_file() {
        let part = Some(Part { number: 3, of: 6 });
        assert_eq!(
            bytes_line(240 << 20, Some(480 << 20), part),
            "part 3/6, 240.0 / 480.0 MiB (50%)"
        );
        assert_eq!(bytes_line(1 << 20, None, None), "1.0 MiB");
    }
}
