//! The report of a run: `summary.json` (every figure, scores as fractions in [0, 1]), `report.md`
//! and a self-contained `report.html` with SVG charts: score per system with its interval, and
//! score against cost (the Pareto view).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::stats;
use crate::system::{Answer, System};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// Sum over answers: the time the system took, one answer after another.
    pub total_s: f64,
}

/// One system's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub spec: String,
    pub kind: String,
    /// Tasks scored.
    pub n: usize,
    pub score: f64,
    /// 95% bootstrap interval over tasks.
    pub ci: [f64; 2],
    /// Per-axis scores (DRACO sections), as fractions.
    pub axes: BTreeMap<String, f64>,
    pub pass_rate: Option<f64>,
    /// Tasks the system failed (an error, or nothing to grade), scored 0 and listed here.
    pub failed: Vec<String>,
    /// Answers given but with nothing usable in them (no option letter, no number).
    pub unanswered: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub latency: Latency,
    /// What grading this system's answers cost (DRACO).
    pub grading_cost_usd: Option<f64>,
    /// `auto`: the share of answers where the panel agreed early, and the tokens that saved
    /// (estimated from each run's own counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_exits: Option<f64>,
    #[serde(default)]
    pub saved_tokens: u64,
}

/// One system against a baseline on the questions both answered: the difference of their
/// scores with a paired bootstrap interval, and McNemar's exact test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    pub system: String,
    pub baseline: String,
    pub n: usize,
    /// Mean of (system − baseline), as a fraction.
    pub diff: f64,
    /// 95% bootstrap interval of `diff`, resampling questions (pairs stay together).
    pub ci: [f64; 2],
    /// Questions only the system got right, and only the baseline.
    pub wins: usize,
    pub losses: usize,
    pub p_value: f64,
}

impl Paired {
    /// `outcomes`: (system right, baseline right) per question.
    pub fn new(system: &str, baseline: &str, outcomes: &[(bool, bool)]) -> Self {
        let diffs: Vec<f64> = outcomes
            .iter()
            .map(|&(a, b)| f64::from(u8::from(a)) - f64::from(u8::from(b)))
            .collect();
        let (lo, hi) = stats::bootstrap_ci(&diffs);
        let wins = outcomes.iter().filter(|&&(a, b)| a && !b).count();
        let losses = outcomes.iter().filter(|&&(a, b)| !a && b).count();
        Self {
            system: system.to_string(),
            baseline: baseline.to_string(),
            n: outcomes.len(),
            diff: stats::mean(&diffs),
            ci: [lo, hi],
            wins,
            losses,
            p_value: stats::mcnemar_exact(wins, losses),
        }
    }
}

impl Row {
    /// A row scored from per-task scores in [0, 1].
    pub fn new(system: &System, scores: &[f64]) -> Self {
        let (lo, hi) = stats::bootstrap_ci(scores);
        Self {
            system: system.name.clone(),
            spec: system.spec.clone(),
            kind: system.kind_label().to_string(),
            n: scores.len(),
            score: stats::mean(scores),
            ci: [lo, hi],
            axes: BTreeMap::new(),
            pass_rate: None,
            failed: Vec::new(),
            unanswered: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            latency: Latency {
                p50_ms: 0.0,
                p90_ms: 0.0,
                total_s: 0.0,
            },
            grading_cost_usd: None,
            early_exits: None,
            saved_tokens: 0,
        }
    }

    /// Tokens, cost, latency and failures from the system's answers.
    pub fn add_answers<'a>(&mut self, answers: impl Iterator<Item = (&'a String, &'a Answer)>) {
        let mut latencies = Vec::new();
        let mut early = 0;
        for (id, answer) in answers {
            if let Some(saved) = answer.saved_tokens {
                early += 1;
                self.saved_tokens += saved;
            }
            self.prompt_tokens += answer.usage.prompt_tokens;
            self.completion_tokens += answer.usage.completion_tokens;
            self.cost_usd += answer
                .usage
                .cost
                .and_then(|c| c.to_f64())
                .unwrap_or_default();
            latencies.push(answer.latency_ms as f64);
            let empty = answer
                .content
                .as_deref()
                .is_none_or(|c| c.trim().is_empty());
            if answer.error.is_some() || empty {
                self.failed.push(id.clone());
            }
        }
        if self.kind == "auto" && !latencies.is_empty() {
            self.early_exits = Some(f64::from(early) / latencies.len() as f64);
        }
        self.latency = Latency {
            p50_ms: stats::percentile(&latencies, 50.0),
            p90_ms: stats::percentile(&latencies, 90.0),
            // `+ 0.0`: an empty sum is -0.0, which would print as "-0".
            total_s: latencies.iter().sum::<f64>() / 1000.0 + 0.0,
        };
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub benchmark: String,
    /// What `score` measures: `accuracy` (QA) or `rubric score` (DRACO).
    pub metric: String,
    /// Tasks or questions in the run.
    pub questions: usize,
    pub rows: Vec<Row>,
    /// Findings worth a reader's eye (contamination flags, grading errors).
    pub notes: Vec<String>,
    /// Each system against each solo baseline, the vote baseline and the fuse baseline (QA).
    #[serde(default)]
    pub paired: Vec<Paired>,
}

pub fn write(out: &Path, summary: &Summary) -> anyhow::Result<()> {
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    std::fs::write(out.join("report.md"), markdown(summary))?;
    std::fs::write(out.join("report.html"), html(summary))?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn axes(summary: &Summary) -> Vec<String> {
    let mut names: Vec<String> = summary
        .rows
        .iter()
        .flat_map(|r| r.axes.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The table's header and rows as cells, shared by both formats.
fn table(summary: &Summary) -> (Vec<String>, Vec<Vec<String>>) {
    let axes = axes(summary);
    let with_pass = summary.rows.iter().any(|r| r.pass_rate.is_some());
    let mut header = vec![
        "System".to_string(),
        "Type".into(),
        format!("{} % (95% CI)", capitalize(&summary.metric)),
    ];
    header.extend(axes.iter().map(|a| format!("{a} %")));
    if with_pass {
        header.push("Pass rate %".into());
    }
    header.extend(
        [
            "n",
            "Failed",
            "Cost $",
            "Tokens in/out",
            "Latency p50 / p90 s",
            "Time s",
        ]
        .map(String::from),
    );
    let with_exits = summary.rows.iter().any(|r| r.early_exits.is_some());
    if with_exits {
        header.push("Early exits % / tokens saved".into());
    }
    let rows = summary
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                format!("{} (`{}`)", r.system, r.spec),
                r.kind.clone(),
                format!("{} ({}–{})", pct(r.score), pct(r.ci[0]), pct(r.ci[1])),
            ];
            cells.extend(
                axes.iter()
                    .map(|a| r.axes.get(a).map_or("–".into(), |v| pct(*v))),
            );
            if with_pass {
                cells.push(r.pass_rate.map_or("–".into(), pct));
            }
            cells.extend([
                r.n.to_string(),
                r.failed.len().to_string(),
                format!("{:.4}", r.cost_usd),
                format!("{} / {}", r.prompt_tokens, r.completion_tokens),
                format!(
                    "{:.1} / {:.1}",
                    r.latency.p50_ms / 1000.0,
                    r.latency.p90_ms / 1000.0
                ),
                format!("{:.0}", r.latency.total_s),
            ]);
            if with_exits {
                cells.push(r.early_exits.map_or("–".into(), |share| {
                    format!("{} / {}", pct(share), r.saved_tokens)
                }));
            }
            cells
        })
        .collect();
    (header, rows)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// "draco — 100 tasks", "gsm8k — 400 questions".
fn title(summary: &Summary) -> String {
    let unit = if summary.benchmark == "draco" {
        "tasks"
    } else {
        "questions"
    };
    format!("{} — {} {unit}", summary.benchmark, summary.questions)
}

pub fn markdown(summary: &Summary) -> String {
    let (header, rows) = table(summary);
    let mut out = format!(
        "# {}\n\n| {} |\n|{}|\n",
        title(summary),
        header.join(" | "),
        vec!["---"; header.len()].join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    paired_markdown(summary, &mut out);
    failures_and_notes(summary, &mut out, |s| format!("- {s}\n"));
    out
}

/// The paired comparisons as a second table.
fn paired_markdown(summary: &Summary, out: &mut String) {
    if summary.paired.is_empty() {
        return;
    }
    out.push_str(
        "\nPaired on the same questions (Δ in points, 95% paired bootstrap interval; McNemar's \
         exact test):\n\n| System | Against | n | Δ points (95% CI) | Wins / losses | p |\n\
         |---|---|---|---|---|---|\n",
    );
    for p in &summary.paired {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:+.1} ({:+.1} to {:+.1}) | {} / {} | {:.3} |",
            p.system,
            p.baseline,
            p.n,
            p.diff * 100.0,
            p.ci[0] * 100.0,
            p.ci[1] * 100.0,
            p.wins,
            p.losses,
            p.p_value
        );
    }
}

fn failures_and_notes(summary: &Summary, out: &mut String, item: impl Fn(&str) -> String) {
    let failed: Vec<&Row> = summary
        .rows
        .iter()
        .filter(|r| !r.failed.is_empty())
        .collect();
    if !failed.is_empty() {
        out.push_str("\nFailed tasks (scored 0):\n\n");
        for r in failed {
            out.push_str(&item(&format!("{}: {}", r.system, r.failed.join(", "))));
        }
    }
    if !summary.notes.is_empty() {
        out.push_str("\nNotes:\n\n");
        for note in &summary.notes {
            out.push_str(&item(note));
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn html(summary: &Summary) -> String {
    let (header, rows) = table(summary);
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}svg{{margin:1em 1em 0 0}}\
         </style></head><body><h1>{title}</h1><table><tr>",
        title = escape(&title(summary))
    );
    for h in &header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell.replace('`', "")));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    let mut paired = String::new();
    paired_markdown(summary, &mut paired);
    if !paired.is_empty() {
        let _ = write!(out, "<pre>{}</pre>", escape(paired.trim()));
    }
    out.push_str(&bars(summary));
    out.push_str(&pareto(summary));
    let mut notes = String::new();
    failures_and_notes(summary, &mut notes, |s| format!("<li>{}</li>", escape(s)));
    out.push_str(&notes.replace("\n\n", "").replace('\n', "<br>"));
    out.push_str("</body></html>\n");
    out
}

const W: f64 = 560.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;

/// Score per system, a bar with its 95% interval as a whisker.
fn bars(summary: &Summary) -> String {
    let n = summary.rows.len().max(1) as f64;
    let slot = (W - 2.0 * PAD) / n;
    let y = |v: f64| H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut svg = svg_open(&format!("{} per system (95% CI)", summary.metric));
    svg.push_str(&axis_y(&y));
    for (i, r) in summary.rows.iter().enumerate() {
        let x = PAD + slot * i as f64 + slot * 0.2;
        let w = slot * 0.6;
        let mid = x + w / 2.0;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#4c78a8\"/>\
             <line x1=\"{mid:.1}\" x2=\"{mid:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#222\"/>\
             <text x=\"{mid:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
             <text x=\"{mid:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            y(r.score),
            y(0.0) - y(r.score),
            y(r.ci[0]),
            y(r.ci[1]),
            H - PAD + 15.0,
            escape(&r.system),
            y(r.ci[1]) - 4.0,
            pct(r.score)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Score against cost (tokens when every system was free, e.g. local models); the Pareto
/// frontier (no other system both cheaper and better) is joined.
fn pareto(summary: &Summary) -> String {
    let priced = summary.rows.iter().any(|r| r.cost_usd > 0.0);
    let cost = |r: &Row| {
        if priced {
            r.cost_usd
        } else {
            (r.prompt_tokens + r.completion_tokens) as f64
        }
    };
    let max_cost = summary.rows.iter().map(cost).fold(0.0, f64::max).max(1e-9);
    let x = |c: f64| PAD + (c / max_cost) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let (axis, top) = if priced {
        ("cost (USD)", format!("${max_cost:.4}"))
    } else {
        ("tokens (all systems free)", format!("{max_cost:.0} tokens"))
    };
    let mut svg = svg_open(&format!("{} vs {axis}", summary.metric));
    svg.push_str(&axis_y(&y));
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{top}</text>",
        W - PAD,
        H - PAD + 15.0
    );
    let mut frontier: Vec<&Row> = summary
        .rows
        .iter()
        .filter(|r| {
            !summary.rows.iter().any(|o| {
                cost(o) <= cost(r) && o.score >= r.score && (cost(o) < cost(r) || o.score > r.score)
            })
        })
        .collect();
    frontier.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
    let points: Vec<String> = frontier
        .iter()
        .map(|r| format!("{:.1},{:.1}", x(cost(r)), y(r.score)))
        .collect();
    let _ = write!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#e45756\" stroke-dasharray=\"4\"/>",
        points.join(" ")
    );
    for r in &summary.rows {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#4c78a8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            x(cost(r)),
            y(r.score),
            x(cost(r)) + 7.0,
            y(r.score) - 7.0,
            escape(&r.system)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <text x=\"{PAD}\" y=\"20\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        escape(title)
    )
}

fn axis_y(y: &impl Fn(f64) -> f64) -> String {
    let mut out = format!(
        "<line x1=\"{PAD}\" x2=\"{PAD}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
         <line x1=\"{PAD}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        y(0.0),
        y(1.0),
        W - PAD,
        y(0.0),
        y(0.0)
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}%</text>",
            PAD - 4.0,
            y(tick) + 3.0,
            tick * 100.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, score: f64, cost: f64) -> Row {
        let system = System::parse(&format!("{name}=m/{name}")).unwrap_or_else(|_| unreachable!());
        let mut r = Row::new(&system, &[score]);
        r.cost_usd = cost;
        r
    }

    #[test]
    fn reports_hold_every_row_and_the_frontier() {
        let summary = Summary {
            benchmark: "draco".into(),
            metric: "rubric score".into(),
            questions: 2,
            rows: vec![
                row("cheap", 0.4, 0.1),
                row("dear", 0.8, 1.0),
                row("bad", 0.3, 2.0),
            ],
            notes: vec!["a <note>".into()],
            paired: vec![Paired::new(
                "dear",
                "cheap",
                &[(true, false), (true, true), (false, false)],
            )],
        };
        let md = markdown(&summary);
        assert!(
            md.contains("| dear | cheap | 3 | +33.3 (") && md.contains("| 1 / 0 | 1.000 |"),
            "{md}"
        );
        assert!(
            md.contains("| cheap (`m/cheap`) | solo | 40.0 (40.0–40.0) |"),
            "{md}"
        );
        assert!(md.contains("- a <note>"));
        let page = html(&summary);
        assert!(page.contains("<svg") && page.contains("a &lt;note&gt;"));
        // The frontier joins cheap and dear, not bad.
        let line = page.split("<polyline points=\"").nth(1).unwrap_or_default();
        let points = line.split('"').next().unwrap_or_default();
        assert_eq!(points.split(' ').count(), 2, "{points}");
        assert!(page.contains("vs cost (USD)") && md.starts_with("# draco — 2 tasks"));
        // Free systems (local models) are compared on tokens instead.
        let mut free = summary.clone();
        free.benchmark = "gsm8k".into();
        for (i, r) in free.rows.iter_mut().enumerate() {
            r.cost_usd = 0.0;
            r.completion_tokens = 100 * (i as u64 + 1);
        }
        let page = html(&free);
        assert!(
            page.contains("vs tokens (all systems free)") && page.contains("gsm8k — 2 questions")
        );
    }
}
