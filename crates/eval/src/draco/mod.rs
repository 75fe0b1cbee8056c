//! DRACO (Perplexity, arXiv:2602.11685): 100 deep-research tasks, each graded by a rubric of
//! weighted criteria in four sections. The task file holds the rubric as a JSON string.

pub mod grade;
pub mod run;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Criterion {
    pub id: String,
    pub weight: i64,
    pub requirement: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub criteria: Vec<Criterion>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rubric {
    pub id: String,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub domain: String,
    pub problem: String,
    pub rubric: Rubric,
}

#[derive(Deserialize)]
struct Line {
    id: String,
    domain: String,
    problem: String,
    answer: String,
}

impl Rubric {
    /// Every criterion with its section, keyed `section/criterion` (unique within a task).
    pub fn criteria(&self) -> impl Iterator<Item = (String, &Section, &Criterion)> {
        self.sections.iter().flat_map(|s| {
            s.criteria
                .iter()
                .map(move |c| (format!("{}/{}", s.id, c.id), s, c))
        })
    }
}

/// Every task in the file, rubrics decoded. Errors name the line.
pub fn load(path: &Path) -> anyhow::Result<Vec<Task>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line: Line = serde_json::from_str(l)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            let rubric: Rubric = serde_json::from_str(&line.answer)
                .with_context(|| format!("{} line {}: the rubric", path.display(), i + 1))?;
            Ok(Task {
                id: line.id,
                domain: line.domain,
                problem: line.problem,
                rubric,
            })
        })
        .collect()
}

/// Which tasks a run takes: by id, by domain, then the first `limit`.
pub fn select(
    tasks: Vec<Task>,
    ids: &[String],
    domain: Option<&str>,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Task>> {
    for id in ids {
        if !tasks.iter().any(|t| &t.id == id) {
            anyhow::bail!("--task-ids: no task {id:?} in the dataset");
        }
    }
    let chosen: Vec<Task> = tasks
        .into_iter()
        .filter(|t| ids.is_empty() || ids.contains(&t.id))
        .filter(|t| domain.is_none_or(|d| t.domain.eq_ignore_ascii_case(d)))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!("no task matches the selection");
    }
    Ok(chosen)
}

/// A task's score from its verdicts: `met[key]` says whether a criterion was MET.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskScore {
    /// clamp(Σ weights of MET criteria / Σ positive weights, 0, 1).
    pub overall: f64,
    /// The same per section, over that section's positive weights.
    pub axes: BTreeMap<String, f64>,
    /// Criteria that went the right way (positive MET, negative UNMET), and all criteria.
    pub passed: usize,
    pub criteria: usize,
}

/// Scores one grading pass.
pub fn score(rubric: &Rubric, met: &impl Fn(&str) -> bool) -> TaskScore {
    let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let (mut passed, mut criteria) = (0, 0);
    for (key, section, c) in rubric.criteria() {
        let is_met = met(&key);
        let entry = sums.entry(section.id.clone()).or_default();
        if is_met {
            entry.0 += c.weight;
        }
        if c.weight > 0 {
            entry.1 += c.weight;
        }
        criteria += 1;
        passed += usize::from(is_met == (c.weight > 0));
    }
    let ratio = |raw: i64, positive: i64| {
        if positive <= 0 {
            return 0.0;
        }
        (raw as f64 / positive as f64).clamp(0.0, 1.0)
    };
    let (raw, positive) = sums
        .values()
        .fold((0, 0), |(r, p), (sr, sp)| (r + sr, p + sp));
    TaskScore {
        overall: ratio(raw, positive),
        axes: sums
            .iter()
            .map(|(k, (r, p))| (k.clone(), ratio(*r, *p)))
            .collect(),
        passed,
        criteria,
    }
}

/// Whether a response reads as a refusal rather than an attempt (short, and says it will not).
pub fn is_refusal(response: &str) -> bool {
    let start: String = response
        .trim()
        .chars()
        .take(120)
        .collect::<String>()
        .to_lowercase();
    response.len() < 600
        && [
            "i can't",
            "i cannot",
            "i'm sorry",
            "i am sorry",
            "i won't",
            "i'm unable",
            "i am unable",
        ]
        .iter()
        .any(|p| start.contains(p))
}

/// Word n-grams a response shares with a criterion: a response that repeats a rubric line word
/// for word has likely seen the rubric.
pub const VERBATIM_WORDS: usize = 8;

/// The criteria of `rubric` that `response` quotes (a run of `VERBATIM_WORDS` words in common).
pub fn quoted_criteria(rubric: &Rubric, response: &str) -> Vec<String> {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let said = words(response);
    let grams: std::collections::HashSet<&[String]> = said.windows(VERBATIM_WORDS).collect();
    rubric
        .criteria()
        .filter(|(_, _, c)| {
            words(&c.requirement)
                .windows(VERBATIM_WORDS)
                .any(|g| grams.contains(g))
        })
        .map(|(key, _, _)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rubric() -> Rubric {
        let c = |id: &str, weight| Criterion {
            id: id.into(),
            weight,
            requirement: format!("requirement {id}"),
        };
        Rubric {
            id: "r".into(),
            sections: vec![
                Section {
                    id: "factual-accuracy".into(),
                    title: "F".into(),
                    criteria: vec![c("a", 10), c("b", 5), c("flaw", -20)],
                },
                Section {
                    id: "citation-quality".into(),
                    title: "C".into(),
                    criteria: vec![c("c", 5), c("bad-cite", -500)],
                },
            ],
        }
    }

    #[test]
    fn scores_match_hand_computed_fixtures() {
        let r = rubric();
        let met = |keys: &'static [&'static str]| move |k: &str| keys.contains(&k);
        // a and c met, no flaw: (10 + 5) / 20.
        let s = score(&r, &met(&["factual-accuracy/a", "citation-quality/c"]));
        assert_eq!(s.overall, 0.75);
        assert_eq!(s.axes["factual-accuracy"], 10.0 / 15.0);
        assert_eq!(s.axes["citation-quality"], 1.0);
        assert_eq!((s.passed, s.criteria), (4, 5), "b is the one missed");
        // Everything met, flaws included: 20 - 20 - 500 < 0, clamped at 0.
        let all = score(&r, &|_: &str| true);
        assert_eq!(all.overall, 0.0);
        assert_eq!(all.axes["factual-accuracy"], 0.0, "15 - 20 clamps at 0");
        assert_eq!((all.passed, all.criteria), (3, 5));
        // All positives, no flaw: exactly 1.
        let best = score(&r, &|k: &str| !k.contains("flaw") && !k.contains("bad"));
        assert_eq!((best.overall, best.passed), (1.0, 5));
        // Nothing met: 0, and the flaws count as passed.
        let none = score(&r, &|_: &str| false);
        assert_eq!((none.overall, none.passed), (0.0, 2));
    }

    #[test]
    fn verbatim_quotes_are_found() {
        let mut r = rubric();
        r.sections[0].criteria[0].requirement =
            "States that the TWFE coefficient is a variance weighted average of all contrasts"
                .into();
        let quoted = quoted_criteria(
            &r,
            "As required, the TWFE coefficient is a variance-weighted average of all contrasts.",
        );
        assert_eq!(quoted, ["factual-accuracy/a"]);
        assert!(quoted_criteria(&r, "TWFE averages contrasts with variance weights.").is_empty());
        assert!(is_refusal("I'm sorry, but I can't help with that."));
        assert!(!is_refusal(
            "The TWFE estimator is biased; I cannot stress this enough. "
                .repeat(20)
                .as_str()
        ));
    }

    #[test]
    fn the_whole_dataset_parses() {
        let path = crate::shared_datasets().join("draco/test.jsonl");
        if !path.exists() {
            eprintln!("skipped: no datasets at {}", path.display());
            return;
        }
        let tasks = load(&path).unwrap();
        assert_eq!(tasks.len(), 100);
        let criteria: Vec<&Criterion> = tasks
            .iter()
            .flat_map(|t| t.rubric.sections.iter().flat_map(|s| &s.criteria))
            .collect();
        assert_eq!(criteria.len(), 3934);
        assert_eq!(criteria.iter().filter(|c| c.weight < 0).count(), 415);
        assert_eq!(criteria.iter().map(|c| c.weight).min(), Some(-500));
        assert!(tasks.iter().all(|t| t.rubric.sections.len() == 4));
        let keys: std::collections::HashSet<String> =
            tasks[0].rubric.criteria().map(|(k, _, _)| k).collect();
        assert_eq!(
            keys.len(),
            tasks[0].rubric.criteria().count(),
            "keys are unique"
        );
        let finance = select(tasks.clone(), &[], Some("finance"), None).unwrap();
        assert_eq!(finance.len(), 20);
        assert_eq!(select(tasks, &[], None, Some(2)).unwrap().len(), 2);
    }
}
