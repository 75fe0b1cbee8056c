//! `quorate index add` / `search`: the local search index, through the binary.

#![allow(clippy::unwrap_used)]

use std::process::Output;

fn quorate(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .env_remove("QUORATE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn indexes_a_folder_and_finds_the_right_document() {
    let root = std::env::temp_dir().join(format!("quorate-cli-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let docs = root.join("docs");
    std::fs::create_dir_all(docs.join("nested")).unwrap();
    std::fs::write(
        docs.join("tides.md"),
        "# Tides\n\nThe Moon's gravity raises two tidal bulges.",
    )
    .unwrap();
    std::fs::write(
        docs.join("nested/volcano.txt"),
        "Stromboli has erupted almost continuously for 2,000 years.",
    )
    .unwrap();
    let index = root.join("index");
    let index = index.to_str().unwrap();

    let out = quorate(&["index", "--index", index, "add", docs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("indexed 2 files (0 skipped)"));

    let out = quorate(&["index", "--index", index, "search", "erupted continuously"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("1. volcano.txt — file://") && first.contains("/nested/volcano.txt"),
        "{stdout}"
    );
    assert!(stdout.contains("Stromboli"));
    assert!(!stdout.contains("tides.md"), "{stdout}");

    let out = quorate(&["index", "--index", index, "search", "xylophone"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no match"));
    std::fs::remove_dir_all(&root).unwrap();
}
