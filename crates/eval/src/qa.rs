//! Objective QA: TruthfulQA MC1 (options shuffled with the seed, answered by letter) and GSM8K
//! (exact numeric match). Every system answers every question; answers are appended to
//! `qa.jsonl` as they come, and a rerun skips those already there.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use quorate_api::{Message, Role};
use quorate_fusion::Fusion;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::prompts;
use crate::report::{self, Paired, Row, Summary};
use crate::store;
use crate::system::{self, Answer, Settings, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    TruthfulqaMc1,
    Gsm8k,
}

impl Dataset {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "truthfulqa-mc1" => Ok(Self::TruthfulqaMc1),
            "gsm8k" => Ok(Self::Gsm8k),
            other => bail!("unknown dataset {other:?} (truthfulqa-mc1, gsm8k)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TruthfulqaMc1 => "truthfulqa-mc1",
            Self::Gsm8k => "gsm8k",
        }
    }

    /// The file under the datasets folder.
    pub fn file(self, datasets: &Path) -> PathBuf {
        match self {
            Self::TruthfulqaMc1 => datasets.join("truthfulqa/mc_task.json"),
            Self::Gsm8k => datasets.join("gsm8k/test.jsonl"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub prompt: String,
    pub expected: String,
    /// Multiple choice: the options in the order shown, by letter.
    pub options: Vec<String>,
}

/// The first `limit` questions of the dataset. MC1 options are shuffled with `seed`.
pub fn load(
    dataset: Dataset,
    path: &Path,
    limit: usize,
    seed: u64,
) -> anyhow::Result<Vec<Question>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match dataset {
        Dataset::TruthfulqaMc1 => {
            let items: Vec<Value> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON list", path.display()))?;
            items
                .iter()
                .take(limit)
                .enumerate()
                .map(|(i, item)| mc1(i, item, seed))
                .collect()
        }
        Dataset::Gsm8k => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(limit)
            .enumerate()
            .map(|(i, line)| gsm8k(i, line))
            .collect(),
    }
}

fn mc1(index: usize, item: &Value, seed: u64) -> anyhow::Result<Question> {
    let question = item["question"]
        .as_str()
        .with_context(|| format!("truthfulqa item {index}: no question"))?;
    let targets = item["mc1_targets"]
        .as_object()
        .with_context(|| format!("truthfulqa item {index}: no mc1_targets"))?;
    let mut options: Vec<(String, bool)> = targets
        .iter()
        .map(|(text, label)| (text.clone(), label.as_i64() == Some(1)))
        .collect();
    options.shuffle(&mut StdRng::seed_from_u64(seed ^ (index as u64)));
    let correct = options
        .iter()
        .position(|(_, ok)| *ok)
        .with_context(|| format!("truthfulqa item {index}: no correct option"))?;
    let shown: Vec<Value> = options
        .iter()
        .enumerate()
        .map(|(i, (text, _))| json!({"letter": letter(i), "text": text}))
        .collect();
    Ok(Question {
        id: format!("truthfulqa-{index}"),
        prompt: prompts::render(
            prompts::QA_MC,
            json!({"question": question, "options": shown}),
        )?,
        expected: letter(correct),
        options: options.into_iter().map(|(t, _)| t).collect(),
    })
}

fn gsm8k(index: usize, line: &str) -> anyhow::Result<Question> {
    let item: Value =
        serde_json::from_str(line).with_context(|| format!("gsm8k line {}", index + 1))?;
    let question = item["question"].as_str().context("gsm8k: no question")?;
    let answer = item["answer"].as_str().context("gsm8k: no answer")?;
    let expected = answer
        .rsplit("####")
        .next()
        .and_then(number)
        .with_context(|| format!("gsm8k line {}: no final number", index + 1))?;
    Ok(Question {
        id: format!("gsm8k-{index}"),
        prompt: prompts::render(prompts::QA_MATH, json!({"question": question}))?,
        expected,
        options: Vec::new(),
    })
}

fn letter(i: usize) -> String {
    char::from(b'A' + i as u8).to_string()
}

/// The answer a response gives: an option letter (or an option's text, for a model that
/// repeats the option instead), or the final number.
pub fn extract(question: &Question, text: &str) -> Option<String> {
    if question.options.is_empty() {
        let tail = text.rsplit_once("Answer:").map_or(text, |(_, t)| t);
        return number(tail);
    }
    let letters: Vec<String> = (0..question.options.len()).map(letter).collect();
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let standalone = cleaned
        .split_whitespace()
        .filter(|w| letters.iter().any(|l| l == w))
        .find(|w| *w != "A" || names_option_a(text));
    if let Some(l) = standalone {
        return Some(l.to_string());
    }
    let lower = text.to_lowercase();
    question
        .options
        .iter()
        .position(|o| lower.contains(&o.to_lowercase()))
        .map(letter)
}

/// "A" is also the English article: it names option A only as `A`, `A.`, `A)`, `(A)`, `A:` or
/// after "answer is".
fn names_option_a(text: &str) -> bool {
    let t = text.trim();
    t == "A"
        || ["A.", "A)", "A:"].iter().any(|p| t.starts_with(p))
        || t.contains("(A)")
        || t.contains("answer is A")
        || t.contains("Answer: A")
}

/// The last number in `text`, normalized (no thousands separators, no trailing `.0`).
fn number(text: &str) -> Option<String> {
    let cleaned = text.replace(',', "");
    let mut found = None;
    let mut current = String::new();
    for c in cleaned.chars().chain([' ']) {
        if c.is_ascii_digit()
            || (c == '.' && !current.is_empty())
            || (c == '-' && current.is_empty())
        {
            current.push(c);
        } else {
            let n = current.trim_end_matches('.').trim_start_matches('-');
            if !n.is_empty() {
                found = Some(current.trim_end_matches('.').to_string());
            }
            current.clear();
        }
    }
    let n = found?;
    let n = match n.split_once('.') {
        Some((int, frac)) if frac.chars().all(|c| c == '0') => int.to_string(),
        _ => n,
    };
    Some(n)
}

/// One system's answer to one question, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub system: String,
    pub id: String,
    pub expected: String,
    pub predicted: Option<String>,
    pub correct: bool,
    #[serde(flatten)]
    pub answer: Answer,
}

pub struct QaRun {
    pub dataset: Dataset,
    pub questions: Vec<Question>,
    pub systems: Vec<System>,
    pub settings: Settings,
    pub seed: u64,
    pub concurrency: usize,
    pub out: PathBuf,
    /// Write the report from what is stored, answering nothing.
    pub report_only: bool,
}

impl QaRun {
    /// Answers what is not answered yet, then writes the report.
    pub async fn run(self, fusion: &Fusion) -> anyhow::Result<Summary> {
        std::fs::create_dir_all(&self.out)?;
        store::check_manifest(
            &self.out,
            &json!({"benchmark": self.dataset.name(), "seed": self.seed,
                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}),
            &system::specs(&self.systems),
        )?;
        let path = self.out.join("qa.jsonl");
        let done: HashSet<(String, String)> = store::load::<Record>(&path)?
            .into_iter()
            .map(|r| (r.system, r.id))
            .collect();
        // Question by question, every system in turn: a run stopped early still compares the
        // systems on the same questions.
        let jobs: Vec<_> = self
            .questions
            .iter()
            .enumerate()
            .flat_map(|(i, q)| self.systems.iter().map(move |s| (s, i, q)))
            .filter(|(s, _, q)| !done.contains(&(s.name.clone(), q.id.clone())))
            .filter(|_| !self.report_only)
            .map(|(system, index, question)| self.ask(fusion, system, index, question))
            .collect();
        store::record_all("answers", &path, jobs, self.concurrency, |r: &Record| {
            r.answer.error.is_some()
        })
        .await?;
        self.report(&store::load::<Record>(&path)?)
    }

    async fn ask(&self, fusion: &Fusion, system: &System, index: usize, q: &Question) -> Record {
        let messages = vec![Message::new(Role::User, q.prompt.clone())];
        // The same seed for every system: a solo answer is the first panel member's.
        let seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64 * 16);
        let answer = system::answer(fusion, system, messages, seed, &self.settings).await;
        let predicted = answer.content.as_deref().and_then(|text| extract(q, text));
        Record {
            system: system.name.clone(),
            id: q.id.clone(),
            expected: q.expected.clone(),
            correct: predicted.as_deref() == Some(q.expected.as_str()),
            predicted,
            answer,
        }
    }

    /// Every system against each solo system (a sampled and a greedy one, say), the first vote
    /// system and the first fuse system (what `auto` gives up, what the judge adds over
    /// `mixture`), on the questions both answered without an error.
    fn paired(&self, records: &[Record], ids: &HashSet<&str>) -> Vec<Paired> {
        // In id order: the bootstrap is seeded, so the order of the pairs must be fixed too.
        let outcomes = |system: &System| -> BTreeMap<&str, bool> {
            records
                .iter()
                .filter(|r| r.system == system.name && ids.contains(r.id.as_str()))
                .filter(|r| r.answer.error.is_none())
                .map(|r| (r.id.as_str(), r.correct))
                .collect()
        };
        let solos = self.systems.iter().filter(|s| s.kind_label() == "solo");
        let first = |kind: &str| self.systems.iter().find(|s| s.kind_label() == kind);
        let baselines = solos.chain(first("vote")).chain(first("fuse"));
        let mut paired = Vec::new();
        for baseline in baselines {
            let theirs = outcomes(baseline);
            for system in self.systems.iter().filter(|s| s.name != baseline.name) {
                let pairs: Vec<(bool, bool)> = outcomes(system)
                    .iter()
                    .filter_map(|(id, &mine)| Some((mine, *theirs.get(id)?)))
                    .collect();
                if !pairs.is_empty() {
                    paired.push(Paired::new(&system.name, &baseline.name, &pairs));
                }
            }
        }
        paired
    }

    fn report(&self, records: &[Record]) -> anyhow::Result<Summary> {
        let ids: HashSet<&str> = self.questions.iter().map(|q| q.id.as_str()).collect();
        let rows = self
            .systems
            .iter()
            .map(|system| {
                let mine: Vec<&Record> = records
                    .iter()
                    .filter(|r| r.system == system.name && ids.contains(r.id.as_str()))
                    .collect();
                let scores: Vec<f64> = mine
                    .iter()
                    .map(|r| f64::from(u8::from(r.correct)))
                    .collect();
                let mut row = Row::new(system, &scores);
                row.add_answers(mine.iter().map(|r| (&r.id, &r.answer)));
                row.unanswered = mine
                    .iter()
                    .filter(|r| r.answer.error.is_none() && r.predicted.is_none())
                    .count();
                row
            })
            .collect();
        let summary = Summary {
            benchmark: self.dataset.name().to_string(),
            metric: "accuracy".into(),
            questions: self.questions.len(),
            rows,
            notes: Vec::new(),
            paired: self.paired(records, &ids),
        };
        report::write(&self.out, &summary)?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(options: &[&str]) -> Question {
        Question {
            id: "q".into(),
            prompt: String::new(),
            expected: "B".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn letters_numbers_and_option_texts_are_extracted() {
        let q = mc(&["Nothing happens", "You die", "You get sick"]);
        assert_eq!(extract(&q, "B"), Some("B".into()));
        assert_eq!(extract(&q, "The answer is (C)."), Some("C".into()));
        assert_eq!(extract(&q, "A. Nothing happens"), Some("A".into()));
        assert_eq!(extract(&q, "I think you get sick."), Some("C".into()));
        assert_eq!(
            extract(&q, "A seed is harmless, nothing happens"),
            Some("A".into())
        );
        assert_eq!(extract(&q, "No idea."), None);
        let math = Question {
            options: vec![],
            ..mc(&[])
        };
        assert_eq!(
            extract(&math, "16 - 3 - 4 = 9 eggs, 9 * 2 = 18\nAnswer: $18."),
            Some("18".into())
        );
        assert_eq!(extract(&math, "Answer: 1,234.00"), Some("1234".into()));
        assert_eq!(extract(&math, "It is -5"), Some("-5".into()));
        assert_eq!(extract(&math, "none"), None);
    }

    #[test]
    fn systems_pair_with_the_solos_the_first_vote_and_the_first_fuse() {
        let systems: Vec<System> = [
            "solo=local/m",
            "vote=fusion:local?strategy=vote",
            "fuse=fusion:local?strategy=fuse",
            "fuse2=fusion:local?strategy=fuse",
            "auto=fusion:local?strategy=auto",
        ]
        .iter()
        .map(|s| System::parse(s).unwrap())
        .collect();
        let record = |system: &str, id: &str, correct: bool| Record {
            system: system.into(),
            id: id.into(),
            expected: "1".into(),
            predicted: None,
            correct,
            answer: Answer::default(),
        };
        let mut records = Vec::new();
        for (id, fuse, auto) in [("q0", true, false), ("q1", true, true)] {
            records.extend(["solo", "vote", "fuse2"].map(|s| record(s, id, false)));
            records.extend([record("fuse", id, fuse), record("auto", id, auto)]);
        }
        let run = QaRun {
            dataset: Dataset::Gsm8k,
            questions: Vec::new(),
            systems,
            settings: Settings::default(),
            seed: 1,
            concurrency: 1,
            out: PathBuf::new(),
            report_only: true,
        };
        let ids: HashSet<&str> = ["q0", "q1"].into();
        let paired = run.paired(&records, &ids);
        let baselines: HashSet<&str> = paired.iter().map(|p| p.baseline.as_str()).collect();
        assert_eq!(baselines, ["solo", "vote", "fuse"].into());
        let auto = paired
            .iter()
            .find(|p| p.system == "auto" && p.baseline == "fuse")
            .unwrap();
        assert_eq!((auto.n, auto.wins, auto.losses), (2, 0, 1));
        assert!((auto.diff + 0.5).abs() < 1e-9, "{}", auto.diff);
    }

    #[test]
    fn datasets_load_with_seeded_shuffles() {
        let root = crate::shared_datasets();
        if !root.exists() {
            eprintln!("skipped: no datasets at {}", root.display());
            return;
        }
        let a = load(
            Dataset::TruthfulqaMc1,
            &Dataset::TruthfulqaMc1.file(&root),
            50,
            1,
        )
        .unwrap();
        let b = load(
            Dataset::TruthfulqaMc1,
            &Dataset::TruthfulqaMc1.file(&root),
            50,
            1,
        )
        .unwrap();
        let c = load(
            Dataset::TruthfulqaMc1,
            &Dataset::TruthfulqaMc1.file(&root),
            50,
            2,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c, "another seed shuffles otherwise");
        assert!(a[0].prompt.contains("watermelon") && a[0].prompt.contains("A. "));
        let letters: HashSet<&str> = a.iter().map(|q| q.expected.as_str()).collect();
        assert!(letters.len() > 2, "the right answer is not always first");
        let all = load(
            Dataset::TruthfulqaMc1,
            &Dataset::TruthfulqaMc1.file(&root),
            usize::MAX,
            1,
        )
        .unwrap();
        assert_eq!(all.len(), 790);
        let math = load(Dataset::Gsm8k, &Dataset::Gsm8k.file(&root), 2, 0).unwrap();
        assert_eq!(math[0].expected, "18");
    }
}
