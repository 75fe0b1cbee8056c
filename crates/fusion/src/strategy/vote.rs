//! `vote`: each member's final answer is read in a closed form (an option letter, a number, a
//! short entity) and the majority member's answer is returned as it was written. The panel stops
//! as soon as no later member could change the majority. A tie, or answers with no closed form,
//! are not decided here: the run goes on to the judge and the synthesis.

use std::collections::HashMap;

use serde::Serialize;

use super::Variant;
use crate::report::{FusionReport, MemberReport};

/// A closed form has at most this many words; longer answers are prose.
const MAX_WORDS: usize = 4;

/// Phrases after which an answer states its result; the last one in the text counts.
const MARKERS: &[&str] = &["final answer:", "answer:", "answer is", "####"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteOutcome {
    /// One final answer has more votes than any other: that member's answer was returned.
    Majority,
    /// No final answer has more than half the votes: the judge and the synthesis decided.
    Tie,
    /// Fewer than two answers had a closed form: the judge and the synthesis decided.
    NoClosedForm,
}

/// The `vote` object of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoteTally {
    /// Each slot's final answer, in slot order (`null`: no answer, or no closed form).
    pub ballots: Vec<Option<String>>,
    pub winner: Option<String>,
    /// Votes for the winner.
    pub votes: usize,
    pub outcome: VoteOutcome,
}

pub(crate) struct Vote;

impl Variant for Vote {
    /// Stops once one answer has a strict majority of the whole panel (no later member can
    /// change it) and members are still running.
    fn stop_early(&self, finished: &[&MemberReport], panel_size: usize) -> Option<String> {
        let counts = count(finished.iter().filter_map(|m| ballot(m)));
        let votes = counts.values().copied().max()?;
        let running = panel_size.saturating_sub(finished.len());
        (running > 0 && votes * 2 > panel_size).then(|| {
            format!("{votes} of {panel_size} members agree; the others cannot change the majority")
        })
    }

    fn answer(&self, report: &mut FusionReport) -> Option<String> {
        let ballots: Vec<Option<String>> = report.panel.iter().map(ballot).collect();
        let counts = count(ballots.iter().flatten().cloned());
        let votes = counts.values().copied().max().unwrap_or(0);
        let leaders: Vec<&String> = counts
            .iter()
            .filter(|(_, n)| **n == votes)
            .map(|(b, _)| b)
            .collect();
        let cast: usize = counts.values().sum();
        let (outcome, winner) = match leaders.as_slice() {
            _ if cast < 2 => (VoteOutcome::NoClosedForm, None),
            [one] if votes * 2 > cast => (VoteOutcome::Majority, Some((*one).clone())),
            _ => (VoteOutcome::Tie, None),
        };
        let text = winner.as_ref().and_then(|w| {
            let slot = ballots.iter().position(|b| b.as_ref() == Some(w))?;
            report.panel[slot].content.clone()
        });
        report.vote = Some(VoteTally {
            ballots,
            winner,
            votes,
            outcome,
        });
        text
    }
}

fn ballot(member: &MemberReport) -> Option<String> {
    final_answer(member.content.as_deref()?)
}

fn count(ballots: impl Iterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for ballot in ballots {
        *counts.entry(ballot).or_insert(0) += 1;
    }
    counts
}

/// The final answer `text` states in a closed form, normalised so that equal answers compare
/// equal: an option letter (`B`), a number (`1234.5`), or a short entity in lower case without
/// articles or punctuation (`paris`). `None` for prose.
pub fn final_answer(text: &str) -> Option<String> {
    // ASCII lower case keeps byte offsets (`İ` grows when lower-cased); the markers are ASCII.
    let lower = text.to_ascii_lowercase();
    let stated = MARKERS
        .iter()
        .filter_map(|m| lower.rfind(m).map(|at| at + m.len()))
        .max()
        .map(|at| &text[at..]);
    match stated {
        Some(rest) => closed_form(rest.lines().next().unwrap_or_default()),
        None => closed_form(text.trim()).or_else(|| last_number(text)),
    }
}

fn closed_form(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches(['.', '!']);
    if let Some(letter) = option_letter(text) {
        return Some(letter);
    }
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
                .collect::<String>()
                .trim_matches('.')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty() && !["the", "a", "an"].contains(&w.as_str()))
        .collect();
    if words.is_empty() || words.len() > MAX_WORDS {
        return None;
    }
    if words.iter().any(|w| w.chars().any(|c| c.is_ascii_digit())) {
        return last_number(text);
    }
    Some(words.join(" "))
}

/// `B`, `B.`, `(B)`, `B)`, or `B) text`: an option letter from A to J.
fn option_letter(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let core = first
        .trim_start_matches('(')
        .trim_end_matches([')', '.', ':']);
    let marked = first.len() > core.len() || first == text;
    let mut chars = core.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'A'..='J'), None) if marked => Some(c.to_string()),
        _ => None,
    }
}

/// The last number in `text`, without thousands separators, currency sign or trailing `.0`.
fn last_number(text: &str) -> Option<String> {
    let cleaned = text.replace([',', '$'], "");
    let number = cleaned
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .map(|t| t.trim_matches('.'))
        .rfind(|t| t.chars().any(|c| c.is_ascii_digit()))?;
    let number = number.trim_start_matches('-');
    let negative = cleaned.contains(&format!("-{number}"));
    let number = match number.split_once('.') {
        Some((int, frac)) if frac.chars().all(|c| c == '0') => int.to_string(),
        _ => number.to_string(),
    };
    Some(if negative {
        format!("-{number}")
    } else {
        number
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MemberStatus;

    #[test]
    fn closed_forms_are_read_and_normalised() {
        let cases = [
            ("B", Some("B")),
            ("(C) The moon is not made of cheese.", Some("C")),
            ("The answer is D.", Some("D")),
            ("Paris.", Some("paris")),
            ("The capital of France is Paris", None),
            ("So she earns 3 * 6 = $18 a day.\n#### 18", Some("18")),
            ("Answer: 1,234.0", Some("1234")),
            ("It costs $-4.50 in the end", Some("-4.50")),
            ("Final answer: the Eiffel Tower", Some("eiffel tower")),
            (
                "A long explanation of many things that never states a result at all",
                None,
            ),
            ("A", Some("A")),
            ("A cat.", Some("cat")),
            ("İİ Answer:", None),
            ("İstanbul? Answer: 7", Some("7")),
        ];
        for (text, want) in cases {
            assert_eq!(final_answer(text).as_deref(), want, "{text:?}");
        }
    }

    fn member(slot: usize, content: Option<&str>) -> MemberReport {
        MemberReport {
            slot,
            model: "m".into(),
            status: MemberStatus::Ok,
            content: content.map(str::to_string),
            usage: Default::default(),
            latency_ms: 0,
            seed: 0,
            error: None,
            sources: Vec::new(),
            tool_calls: 0,
        }
    }

    #[test]
    fn the_panel_stops_once_the_majority_is_certain() {
        let (a, b, c) = (
            member(0, Some("Answer: 18")),
            member(1, Some("#### 18")),
            member(2, Some("Answer: 20")),
        );
        assert_eq!(Vote.stop_early(&[&a], 3), None);
        assert_eq!(
            Vote.stop_early(&[&a, &c], 3),
            None,
            "1 against 1, one to come"
        );
        assert!(Vote.stop_early(&[&a, &b], 3).is_some(), "2 of 3 agree");
        assert_eq!(
            Vote.stop_early(&[&a, &b], 5),
            None,
            "3 more could outvote them"
        );
        assert_eq!(
            Vote.stop_early(&[&a, &c, &b], 3),
            None,
            "nobody left to cancel"
        );
    }

    #[test]
    fn the_majority_members_own_answer_is_returned_and_ties_are_not_decided() {
        let mut report = FusionReport {
            panel: vec![
                member(0, Some("I think 20.\nAnswer: 20")),
                member(1, Some("She earns 18 dollars.\nAnswer: 18")),
                member(2, Some("Answer: 18.00")),
            ],
            ..FusionReport::default()
        };
        let text = Vote.answer(&mut report);
        assert_eq!(text.as_deref(), Some("She earns 18 dollars.\nAnswer: 18"));
        let tally = report.vote.unwrap();
        assert_eq!((tally.outcome, tally.votes), (VoteOutcome::Majority, 2));
        assert_eq!(tally.ballots[0].as_deref(), Some("20"));

        let mut report = FusionReport {
            panel: vec![member(0, Some("Answer: 1")), member(1, Some("Answer: 2"))],
            ..FusionReport::default()
        };
        assert_eq!(Vote.answer(&mut report), None);
        assert_eq!(report.vote.unwrap().outcome, VoteOutcome::Tie);

        let ballots = ["18", "18", "20", "21", "22"].map(|b| format!("Answer: {b}"));
        let mut report = FusionReport {
            panel: (0..5).map(|i| member(i, Some(&ballots[i]))).collect(),
            ..FusionReport::default()
        };
        assert_eq!(Vote.answer(&mut report), None, "2 of 5 is no majority");
        assert_eq!(report.vote.unwrap().outcome, VoteOutcome::Tie);

        let mut report = FusionReport {
            panel: vec![
                member(
                    0,
                    Some("A long essay on the history of the Seine and its bridges"),
                ),
                member(1, None),
            ],
            ..FusionReport::default()
        };
        assert_eq!(Vote.answer(&mut report), None);
        assert_eq!(report.vote.unwrap().outcome, VoteOutcome::NoClosedForm);
    }
}
