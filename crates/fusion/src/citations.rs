//! Citations in a final answer: `[n]` markers into the numbered source list, markdown links and
//! bare URLs. Each one that points at a URL some member retrieved becomes an OpenRouter-style
//! `url_citation` annotation; each one that does not is reported (DRACO's rubric costs -150 per
//! hallucinated citation), and in strict mode removed from the text.

use std::collections::HashSet;

use quorate_api::{ChatCompletion, Content};
use quorate_tools::Source;
use serde::Serialize;
use serde_json::{json, Value};

/// A source as the synthesizer sees it: cited as `[n]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Numbered {
    pub n: usize,
    pub url: String,
    pub title: String,
}

/// The distinct sources in order of first retrieval, numbered from 1.
pub fn number(sources: &[Source]) -> Vec<Numbered> {
    let mut seen = HashSet::new();
    sources
        .iter()
        .filter(|s| seen.insert(normalize(&s.url)))
        .enumerate()
        .map(|(i, s)| Numbered {
            n: i + 1,
            url: s.url.clone(),
            title: s.title.clone(),
        })
        .collect()
}

/// What checking an answer's citations gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cited {
    /// The answer; without its unverified citations in strict mode.
    pub text: String,
    pub annotations: Vec<Value>,
    /// Cited URLs (and `[n]` markers) that no member retrieved.
    pub unverified: Vec<String>,
}

enum Citation<'a> {
    Marker(usize),
    Link { text: &'a str, url: &'a str },
    Bare(&'a str),
}

/// Checks `text`'s citations against the numbered list and the retrieved URLs.
pub fn check(text: &str, numbered: &[Numbered], sources: &[Source], strict: bool) -> Cited {
    let retrieved: HashSet<String> = sources.iter().map(|s| normalize(&s.url)).collect();
    let title_of = |url: &str| {
        sources
            .iter()
            .find(|s| normalize(&s.url) == normalize(url))
            .map(|s| s.title.clone())
            .unwrap_or_default()
    };
    let mut out = Cited::default();
    let mut rest = text;
    while let Some((before, citation, len)) = next_citation(rest) {
        out.text.push_str(before);
        let raw = &rest[before.len()..before.len() + len];
        rest = &rest[before.len() + len..];
        let target = match citation {
            Citation::Marker(n) => numbered
                .get(n.wrapping_sub(1))
                .map(|s| (s.url.clone(), s.title.clone())),
            Citation::Link { url, .. } | Citation::Bare(url) => retrieved
                .contains(&normalize(url))
                .then(|| (url.to_string(), title_of(url))),
        };
        let Some((url, title)) = target else {
            if !out
                .unverified
                .iter()
                .any(|u| u == raw_target(&citation, raw))
            {
                out.unverified.push(raw_target(&citation, raw).to_string());
            }
            if !strict {
                out.text.push_str(raw);
            } else if let Citation::Link { text, .. } = citation {
                out.text.push_str(text);
            }
            continue;
        };
        let start = out.text.chars().count();
        out.text.push_str(raw);
        out.annotations
            .push(json!({"type": "url_citation", "url_citation": {
            "url": url, "title": title, "start_index": start,
            "end_index": start + raw.chars().count()}}));
    }
    out.text.push_str(rest);
    out
}

/// Checks a whole answer's citations in place: annotations on its message, the text cleaned in
/// strict mode. Returns the unverified citations.
pub fn check_completion(
    completion: &mut ChatCompletion,
    numbered: &[Numbered],
    sources: &[Source],
    strict: bool,
) -> Vec<String> {
    let Some(choice) = completion.choices.first_mut() else {
        return Vec::new();
    };
    let text = choice.message.text();
    let cited = check(&text, numbered, sources, strict);
    if strict && cited.text != text {
        choice.message.content = Some(Content::Text(cited.text));
    }
    if !cited.annotations.is_empty() {
        choice
            .message
            .extra
            .insert("annotations".into(), Value::Array(cited.annotations));
    }
    cited.unverified
}

fn raw_target<'a>(citation: &Citation<'a>, raw: &'a str) -> &'a str {
    match citation {
        Citation::Marker(_) => raw,
        Citation::Link { url, .. } | Citation::Bare(url) => url,
    }
}

/// The next citation in `text`: the text before it, the citation, and its length in bytes.
fn next_citation(text: &str) -> Option<(&str, Citation<'_>, usize)> {
    let mut from = 0;
    while from < text.len() {
        let at = from + text[from..].find(['[', 'h'])?;
        let tail = &text[at..];
        if let Some((citation, len)) = marker(tail).or_else(|| link(tail)).or_else(|| bare(tail)) {
            return Some((&text[..at], citation, len));
        }
        from = at + 1;
    }
    None
}

/// `[12]`
fn marker(tail: &str) -> Option<(Citation<'_>, usize)> {
    let inner = tail.strip_prefix('[')?;
    let end = inner.find(']')?;
    let digits = &inner[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Citation::Marker(digits.parse().ok()?), end + 2))
}

/// `[text](https://...)`
fn link(tail: &str) -> Option<(Citation<'_>, usize)> {
    let inner = tail.strip_prefix('[')?;
    let close = inner.find("](")?;
    let text = &inner[..close];
    if text.contains(['\n', '[']) {
        return None;
    }
    let after = &inner[close + 2..];
    let end = after.find(')')?;
    let url = &after[..end];
    if !is_url(url) || url.contains(char::is_whitespace) {
        return None;
    }
    Some((Citation::Link { text, url }, 1 + close + 2 + end + 1))
}

/// A bare `http(s)://` URL, without trailing punctuation.
fn bare(tail: &str) -> Option<(Citation<'_>, usize)> {
    if !is_url(tail) {
        return None;
    }
    let end = tail
        .find(|c: char| c.is_whitespace() || "<>\"'()[]`".contains(c))
        .unwrap_or(tail.len());
    let url = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
    (url.len() > "https://".len()).then_some((Citation::Bare(url), url.len()))
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// URLs compare without fragment, trailing slash or case.
fn normalize(url: &str) -> String {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or(url);
    url.trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, title: &str) -> Source {
        Source {
            url: url.into(),
            title: title.into(),
            via: "web_fetch",
        }
    }

    #[test]
    fn retrieved_citations_are_annotated_and_others_reported() {
        let sources = [
            source("https://tides.example/moon", "Tides"),
            source("https://sea.example/", "Sea"),
            source("https://tides.example/moon#top", "Tides again"),
        ];
        let numbered = number(&sources);
        assert_eq!(numbered.len(), 2, "duplicates share a number");
        let text =
            "The Moon pulls [1]. See [the sea](https://sea.example) and https://made.up/page. \
                    Also [7] and https://tides.example/moon.";
        let cited = check(text, &numbered, &sources, false);
        assert_eq!(cited.text, text);
        assert_eq!(cited.unverified, ["https://made.up/page", "[7]"]);
        assert_eq!(cited.annotations.len(), 3);
        let first = &cited.annotations[0]["url_citation"];
        assert_eq!(first["url"], "https://tides.example/moon");
        let (start, end) = (
            first["start_index"].as_u64().unwrap() as usize,
            first["end_index"].as_u64().unwrap() as usize,
        );
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[start..end].iter().collect::<String>(), "[1]");
        assert_eq!(cited.annotations[1]["url_citation"]["title"], "Sea");
        assert_eq!(
            cited.annotations[2]["url_citation"]["url"],
            "https://tides.example/moon"
        );
    }

    #[test]
    fn strict_mode_removes_what_nobody_retrieved() {
        let sources = [source("https://sea.example/", "Sea")];
        let numbered = number(&sources);
        let text =
            "Waves [1][4] — [a paper](https://fake.example/p) says so, per https://fake.example/q.";
        let cited = check(text, &numbered, &sources, true);
        assert_eq!(cited.text, "Waves [1] — a paper says so, per .");
        assert_eq!(cited.unverified.len(), 3);
        assert_eq!(cited.annotations.len(), 1);
        assert_eq!(cited.annotations[0]["url_citation"]["start_index"], 6);
    }

    #[test]
    fn text_without_citations_is_left_alone() {
        let text = "Plain [text] with [brackets](not a url) and ünïcode.";
        let cited = check(text, &[], &[], true);
        assert_eq!(
            cited,
            Cited {
                text: text.into(),
                ..Cited::default()
            }
        );
    }
}

/// Property tests (`PROPTEST_CASES=1000000 cargo test -p quorate-fusion properties` for the
/// million-case run).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn sources(n: usize) -> Vec<Source> {
        (0..n)
            .map(|i| Source {
                url: format!("https://s{i}.example/page"),
                title: format!("Source {i}"),
                via: "web_search",
            })
            .collect()
    }

    proptest! {
        /// Whatever the answer says (markers, links, brackets, any script), checking its
        /// citations keeps the text in report mode, and every annotation spans characters of it.
        #[test]
        fn checking_keeps_the_text_and_annotates_within_it(
            text in r"([a-zé中 .,:/()]|\[[0-9]{1,4}\]|\]\(|https://s[0-9]\.example/page|\[link\]\(https://[a-z]{1,8}\.example\)){0,40}",
            n in 0usize..4,
        ) {
            let sources = sources(n);
            let numbered = number(&sources);
            let cited = check(&text, &numbered, &sources, false);
            prop_assert_eq!(&cited.text, &text);
            let length = text.chars().count() as u64;
            for annotation in &cited.annotations {
                let span = &annotation["url_citation"];
                let (start, end) = (span["start_index"].as_u64(), span["end_index"].as_u64());
                prop_assert!(matches!((start, end), (Some(s), Some(e)) if s < e && e <= length),
                    "{annotation} in {text:?}");
            }
            // Strict mode only removes: its text is never longer.
            let strict = check(&text, &numbered, &sources, true);
            prop_assert!(strict.text.chars().count() <= text.chars().count());
            prop_assert!(strict.unverified.iter().all(|u| cited.unverified.contains(u)));
        }
    }
}
