//! A throwaway PostgreSQL server from Debian's `postgresql` package: `initdb` and `pg_ctl` in a
//! temporary folder, on a free port, as an unprivileged user (PostgreSQL refuses to run as root,
//! and CI runs as root). Stopped and removed on drop.
//!
//! Where it cannot start, `start` says why and a test skips, unless `QUORATE_REQUIRE_POSTGRES`
//! is set (as `scripts/test` does): then it fails, so CI never skips these tests silently.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<String>,
    pub port: u16,
}

/// The server, or `None` (with the reason printed) when the test should skip.
pub fn start() -> Option<Postgres> {
    match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(why) if std::env::var_os("QUORATE_REQUIRE_POSTGRES").is_some() => {
            panic!("PostgreSQL is required (QUORATE_REQUIRE_POSTGRES) but did not start: {why}")
        }
        Err(why) => {
            eprintln!("skipped: no PostgreSQL for this test: {why} (scripts/setup installs it)");
            None
        }
    }
}

impl Postgres {
    fn start() -> Result<Self, String> {
        let bin = bin_dir().ok_or("no initdb/pg_ctl on PATH or under /usr/lib/postgresql")?;
        let n = super::COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("quorate-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let user = running_as_root().then(unprivileged_user).flatten();
        if running_as_root() && user.is_none() {
            return Err("running as root and no `postgres` or `nobody` user to run as".into());
        }
        if let Some(user) = &user {
            chown(&dir, user)?;
        }
        let pg = Self {
            dir,
            bin,
            user,
            port: free_port()?,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data(),
                "-U",
                "quorate",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        pg.ctl_start()?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://quorate@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (in-flight connections are cut, as a crash would).
    pub fn stop(&self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        if let Err(e) = self.ctl_start() {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    fn ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )
    }

    fn data(&self) -> &str {
        // `initdb` creates the folder; it must not exist yet, or it must be empty.
        self.dir.to_str().map_or("", |d| d)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = command
            .args(args)
            .current_dir(std::env::temp_dir())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            ))
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` are: on PATH, else Debian's versioned folder (the package does
/// not put them on PATH).
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn unprivileged_user() -> Option<String> {
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| {
            Command::new("id")
                .arg(u)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

fn chown(dir: &Path, user: &str) -> Result<(), String> {
    let ok = Command::new("chown")
        .arg(user)
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
        .ok_or_else(|| format!("cannot chown {} to {user}", dir.display()))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
