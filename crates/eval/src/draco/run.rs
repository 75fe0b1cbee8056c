//! A DRACO run in two resumable steps: every system answers every task (`answers.jsonl`), then
//! the grader judges every criterion of every answer, `passes` times (`verdicts.jsonl`). The
//! report follows from what is stored.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use quorate_api::{Message, Role};
use quorate_fusion::Fusion;
use quorate_tools::DomainFilter;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::grade::{Grader, Status, Verdict};
use super::{is_refusal, quoted_criteria, score, Task};
use crate::report::{self, Row, Summary};
use crate::stats;
use crate::store;
use crate::system::{self, Answer, Settings, System};

/// Domains that host DRACO's rubrics or discuss them: no web tool of a run may reach them.
pub const EXCLUDED_DOMAINS: &[&str] = &[
    "huggingface.co",
    "datasets-server.huggingface.co",
    "openrouter.ai",
    "research.perplexity.ai",
    "r2cdn.perplexity.ai",
    "paperswithcode.com",
];

/// One system's answer to one task, as stored, with its contamination flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub system: String,
    pub task_id: String,
    #[serde(flatten)]
    pub answer: Answer,
    pub flags: Vec<String>,
}

pub struct DracoRun {
    pub tasks: Vec<Task>,
    pub systems: Vec<System>,
    pub settings: Settings,
    pub grader: Grader,
    pub passes: u32,
    pub excluded_domains: Vec<String>,
    pub concurrency: usize,
    pub out: PathBuf,
    pub report_only: bool,
}

impl DracoRun {
    /// The research tools every system gets: both, with the excluded domains.
    pub fn research_tools(excluded: &[String]) -> serde_json::Value {
        let parameters = json!({"excluded_domains": excluded});
        json!([{"type": "web_search", "parameters": parameters},
               {"type": "web_fetch", "parameters": parameters}])
    }

    pub async fn run(self, fusion: &Fusion) -> anyhow::Result<Summary> {
        std::fs::create_dir_all(&self.out)?;
        let settings = &self.settings;
        store::check_manifest(
            &self.out,
            &json!({"benchmark": "draco", "grader": self.grader.model,
                "grader_temperature": self.grader.temperature, "temperature": settings.temperature,
                "max_tokens": settings.max_tokens, "tools": settings.tools}),
            &system::specs(&self.systems),
        )?;
        if !self.report_only {
            self.answer_all(fusion).await?;
            self.grade_all().await?;
        }
        self.report()
    }

    fn answers_path(&self) -> PathBuf {
        self.out.join("answers.jsonl")
    }

    fn verdicts_path(&self) -> PathBuf {
        self.out.join("verdicts.jsonl")
    }

    async fn answer_all(&self, fusion: &Fusion) -> anyhow::Result<()> {
        let path = self.answers_path();
        let done: HashSet<(String, String)> = store::load::<Record>(&path)?
            .into_iter()
            .map(|r| (r.system, r.task_id))
            .collect();
        let jobs: Vec<_> = self
            .tasks
            .iter()
            .flat_map(|t| self.systems.iter().map(move |s| (t, s)))
            .filter(|(t, s)| !done.contains(&(s.name.clone(), t.id.clone())))
            .map(|(task, system)| async move {
                let messages = vec![Message::new(Role::User, task.problem.clone())];
                let answer = system::answer(fusion, system, messages, 0, &self.settings).await;
                Record {
                    system: system.name.clone(),
                    task_id: task.id.clone(),
                    flags: self.flags(task, &answer),
                    answer,
                }
            })
            .collect();
        store::record_all("answers", &path, jobs, self.concurrency, |r: &Record| {
            r.answer.error.is_some()
        })
        .await
    }

    /// Contamination: retrieved URLs on an excluded domain, and rubric lines quoted verbatim.
    fn flags(&self, task: &Task, answer: &Answer) -> Vec<String> {
        let mut flags = Vec::new();
        if let Ok(filter) = DomainFilter::new(&self.excluded_domains, &[]) {
            for url in answer.sources.iter().filter(|u| !filter.permits_str(u)) {
                flags.push(format!("retrieved a URL on an excluded domain: {url}"));
            }
        }
        if let Some(content) = &answer.content {
            for key in quoted_criteria(&task.rubric, content) {
                flags.push(format!("quotes rubric criterion {key} verbatim"));
            }
        }
        flags
    }

    async fn grade_all(&self) -> anyhow::Result<()> {
        let answers = latest_answers(store::load::<Record>(&self.answers_path())?);
        let path = self.verdicts_path();
        let done: HashSet<(String, String, u32, String)> = store::load::<Verdict>(&path)?
            .into_iter()
            .map(|v| (v.system, v.task_id, v.pass, v.criterion))
            .collect();
        let mut jobs = Vec::new();
        for task in &self.tasks {
            for system in &self.systems {
                let Some(content) = answers
                    .get(&(system.name.clone(), task.id.clone()))
                    .and_then(|r| r.answer.content.clone())
                    .filter(|c| !c.trim().is_empty())
                else {
                    continue;
                };
                let content = Arc::new(content);
                for pass in 0..self.passes {
                    for (key, _, criterion) in task.rubric.criteria() {
                        let id = (system.name.clone(), task.id.clone(), pass, key.clone());
                        if done.contains(&id) {
                            continue;
                        }
                        let content = content.clone();
                        jobs.push(async move {
                            let (status, explanation, usage) = self
                                .grader
                                .grade(&task.problem, &content, criterion, pass)
                                .await;
                            Verdict {
                                system: system.name.clone(),
                                task_id: task.id.clone(),
                                pass,
                                criterion: key,
                                status,
                                explanation,
                                usage,
                            }
                        });
                    }
                }
            }
        }
        store::record_all("verdicts", &path, jobs, self.concurrency, |v: &Verdict| {
            v.status == Status::Error
        })
        .await
    }

    fn report(&self) -> anyhow::Result<Summary> {
        let answers = latest_answers(store::load::<Record>(&self.answers_path())?);
        let verdicts = store::load::<Verdict>(&self.verdicts_path())?;
        let mut by_key: HashMap<(&str, &str, u32), HashMap<&str, &Verdict>> = HashMap::new();
        for v in &verdicts {
            by_key
                .entry((v.system.as_str(), v.task_id.as_str(), v.pass))
                .or_default()
                .insert(v.criterion.as_str(), v);
        }
        let mut notes = Vec::new();
        let rows = self
            .systems
            .iter()
            .map(|system| self.row(system, &answers, &by_key, &mut notes))
            .collect();
        let summary = Summary {
            benchmark: "draco".into(),
            metric: "rubric score".into(),
            questions: self.tasks.len(),
            rows,
            notes,
            paired: Vec::new(),
        };
        report::write(&self.out, &summary)?;
        Ok(summary)
    }

    fn row(
        &self,
        system: &System,
        answers: &HashMap<(String, String), Record>,
        verdicts: &HashMap<(&str, &str, u32), HashMap<&str, &Verdict>>,
        notes: &mut Vec<String>,
    ) -> Row {
        let mut scores = Vec::new();
        let mut axes: HashMap<String, Vec<f64>> = HashMap::new();
        let (mut passed, mut graded, mut errors, mut ungraded) = (0, 0, 0, 0);
        let mut grading_cost = 0.0;
        let mut mine = Vec::new();
        for task in &self.tasks {
            let record = answers.get(&(system.name.clone(), task.id.clone()));
            if let Some(r) = record {
                mine.push((&task.id, &r.answer));
                for flag in &r.flags {
                    notes.push(format!("{} on task {}: {flag}", system.name, task.id));
                }
                if r.answer.content.as_deref().is_some_and(is_refusal) {
                    notes.push(format!("{} refused task {}", system.name, task.id));
                }
            }
            let mut task_scores = Vec::new();
            let mut task_axes: HashMap<String, Vec<f64>> = HashMap::new();
            for pass in 0..self.passes {
                let Some(found) = verdicts.get(&(system.name.as_str(), task.id.as_str(), pass))
                else {
                    continue;
                };
                let complete = task
                    .rubric
                    .criteria()
                    .all(|(k, _, _)| found.contains_key(k.as_str()));
                if !complete {
                    ungraded += 1;
                    continue;
                }
                let met = |k: &str| found.get(k).is_some_and(|v| v.status == Status::Met);
                let s = score(&task.rubric, &met);
                errors += found.values().filter(|v| v.status == Status::Error).count();
                grading_cost += found
                    .values()
                    .map(|v| v.usage.cost.and_then(|c| c.to_f64()).unwrap_or_default())
                    .sum::<f64>();
                passed += s.passed;
                graded += s.criteria;
                task_scores.push(s.overall);
                for (axis, v) in s.axes {
                    task_axes.entry(axis).or_default().push(v);
                }
            }
            // A task with no graded answer (failed, refused to run, or not graded yet) scores 0.
            scores.push(stats::mean(&task_scores));
            for section in &task.rubric.sections {
                let v = task_axes.get(&section.id).map_or(0.0, |v| stats::mean(v));
                axes.entry(section.id.clone()).or_default().push(v);
            }
        }
        let mut row = Row::new(system, &scores);
        row.add_answers(mine.into_iter());
        let answered: HashSet<&String> = self
            .tasks
            .iter()
            .filter(|t| answers.contains_key(&(system.name.clone(), t.id.clone())))
            .map(|t| &t.id)
            .collect();
        for task in self.tasks.iter().filter(|t| !answered.contains(&t.id)) {
            row.failed.push(format!("{} (not answered)", task.id));
        }
        row.axes = axes
            .into_iter()
            .map(|(k, v)| (k, stats::mean(&v)))
            .collect();
        row.pass_rate = (graded > 0).then(|| passed as f64 / graded as f64);
        row.grading_cost_usd = Some(grading_cost);
        if errors > 0 {
            notes.push(format!(
                "{}: {errors} criteria got no valid verdict from the grader (scored UNMET)",
                system.name
            ));
        }
        if ungraded > 0 {
            notes.push(format!(
                "{}: {ungraded} task passes are not fully graded yet (scored 0; rerun to finish)",
                system.name
            ));
        }
        row
    }
}

/// The last record per (system, task).
fn latest_answers(records: Vec<Record>) -> HashMap<(String, String), Record> {
    records
        .into_iter()
        .map(|r| ((r.system.clone(), r.task_id.clone()), r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draco::{Criterion, Rubric, Section};
    use crate::store::Appender;
    use quorate_api::Usage;
    use quorate_config::Config;

    fn task() -> Task {
        let c = |id: &str, weight| Criterion {
            id: id.into(),
            weight,
            requirement: format!("r {id}"),
        };
        Task {
            id: "t1".into(),
            domain: "Law".into(),
            problem: "q".into(),
            rubric: Rubric {
                id: "r".into(),
                sections: vec![
                    Section {
                        id: "factual-accuracy".into(),
                        title: "F".into(),
                        criteria: vec![c("a", 10), c("flaw", -5)],
                    },
                    Section {
                        id: "citation-quality".into(),
                        title: "C".into(),
                        criteria: vec![c("b", 10)],
                    },
                ],
            },
        }
    }

    #[tokio::test]
    async fn passes_average_and_missing_tasks_score_zero() {
        let out = std::env::temp_dir().join(format!("quorate-draco-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let system = System::parse("s=m/x").unwrap();
        let answer = Record {
            system: "s".into(),
            task_id: "t1".into(),
            answer: Answer {
                content: Some("an answer".into()),
                ..Answer::default()
            },
            flags: vec![],
        };
        Appender::open(&out.join("answers.jsonl"))
            .unwrap()
            .append(&answer)
            .unwrap();
        let verdicts = Appender::open(&out.join("verdicts.jsonl")).unwrap();
        // Pass 0: a and b met, no flaw → 20/20 = 1. Pass 1: a met, flaw met → 5/20 = 0.25.
        let statuses = [
            (0, "factual-accuracy/a", Status::Met),
            (0, "factual-accuracy/flaw", Status::Unmet),
            (0, "citation-quality/b", Status::Met),
            (1, "factual-accuracy/a", Status::Met),
            (1, "factual-accuracy/flaw", Status::Met),
            (1, "citation-quality/b", Status::Error),
        ];
        for (pass, criterion, status) in statuses {
            verdicts
                .append(&Verdict {
                    system: "s".into(),
                    task_id: "t1".into(),
                    pass,
                    criterion: criterion.into(),
                    status,
                    explanation: String::new(),
                    usage: Usage::default(),
                })
                .unwrap();
        }
        let mut other = task();
        other.id = "t2".into();
        let run = DracoRun {
            tasks: vec![task(), other],
            systems: vec![system],
            settings: Settings::default(),
            grader: Grader {
                router: quorate_providers::Router::new(Config::builtin()).unwrap(),
                model: "m/x".into(),
                temperature: 0.2,
            },
            passes: 2,
            excluded_domains: vec![],
            concurrency: 1,
            out: out.clone(),
            report_only: true,
        };
        let summary = run.report().unwrap();
        let row = &summary.rows[0];
        // t1: (1 + 0.25) / 2 = 0.625; t2 was never answered: 0.
        assert!((row.score - 0.3125).abs() < 1e-12, "{row:?}");
        // Factual: pass 0 10/10, pass 1 (10 - 5)/10 → 0.75 for t1, 0 for t2.
        assert!((row.axes["factual-accuracy"] - 0.375).abs() < 1e-12);
        // Citation: 1 then 0 (the grader error counts as UNMET) → 0.5, and 0.
        assert!((row.axes["citation-quality"] - 0.25).abs() < 1e-12);
        // Right-way criteria: pass 0 all 3, pass 1 only a → 4 of 6.
        assert!((row.pass_rate.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(row.failed, ["t2 (not answered)"]);
        assert!(summary
            .notes
            .iter()
            .any(|n| n.contains("1 criteria got no valid verdict")));
        let _ = std::fs::remove_dir_all(&out);
    }
}
