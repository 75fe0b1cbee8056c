//! The systems a run compares, named on the command line as `NAME=SPEC`: a model id (`solo`),
//! `fusion:<preset>` or `fusion:m1,m2,m3>synth`, either with `?strategy=fuse|vote|…`, or
//! `vote:m1,m2,m3` (short for `fusion:m1,m2,m3>m1?strategy=vote`: the majority of the members'
//! final answers, ties fused by the first member). Any spec may end in `?temperature=T` (with
//! `&` after a strategy): that system samples at `T` instead of the run's `--temperature`, so a
//! greedy solo answer can be paired with a sampled panel in one run. Each answers in-process,
//! through the same router and pipeline the server uses.

use std::time::Instant;

use anyhow::{bail, Context};
use quorate_api::request::TEMPERATURES;
use quorate_api::{ChatCompletion, Message, ModelRequest, Role, Usage};
use quorate_config::{Config, Strategy};
use quorate_fusion::{
    collect, Fusion, KeptAnswer, MemberStatus, PanelCache, Plan, PlanBuilder, RunOutcome,
};
use quorate_providers::RequestCtx;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Solo(String),
    Fusion {
        preset: Option<String>,
        panel: Vec<String>,
        synthesizer: Option<String>,
        /// `None`: the preset's.
        strategy: Option<Strategy>,
        /// `auto`'s members in agreement; `None`: the preset's.
        exit_quorum: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct System {
    pub name: String,
    pub spec: String,
    pub kind: Kind,
    /// `?temperature=T`: this system's sampling temperature instead of the run's.
    pub temperature: Option<f64>,
}

const OPTIONS: &str = "strategy, temperature, exit_quorum";

/// The `?key=value&…` options a spec ends with.
#[derive(Debug, Default, PartialEq)]
struct Options {
    strategy: Option<Strategy>,
    temperature: Option<f64>,
    exit_quorum: Option<usize>,
}

impl Options {
    fn parse(name: &str, query: &str) -> anyhow::Result<Self> {
        let mut options = Self::default();
        let mut seen = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&key) {
                bail!("system {name}: option {key:?} is given twice");
            }
            seen.push(key);
            match key {
                "strategy" => options.strategy = Some(parse_strategy(name, value)?),
                "temperature" => options.temperature = Some(parse_temperature(name, value)?),
                "exit_quorum" => options.exit_quorum = Some(parse_count(name, key, value)?),
                "" => bail!("system {name}: an empty option ({OPTIONS})"),
                other => bail!("system {name}: unknown option {other:?} ({OPTIONS})"),
            }
        }
        Ok(options)
    }
}

impl System {
    /// `NAME=SPEC`, or a bare `SPEC` named after itself.
    pub fn parse(arg: &str) -> anyhow::Result<Self> {
        let (name, spec) = match arg.split_once('=') {
            // A spec's own `=` (`?strategy=vote`, `m?temperature=0`) comes after a `:` or a
            // `?`; a name has neither.
            Some((name, spec)) if !name.is_empty() && !name.contains([':', '?']) => {
                (name.to_string(), spec.to_string())
            }
            _ => (arg.to_string(), arg.to_string()),
        };
        let list = |text: &str| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect()
        };
        let (base, options) = match spec.split_once('?') {
            Some((base, query)) => (base, Options::parse(&name, query)?),
            None => (spec.as_str(), Options::default()),
        };
        let kind = if let Some(rest) = base.strip_prefix("fusion:") {
            let (preset, panel, synthesizer) = match rest.split_once('>') {
                Some((panel, synth)) => (None, list(panel), Some(synth.trim().to_string())),
                None if rest.contains(',') => (None, list(rest), None),
                None => (Some(rest.to_string()), Vec::new(), None),
            };
            Kind::Fusion {
                preset,
                panel,
                synthesizer,
                strategy: options.strategy,
                exit_quorum: options.exit_quorum,
            }
        } else if let Some(rest) = base.strip_prefix("vote:") {
            let panel = list(rest);
            if panel.len() < 2 {
                bail!("system {name}: vote needs at least 2 models, got {spec:?}");
            }
            if options.strategy.is_some_and(|s| s != Strategy::Vote) {
                bail!("system {name}: a vote: spec is the vote strategy; use fusion: for others");
            }
            if options.exit_quorum.is_some() {
                bail!("system {name}: exit_quorum is for the auto strategy, not a vote: spec");
            }
            Kind::Fusion {
                preset: None,
                synthesizer: panel.first().cloned(),
                panel,
                strategy: Some(Strategy::Vote),
                exit_quorum: None,
            }
        } else if options.strategy.is_some() || options.exit_quorum.is_some() {
            bail!("system {name}: a strategy or exit_quorum needs a fusion spec, got {spec:?}");
        } else {
            Kind::Solo(base.to_string())
        };
        match &kind {
            Kind::Fusion {
                preset: None,
                panel,
                ..
            } if panel.is_empty() => bail!("system {name}: fusion needs a preset or a panel"),
            Kind::Solo(m) if m.is_empty() => bail!("system {name}: empty model id"),
            _ => {}
        }
        Ok(Self {
            name,
            spec,
            kind,
            temperature: options.temperature,
        })
    }

    /// The run's settings as this system samples them.
    fn settings(&self, run: &Settings) -> Settings {
        Settings {
            temperature: self.temperature.or(run.temperature),
            ..run.clone()
        }
    }

    /// `solo`, the strategy a fusion system asks for, or `fusion` (its preset's).
    pub fn kind_label(&self) -> &'static str {
        match &self.kind {
            Kind::Solo(_) => "solo",
            Kind::Fusion {
                strategy: Some(s), ..
            } => s.as_str(),
            Kind::Fusion { .. } => "fusion",
        }
    }

    /// Refuses, before any question is asked, what every question would fail on: a preset or
    /// model the config does not know, or a fusion request the pipeline would reject.
    pub fn check(&self, config: &Config, settings: &Settings) -> anyhow::Result<()> {
        if let Kind::Fusion {
            preset: Some(preset),
            ..
        } = &self.kind
        {
            if !config.presets.contains_key(preset) {
                let known: Vec<&str> = config.presets.keys().map(String::as_str).collect();
                bail!(
                    "system {}: unknown fusion preset {preset:?} (presets: {})",
                    self.name,
                    known.join(", ")
                );
            }
        }
        let probe = vec![Message::new(Role::User, "?")];
        match self.fusion_request(probe, 0, &self.settings(settings)) {
            // The plan checks the request's own models; the preset's were checked on config load.
            Some((_, req)) => Plan::from_request(config, &req)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("system {}: {e}", self.name)),
            None => self.models(config).iter().try_for_each(|model| {
                config
                    .check_inner_model(model)
                    .map_err(|e| anyhow::anyhow!("system {}: {e}", self.name))
            }),
        }
    }

    /// The model slug and request a fusion system sends for `messages`: the preset's slug, and a
    /// plugin with the explicit panel, synthesizer and shared settings. `None` for other kinds.
    fn fusion_request(
        &self,
        messages: Vec<Message>,
        seed: u64,
        settings: &Settings,
    ) -> Option<(String, ModelRequest)> {
        let Kind::Fusion {
            preset,
            panel,
            synthesizer,
            strategy,
            exit_quorum,
        } = &self.kind
        else {
            return None;
        };
        let model = match preset {
            Some(p) => format!("quorate/fusion:{p}"),
            None => "quorate/fusion".to_string(),
        };
        let mut req = request(&model, messages, seed, settings);
        req.temperature = None;
        req.max_tokens = None;
        let plan = PlanBuilder {
            tools: Some(settings.tools.clone().unwrap_or(json!([]))),
            analysis_models: (!panel.is_empty()).then(|| panel.clone()),
            model: synthesizer.clone(),
            temperature: settings.temperature,
            max_completion_tokens: settings.max_tokens,
            strategy: *strategy,
            exit_quorum: *exit_quorum,
            ..PlanBuilder::default()
        };
        req.plugins = vec![plan.to_plugin()];
        Some((model, req))
    }

    /// Every model the system calls (to fetch local models before the run).
    pub fn models(&self, config: &Config) -> Vec<String> {
        match &self.kind {
            Kind::Solo(m) => vec![m.clone()],
            Kind::Fusion {
                preset,
                panel,
                synthesizer,
                ..
            } => {
                let mut out = panel.clone();
                out.extend(synthesizer.clone());
                let name = preset.as_deref().unwrap_or_else(|| config.default_preset());
                if let Some(p) = config.presets.get(name) {
                    if panel.is_empty() {
                        out.extend(p.panel.clone());
                    }
                    out.extend(p.judge.clone());
                    out.push(p.synthesizer.clone());
                }
                out
            }
        }
    }
}

fn parse_count(name: &str, key: &str, text: &str) -> anyhow::Result<usize> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("system {name}: {key} must be a whole number, got {text:?}"))
}

fn parse_strategy(name: &str, text: &str) -> anyhow::Result<Strategy> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("system {name}: {e}"))
}

/// 0 to 2, as the API takes it (`-0` read as 0: the same request, the same kept answers).
fn parse_temperature(name: &str, text: &str) -> anyhow::Result<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|t| TEMPERATURES.contains(t))
        .map(|t| t + 0.0)
        .with_context(|| {
            let (low, high) = (TEMPERATURES.start(), TEMPERATURES.end());
            format!(
                "system {name}: temperature must be a number from {low} to {high}, got {text:?}"
            )
        })
}

/// `(name, spec)` of each system, for the run manifest.
pub fn specs(systems: &[System]) -> Vec<(String, String)> {
    systems
        .iter()
        .map(|s| (s.name.clone(), s.spec.clone()))
        .collect()
}

/// How every system is asked, so that their answers compare.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Sampling temperature of solo answers, vote members and the fusion panel alike, for
    /// systems without their own (`?temperature=`).
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Research tools (`[{"type": "web_search", "parameters": {...}}, ...]`); `None`: no research.
    pub tools: Option<Value>,
}

/// A system's answer to one task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    pub content: Option<String>,
    pub error: Option<String>,
    pub usage: Usage,
    pub latency_ms: u64,
    /// Every URL the system retrieved while researching.
    pub sources: Vec<String>,
    /// The members' own answers (vote and fusion panels), in slot order.
    pub members: Vec<Option<String>>,
    /// Fusion: the judge's analysis and why it failed, if it did (for reading transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Value>,
    /// `auto` that stopped early: the tokens the cancelled members, the judge and the
    /// synthesis would have cost (estimated from the run's own counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_tokens: Option<u64>,
}

/// Asks `system`. Slot `i` of a panel or vote samples with `seed + i`, and a solo answer with
/// `seed`: with one model everywhere, the solo answer is the panel's first member.
pub async fn answer(
    fusion: &Fusion,
    system: &System,
    messages: Vec<Message>,
    seed: u64,
    settings: &Settings,
) -> Answer {
    let started = Instant::now();
    let ctx = RequestCtx::new(format!("eval-{}-{seed}", system.name));
    let settings = &system.settings(settings);
    let result = match &system.kind {
        Kind::Solo(model) => solo(fusion, &ctx, model, messages, seed, settings).await,
        Kind::Fusion { .. } => fused(fusion, &ctx, system, messages, seed, settings).await,
    };
    let mut answer = result.unwrap_or_else(|e| Answer {
        error: Some(format!("{e:#}")),
        ..Answer::default()
    });
    // A replayed panel answer set the time it took when it was made: added to this run's own.
    answer.latency_ms += started.elapsed().as_millis() as u64;
    answer
}

fn request(model: &str, messages: Vec<Message>, seed: u64, settings: &Settings) -> ModelRequest {
    let mut req = ModelRequest::new(model, messages);
    req.temperature = settings.temperature;
    req.max_tokens = settings.max_tokens;
    req.seed = Some(seed as i64);
    req
}

async fn solo(
    fusion: &Fusion,
    ctx: &RequestCtx,
    model: &str,
    messages: Vec<Message>,
    seed: u64,
    settings: &Settings,
) -> anyhow::Result<Answer> {
    let mut req = request(model, messages, seed, settings);
    if let Some(Value::Array(tools)) = &settings.tools {
        // A solo model researches with the same tools, as server tools.
        let server: Vec<Value> = tools
            .iter()
            .filter_map(|t| {
                let mut t = t.clone();
                let kind = t.get("type")?.as_str()?.to_string();
                t["type"] = json!(format!("quorate:{kind}"));
                Some(t)
            })
            .collect();
        req.tools = server;
    }
    if let (Some(cache), true) = (fusion.panel_cache(), req.tools.is_empty()) {
        return kept_solo(fusion, ctx, cache.as_ref(), req).await;
    }
    let completion = match fusion.research_plan(&req)? {
        Some(plan) => collect(fusion.run_research(ctx, plan, req), model.to_string()).await?,
        None => fusion.router().complete(ctx, &req).await?,
    };
    let research = completion.extra.get("research").cloned();
    let mut answer = from_completion(&completion);
    answer.sources = urls(research.as_ref().map(|r| &r["sources"]));
    Ok(answer)
}

/// A solo answer from the panel cache: the same request as the first member's, so the same
/// answer.
async fn kept_solo(
    fusion: &Fusion,
    ctx: &RequestCtx,
    cache: &dyn PanelCache,
    req: ModelRequest,
) -> anyhow::Result<Answer> {
    let key = quorate_fusion::panel_key(&req);
    // What a fresh answer gave when it is not kept (a failure, an empty answer).
    let mut unkept = None;
    let fresh = async {
        let started = Instant::now();
        match fusion
            .router()
            .complete(ctx, &req)
            .await
            .map(|c| from_completion(&c))
        {
            Ok(Answer {
                content: Some(content),
                usage,
                ..
            }) if !content.trim().is_empty() => Some(KeptAnswer {
                content,
                usage,
                latency_ms: started.elapsed().as_millis() as u64,
            }),
            other => {
                unkept = Some(other);
                None
            }
        }
    };
    match (cache.answer(key, Box::pin(fresh)).await, unkept) {
        (Some(kept), _) => Ok(Answer {
            content: Some(kept.content),
            usage: kept.usage,
            latency_ms: kept.latency_ms,
            ..Answer::default()
        }),
        (None, Some(result)) => Ok(result?),
        (None, None) => bail!("the panel cache gave no answer and asked for none"),
    }
}

async fn fused(
    fusion: &Fusion,
    ctx: &RequestCtx,
    system: &System,
    messages: Vec<Message>,
    seed: u64,
    settings: &Settings,
) -> anyhow::Result<Answer> {
    let Some((model, req)) = system.fusion_request(messages, seed, settings) else {
        bail!("not a fusion system");
    };
    let plan = fusion
        .plan(ctx, &req)?
        .context("the fusion spec did not make a fusion request")?;
    let outcome = RunOutcome::read(fusion.run(ctx, plan, req)).await?;
    let report = outcome
        .report
        .clone()
        .context("the fusion run ended without a report")?;
    let completion = outcome.into_completion(model)?;
    let mut answer = from_completion(&completion);
    answer.members = report.panel.iter().map(|m| m.content.clone()).collect();
    answer.sources = report
        .panel
        .iter()
        .flat_map(|m| m.sources.iter().map(|s| s.url.clone()))
        .collect();
    answer.judge = Some(json!({"analysis": report.analysis,
        "failure_reason": report.failure_reason}));
    answer.saved_tokens = report
        .agreement
        .as_ref()
        .filter(|a| a.agreed)
        .map(|a| a.saved.prompt_tokens + a.saved.completion_tokens);
    // Replayed members finish at once but report when they first did: the panel took as long
    // as the slowest member the run waited for.
    let waited = report
        .panel
        .iter()
        .filter(|m| m.status != MemberStatus::Cancelled)
        .map(|m| m.latency_ms)
        .max()
        .unwrap_or_default();
    answer.latency_ms = waited.saturating_sub(report.timings.panel_ms);
    Ok(answer)
}

fn from_completion(completion: &ChatCompletion) -> Answer {
    Answer {
        content: completion.choices.first().map(|c| c.message.text()),
        usage: completion.usage.clone().unwrap_or_default(),
        ..Answer::default()
    }
}

fn urls(sources: Option<&Value>) -> Vec<String> {
    sources
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| s["url"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_presets_and_models_are_refused_before_the_run() {
        let config = Config::builtin();
        assert!(System::parse("f=fusion:local")
            .unwrap()
            .check(&config, &Settings::default())
            .is_ok());
        let e = System::parse("f=fusion:nope")
            .unwrap()
            .check(&config, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("system f: unknown fusion preset \"nope\"") && e.contains("local"),
            "{e}"
        );
        let e = System::parse("v=vote:local/smollm2-135m,ghost/x")
            .unwrap()
            .check(&config, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ghost/x"), "{e}");
        let nine = ["local/smollm2-135m"; 9].join(",");
        let e = System::parse(&format!("f=fusion:{nine}>local/smollm2-135m"))
            .unwrap()
            .check(&config, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 to 8 models, got 9"), "{e}");
        let e = System::parse("f=fusion:local?strategy=fuse&exit_quorum=3")
            .unwrap()
            .check(&config, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exit_quorum: applies to the \"auto\" strategy"),
            "{e}"
        );
    }

    #[test]
    fn specs_parse_into_systems() {
        let s = System::parse("solo=local/smollm2-135m").unwrap();
        assert_eq!(
            (s.name.as_str(), s.kind.clone()),
            ("solo", Kind::Solo("local/smollm2-135m".into()))
        );
        let s = System::parse("fusion:local").unwrap();
        assert_eq!(s.name, "fusion:local");
        assert_eq!(
            s.kind,
            Kind::Fusion {
                preset: Some("local".into()),
                panel: vec![],
                synthesizer: None,
                strategy: None,
                exit_quorum: None
            }
        );
        let s = System::parse("f=fusion:a/x, b/y,c/z>a/x").unwrap();
        assert_eq!(
            s.kind,
            Kind::Fusion {
                preset: None,
                panel: vec!["a/x".into(), "b/y".into(), "c/z".into()],
                synthesizer: Some("a/x".into()),
                strategy: None,
                exit_quorum: None
            }
        );
        assert_eq!(
            System::parse("v=vote:m,n,m").unwrap().kind,
            Kind::Fusion {
                preset: None,
                panel: vec!["m".into(), "n".into(), "m".into()],
                synthesizer: Some("m".into()),
                strategy: Some(Strategy::Vote),
                exit_quorum: None
            }
        );
        let s = System::parse("fusion:local?strategy=vote").unwrap();
        assert_eq!(
            (s.kind_label(), s.name.as_str()),
            ("vote", "fusion:local?strategy=vote")
        );
        assert!(System::parse("fusion:local?strategy=guess").is_err());
        let s = System::parse("all=fusion:local?strategy=auto&exit_quorum=3").unwrap();
        assert!(matches!(
            s.kind,
            Kind::Fusion {
                strategy: Some(Strategy::Auto),
                exit_quorum: Some(3),
                ..
            }
        ));
        let s = System::parse("fuse=fusion:local?strategy=fuse&temperature=0.2").unwrap();
        assert_eq!(
            (s.kind_label(), s.temperature, s.spec.as_str()),
            (
                "fuse",
                Some(0.2),
                "fusion:local?strategy=fuse&temperature=0.2"
            )
        );
        let s = System::parse("greedy=local/m?temperature=0").unwrap();
        assert_eq!(
            (s.kind.clone(), s.temperature),
            (Kind::Solo("local/m".into()), Some(0.0))
        );
        let run = Settings {
            temperature: Some(0.4),
            max_tokens: Some(9),
            tools: None,
        };
        let own = s.settings(&run);
        assert_eq!((own.temperature, own.max_tokens), (Some(0.0), Some(9)));
        let bare = System::parse("local/m?temperature=-0").unwrap();
        assert_eq!(
            (bare.name.as_str(), bare.kind.clone(), bare.temperature),
            (
                "local/m?temperature=-0",
                Kind::Solo("local/m".into()),
                Some(0.0)
            )
        );
        assert!(bare.temperature.unwrap().is_sign_positive());
        let plain = System::parse("solo=local/m").unwrap();
        assert_eq!(plain.settings(&run).temperature, Some(0.4));
        for (spec, says) in [
            (
                "g=local/m?temperature=3",
                "temperature must be a number from 0 to 2, got \"3\"",
            ),
            (
                "g=local/m?temperature=",
                "temperature must be a number from 0 to 2",
            ),
            (
                "g=local/m?top_p=1",
                "unknown option \"top_p\" (strategy, temperature, exit_quorum)",
            ),
            (
                "g=local/m?strategy=vote",
                "a strategy or exit_quorum needs a fusion",
            ),
            (
                "g=local/m?exit_quorum=2",
                "a strategy or exit_quorum needs a fusion",
            ),
            (
                "g=fusion:local?strategy=auto&exit_quorum=all",
                "exit_quorum must be a whole number, got \"all\"",
            ),
            (
                "g=vote:a,b?strategy=fuse",
                "a vote: spec is the vote strategy",
            ),
            (
                "g=vote:a,b?exit_quorum=2",
                "exit_quorum is for the auto strategy",
            ),
            (
                "g=local/m?temperature=0&temperature=1",
                "option \"temperature\" is given twice",
            ),
            ("g=local/m?", "an empty option"),
        ] {
            let e = System::parse(spec).unwrap_err().to_string();
            assert!(
                e.starts_with("system g: ") && e.contains(says),
                "{spec}: {e}"
            );
        }
        assert!(System::parse("v=vote:m").is_err());
        assert!(System::parse("x=").is_err());
    }
}
