//! `auto`: stop as soon as the panel agrees. As members finish, answers that agree (the same
//! final answer in a closed form, or, for prose, word overlap at or above the plan's agreement
//! threshold) are grouped; once a group holds the plan's exit quorum (a strict majority of the
//! panel unless set, up to all of it), its medoid answer (the one closest to the rest of the
//! group) is returned as written, the members still running are cancelled and the judge and
//! synthesis are skipped. Without such a group the run goes on as `fuse`.

use std::collections::HashSet;

use serde::Serialize;

use super::vote::final_answer;
use super::Variant;
use crate::report::{FusionReport, MemberReport, MemberStatus};

/// The `auto` object of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Whether the panel agreed (then the judge and the synthesis were skipped).
    pub agreed: bool,
    /// The slots whose answers agree with the returned one.
    pub group: Vec<usize>,
    /// The slot whose answer was returned.
    pub answer_slot: Option<usize>,
    pub threshold: f64,
    /// The members that had to agree.
    pub quorum: usize,
    /// Tokens not spent, estimated from this run's own counts: the cancelled members, the
    /// judge and the synthesis.
    pub saved: Saved,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Saved {
    pub cancelled_members: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

pub(crate) struct Auto {
    pub threshold: f64,
    /// A strict majority of the panel, up to all of it (checked by the plan).
    pub quorum: usize,
}

impl Variant for Auto {
    fn stop_early(&self, finished: &[&MemberReport], panel_size: usize) -> Option<String> {
        let running = panel_size.saturating_sub(finished.len());
        let group = self.settled(finished)?;
        (running > 0).then(|| {
            format!(
                "{} of {panel_size} members agree; the panel's answer is settled",
                group.len()
            )
        })
    }

    fn answer(&self, report: &mut FusionReport) -> Option<String> {
        let members: Vec<&MemberReport> = report.panel.iter().collect();
        let group = self.settled(&members);
        let answer_slot = group.as_ref().map(|g| self.medoid(g));
        let saved = group
            .as_ref()
            .map(|_| estimate_saved(&report.panel))
            .unwrap_or_default();
        let text = answer_slot.and_then(|slot| {
            let member = report.panel.iter().find(|m| m.slot == slot)?;
            member.content.clone()
        });
        report.agreement = Some(Agreement {
            agreed: text.is_some(),
            group: group.iter().flatten().map(|m| m.slot).collect(),
            answer_slot,
            threshold: self.threshold,
            quorum: self.quorum,
            saved,
        });
        text
    }
}

impl Auto {
    /// The largest group of answers that agree with one of them, when it holds the quorum.
    fn settled<'a>(&self, members: &[&'a MemberReport]) -> Option<Vec<&'a MemberReport>> {
        let answered: Vec<&MemberReport> = members
            .iter()
            .copied()
            .filter(|m| m.status == MemberStatus::Ok && m.content.is_some())
            .collect();
        answered
            .iter()
            .map(|center| {
                answered
                    .iter()
                    .copied()
                    .filter(|other| self.agree(center, other))
                    .collect::<Vec<_>>()
            })
            .max_by_key(Vec::len)
            .filter(|group| group.len() >= self.quorum)
    }

    fn agree(&self, a: &MemberReport, b: &MemberReport) -> bool {
        let (Some(x), Some(y)) = (a.content.as_deref(), b.content.as_deref()) else {
            return false;
        };
        match (final_answer(x), final_answer(y)) {
            (Some(p), Some(q)) => p == q,
            _ => similarity(x, y) >= self.threshold,
        }
    }

    /// The slot whose answer is most similar to the rest of the group.
    fn medoid(&self, group: &[&MemberReport]) -> usize {
        fn text(m: &MemberReport) -> &str {
            m.content.as_deref().unwrap_or_default()
        }
        group
            .iter()
            .map(|m| {
                let total: f64 = group.iter().map(|o| similarity(text(m), text(o))).sum();
                (total, std::cmp::Reverse(m.slot))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map_or(0, |(_, std::cmp::Reverse(slot))| slot)
    }
}

/// Word overlap of two texts (Jaccard over lower-cased words): 1 for the same words.
fn similarity(a: &str, b: &str) -> f64 {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

/// What the skipped stages would have cost, from this run's own counts: each cancelled member
/// as much as an average finished one; the judge reading the question and every answer and
/// writing an answer's worth; the synthesis reading that and writing as much again.
fn estimate_saved(panel: &[MemberReport]) -> Saved {
    let finished: Vec<&MemberReport> = panel
        .iter()
        .filter(|m| m.status == MemberStatus::Ok)
        .collect();
    let n = finished.len().max(1) as u64;
    let prompt = finished.iter().map(|m| m.usage.prompt_tokens).sum::<u64>() / n;
    let completion = finished
        .iter()
        .map(|m| m.usage.completion_tokens)
        .sum::<u64>();
    let cancelled = panel
        .iter()
        .filter(|m| m.status == MemberStatus::Cancelled)
        .count();
    let judge_prompt = prompt + completion;
    let synthesis_prompt = judge_prompt + completion / n;
    Saved {
        cancelled_members: cancelled,
        prompt_tokens: prompt * cancelled as u64 + judge_prompt + synthesis_prompt,
        completion_tokens: (completion / n) * (cancelled as u64 + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::Usage;

    fn member(slot: usize, text: Option<&str>, status: MemberStatus) -> MemberReport {
        MemberReport {
            slot,
            model: "m".into(),
            status,
            content: text.map(str::to_string),
            usage: Usage::new(100, 20),
            latency_ms: 0,
            seed: 0,
            error: None,
            sources: Vec::new(),
            tool_calls: 0,
        }
    }

    fn ok(slot: usize, text: &str) -> MemberReport {
        member(slot, Some(text), MemberStatus::Ok)
    }

    /// A panel of three, exiting on a strict majority.
    const AUTO: Auto = Auto {
        threshold: 0.6,
        quorum: 2,
    };

    #[test]
    fn a_majority_of_the_whole_panel_stops_it() {
        let a = ok(0, "The capital of France is Paris.");
        let b = ok(2, "The capital of France is Paris!");
        assert!(AUTO.stop_early(&[&a], 3).is_none(), "one of three");
        let reason = AUTO.stop_early(&[&a, &b], 3).unwrap();
        assert!(reason.starts_with("2 of 3"), "{reason}");
        let of_four = Auto { quorum: 3, ..AUTO };
        assert!(
            of_four.stop_early(&[&a, &b], 4).is_none(),
            "2 of 4 is no majority"
        );
        let c = ok(1, "Lyon is the capital of France, some say.");
        assert!(
            AUTO.stop_early(&[&a, &c], 3).is_none(),
            "prose that differs"
        );
        // Closed forms compare as answers, whatever the words around them.
        let x = ok(0, "Adding them gives 42.\nFinal answer: 42");
        let y = ok(1, "The total is 42");
        assert!(AUTO.stop_early(&[&x, &y], 3).is_some());
    }

    #[test]
    fn the_medoid_answers_and_the_saving_is_estimated() {
        let mut report = FusionReport {
            panel: vec![
                ok(0, "Paris is the capital of France, on the Seine."),
                ok(1, "Paris is the capital of France."),
                member(2, None, MemberStatus::Cancelled),
            ],
            ..FusionReport::default()
        };
        let text = AUTO.answer(&mut report).unwrap();
        let agreement = report.agreement.unwrap();
        assert!(agreement.agreed);
        assert_eq!(agreement.group, [0, 1]);
        assert_eq!(
            Some(text.as_str()),
            report.panel[agreement.answer_slot.unwrap()]
                .content
                .as_deref()
        );
        assert_eq!(agreement.saved.cancelled_members, 1);
        // One member (100 + 20), the judge (100 + 40 in, 20 out), the synthesis (160 in, 20 out).
        assert_eq!(agreement.saved.prompt_tokens, 100 + 140 + 160);
        assert_eq!(agreement.saved.completion_tokens, 60);
    }

    #[test]
    fn a_unanimous_quorum_waits_for_every_member_and_skips_only_the_judge() {
        let all = Auto { quorum: 3, ..AUTO };
        let a = ok(0, "Final answer: 42");
        let b = ok(1, "It is 42");
        let c = ok(2, "Final answer: 41");
        assert!(all.stop_early(&[&a, &b], 3).is_none(), "2 of 3 is not all");
        let mut split = FusionReport {
            panel: vec![a.clone(), b.clone(), c],
            ..FusionReport::default()
        };
        assert!(all.answer(&mut split).is_none(), "a split panel fuses");
        assert_eq!(split.agreement.unwrap().quorum, 3);
        let mut unanimous = FusionReport {
            panel: vec![a, b, ok(2, "42")],
            ..FusionReport::default()
        };
        assert!(all.answer(&mut unanimous).is_some());
        let agreement = unanimous.agreement.unwrap();
        assert_eq!(agreement.group, [0, 1, 2]);
        assert_eq!(agreement.saved.cancelled_members, 0);
    }

    #[test]
    fn without_agreement_the_run_goes_on_to_fuse() {
        let mut report = FusionReport {
            panel: vec![
                ok(0, "Paris."),
                ok(1, "Lyon."),
                member(2, None, MemberStatus::Failed),
            ],
            ..FusionReport::default()
        };
        assert!(AUTO.answer(&mut report).is_none());
        let agreement = report.agreement.unwrap();
        assert!(!agreement.agreed && agreement.answer_slot.is_none());
        assert_eq!(agreement.saved, Saved::default());
    }
}
