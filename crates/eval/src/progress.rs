//! Progress on stderr while a run works: done / total, failures, rate and time left.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines are printed at most this often (and at the end).
const EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    what: &'static str,
    total: usize,
    started: Instant,
    state: Mutex<State>,
}

struct State {
    done: usize,
    failed: usize,
    printed: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        if total > 0 {
            eprintln!("{what}: {total} to do");
        }
        Self {
            what,
            total,
            started: Instant::now(),
            state: Mutex::new(State {
                done: 0,
                failed: 0,
                printed: Instant::now(),
            }),
        }
    }

    pub fn step(&self, failed: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.done += 1;
        state.failed += usize::from(failed);
        if state.printed.elapsed() >= EVERY || state.done == self.total {
            state.printed = Instant::now();
            eprintln!("{}", self.line(state.done, state.failed));
        }
    }

    pub fn finish(&self) {
        if let Ok(state) = self.state.lock() {
            if self.total > 0 && state.done < self.total {
                eprintln!("{}", self.line(state.done, state.failed));
            }
        }
    }

    fn line(&self, done: usize, failed: usize) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / elapsed.max(0.001);
        let left = (self.total - done) as f64 / rate.max(1e-9);
        let failed = if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        };
        format!(
            "  {} {done}/{}{failed} · {:.2}/s · elapsed {} · ETA {}",
            self.what,
            self.total,
            rate,
            clock(elapsed),
            if done == self.total {
                "done".into()
            } else {
                clock(left)
            }
        )
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
