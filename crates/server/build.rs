//! Embeds the web UI: every file under `ui/` (and `ui/vendor/`) becomes an entry of a table the
//! server answers `/ui/<path>` from, so the binary serves the UI with no files beside it.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    for folder in ["", "vendor"] {
        let dir = root.join(folder);
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let served = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                files.push((served, path));
            }
        }
    }
    files.sort();
    let mut table = String::from("&[\n");
    for (served, path) in &files {
        let _ = writeln!(
            table,
            "    ({served:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    table.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("ui_assets.rs");
    if let Err(e) = std::fs::write(&out, table) {
        panic!("cannot write {}: {e}", out.display());
    }
}
