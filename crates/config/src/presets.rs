//! Fusion presets (a panel, a judge and a synthesizer, with a run's deadlines) and the `[fusion]`
//! section.

use std::collections::BTreeMap;
use std::path::PathBuf;

use quorate_api::request::{in_range, TEMPERATURES};
use serde::{Deserialize, Serialize};

use crate::Config;

/// Model ids that mean "run the fusion pipeline"; `<slug>:<preset>` picks a preset.
pub const FUSION_SLUGS: &[&str] = &["quorate/fusion", "openrouter/fusion", "fusion"];

/// The most panel slots one run may have: each is a full completion, so cost grows with it.
pub const MAX_PANEL: usize = 8;

/// `Some(None)` for a bare fusion slug, `Some(Some(preset))` for `slug:preset`, `None` for any
/// other model id.
pub fn fusion_slug(model: &str) -> Option<Option<&str>> {
    let (base, preset) = match model.split_once(':') {
        Some((base, preset)) => (base, Some(preset)),
        None => (model, None),
    };
    FUSION_SLUGS.contains(&base).then_some(preset)
}

/// How a run makes its answer from the panel's. The names are part of the API (plugin field
/// `strategy`, preset key `strategy`, `quorate ask --strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The judge analyses the answers, the synthesizer writes one answer grounded in it.
    #[default]
    Fuse,
    /// The members' final answers (a number, an option letter, a short entity) are tallied and
    /// the majority member's answer is returned as it is; the panel stops as soon as the majority
    /// is certain. A tie, or answers with no closed form, go on to `fuse`.
    Vote,
    /// Stops as soon as `exit_quorum` members agree (a strict majority unless set; the same
    /// final answer, or prose whose word overlap reaches the preset's `agreement`), returns the
    /// most central of those answers and skips the judge and the synthesis; else goes on to
    /// `fuse`.
    Auto,
    /// The synthesizer writes the answer from the raw answers, with no judge
    /// (Mixture-of-Agents): what the judge's analysis adds is `fuse` against this.
    Mixture,
    /// The judge names the best answer (schema-enforced), returned verbatim (best-of-n); when
    /// no judge names one, `fuse`.
    Select,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Fuse,
        Strategy::Vote,
        Strategy::Auto,
        Strategy::Mixture,
        Strategy::Select,
    ];

    /// The name the API, presets and the CLI use (serde's as well).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fuse => "fuse",
            Strategy::Vote => "vote",
            Strategy::Auto => "auto",
            Strategy::Mixture => "mixture",
            Strategy::Select => "select",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown strategy {text:?} ({})", names.join(", "))
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// The preset a bare `quorate/fusion` runs. Default: `quality` when the OpenRouter key is set,
    /// else `local`.
    #[serde(default)]
    pub default_preset: Option<String>,
    /// A folder whose `<name>.j2` files replace the built-in prompt templates of the same name.
    #[serde(default)]
    pub prompts_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetConfig {
    /// The panel's models, one per slot; a model may fill several slots (self-fusion).
    pub panel: Vec<String>,
    /// The judge; defaults to the synthesizer.
    #[serde(default)]
    pub judge: Option<String>,
    /// Judges tried in turn when the judge's analysis is still invalid after a repair.
    #[serde(default)]
    pub judge_fallbacks: Vec<String>,
    pub synthesizer: String,
    /// Panel sampling temperature (the judge always runs at 0).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Output cap for each panel answer and for the synthesis.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default = "member_timeout_s")]
    pub member_timeout_s: f64,
    #[serde(default = "total_timeout_s")]
    pub total_timeout_s: f64,
    /// Members that must answer for the run to go on.
    #[serde(default = "quorum")]
    pub quorum: usize,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// `auto`: the word overlap (0 to 1) at which two prose answers count as agreeing.
    #[serde(default = "agreement")]
    pub agreement: f64,
    /// `auto`: how many members must agree for the run to stop early; a strict majority of the
    /// panel unless set. The panel's size asks for unanimity: fewer early exits, but none on a
    /// split panel whose minority may be right.
    #[serde(default)]
    pub exit_quorum: Option<usize>,
}

/// High: short answers that differ in their one key word ("Lyon is the capital of France")
/// still overlap in most of their words.
fn agreement() -> f64 {
    0.8
}

fn member_timeout_s() -> f64 {
    300.0
}

fn total_timeout_s() -> f64 {
    600.0
}

fn quorum() -> usize {
    1
}

/// The members `auto` needs in agreement when the preset and the request leave it unset.
pub fn majority(panel: usize) -> usize {
    panel / 2 + 1
}

/// An exit quorum must be a strict majority, so two groups can never both hold one.
pub fn check_exit_quorum(n: usize, panel: usize) -> Result<(), String> {
    if n < majority(panel) || n > panel {
        return Err(format!(
            "must be from {} (a strict majority of the panel) to {panel} (all of it), got {n}",
            majority(panel)
        ));
    }
    Ok(())
}

fn preset(panel: &[&str], judge: &str, synthesizer: &str, description: &str) -> PresetConfig {
    PresetConfig {
        panel: panel.iter().map(|m| m.to_string()).collect(),
        judge: Some(judge.to_string()),
        judge_fallbacks: Vec::new(),
        synthesizer: synthesizer.to_string(),
        temperature: None,
        max_completion_tokens: None,
        member_timeout_s: member_timeout_s(),
        total_timeout_s: total_timeout_s(),
        quorum: quorum(),
        description: Some(description.to_string()),
        strategy: Strategy::Fuse,
        agreement: agreement(),
        exit_quorum: None,
    }
}

/// `local` runs anywhere; `quality` and `budget` need the OpenRouter key. Each tier judges and
/// synthesizes with a model of its own tier, so a budget panel is not judged by an expensive one.
pub fn add_builtins(presets: &mut BTreeMap<String, PresetConfig>) {
    let local_model = crate::defaults::LOCAL_MODEL;
    let mut local = preset(
        &[local_model; 3],
        local_model,
        local_model,
        "Qwen2.5-Coder 1.5B fused with itself three times, in-process: no key, no network",
    );
    // Sampled a little warmer than the local default (0.2) so the three slots differ, not so
    // warm that a small model drifts off; short answers keep a CPU-only run within seconds.
    local.temperature = Some(0.4);
    local.max_completion_tokens = Some(200);
    local.total_timeout_s = 900.0;
    presets.insert("local".into(), local);
    let opus = "openrouter/~anthropic/claude-opus-latest";
    presets.insert(
        "quality".into(),
        preset(
            &[
                opus,
                "openrouter/~openai/gpt-latest",
                "openrouter/~google/gemini-pro-latest",
            ],
            opus,
            opus,
            "Claude Opus, GPT and Gemini Pro, judged and synthesized by Claude Opus (OpenRouter)",
        ),
    );
    let flash = "openrouter/~google/gemini-flash-latest";
    let deepseek = "openrouter/deepseek/deepseek-v4-pro";
    presets.insert(
        "budget".into(),
        preset(
            &[flash, "openrouter/moonshotai/kimi-k2.6", deepseek],
            flash,
            deepseek,
            "Gemini Flash, Kimi and DeepSeek, judged by Gemini Flash, synthesized by DeepSeek (OpenRouter)",
        ),
    );
}

impl Config {
    /// The preset a bare fusion slug runs.
    pub fn default_preset(&self) -> &str {
        if let Some(name) = &self.fusion.default_preset {
            return name;
        }
        let openrouter_key = self
            .providers
            .get("openrouter")
            .and_then(|p| p.api_key_env.as_deref())
            .and_then(std::env::var_os)
            .is_some_and(|v| !v.is_empty());
        if openrouter_key {
            "quality"
        } else {
            "local"
        }
    }

    pub(crate) fn validate_fusion(&self) -> Result<(), (String, String)> {
        if let Some(name) = &self.fusion.default_preset {
            if !self.presets.contains_key(name) {
                return Err((
                    "fusion.default_preset".into(),
                    format!("unknown preset {name:?}"),
                ));
            }
        }
        if let Some(dir) = &self.fusion.prompts_dir {
            if !dir.is_dir() {
                return Err((
                    "fusion.prompts_dir".into(),
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        for (name, p) in &self.presets {
            self.validate_preset(p)
                .map_err(|(k, m)| (format!("presets.{name}.{k}"), m))?;
        }
        Ok(())
    }

    fn validate_preset(&self, p: &PresetConfig) -> Result<(), (String, String)> {
        if p.panel.is_empty() || p.panel.len() > MAX_PANEL {
            return Err((
                "panel".into(),
                format!("1 to {MAX_PANEL} models, got {}", p.panel.len()),
            ));
        }
        for (i, model) in p.panel.iter().enumerate() {
            self.check_inner_model(model)
                .map_err(|m| (format!("panel[{i}]"), m))?;
        }
        if let Some(judge) = &p.judge {
            self.check_inner_model(judge)
                .map_err(|m| ("judge".into(), m))?;
        }
        for (i, model) in p.judge_fallbacks.iter().enumerate() {
            self.check_inner_model(model)
                .map_err(|m| (format!("judge_fallbacks[{i}]"), m))?;
        }
        self.check_inner_model(&p.synthesizer)
            .map_err(|m| ("synthesizer".into(), m))?;
        if p.quorum == 0 || p.quorum > p.panel.len() {
            return Err((
                "quorum".into(),
                format!("must be 1 to the panel size ({})", p.panel.len()),
            ));
        }
        if !(p.agreement > 0.0 && p.agreement <= 1.0) {
            return Err(("agreement".into(), "must be in (0, 1]".into()));
        }
        if let Some(n) = p.exit_quorum {
            check_exit_quorum(n, p.panel.len()).map_err(|e| ("exit_quorum".into(), e))?;
        }
        if !(p.total_timeout_s > 0.0 && p.total_timeout_s <= 3600.0) {
            return Err(("total_timeout_s".into(), "must be in (0, 3600]".into()));
        }
        if !(p.member_timeout_s > 0.0 && p.member_timeout_s <= p.total_timeout_s) {
            return Err((
                "member_timeout_s".into(),
                "must be in (0, total_timeout_s]".into(),
            ));
        }
        in_range(p.temperature, TEMPERATURES).map_err(|e| ("temperature".into(), e))?;
        if p.max_completion_tokens == Some(0) {
            return Err(("max_completion_tokens".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// A model a fusion stage may call: a routable model, and never fusion itself.
    pub fn check_inner_model(&self, model: &str) -> Result<(), String> {
        if fusion_slug(model).is_some() {
            return Err(format!(
                "{model:?} is fusion itself; a stage needs an ordinary model"
            ));
        }
        if self.resolve(model).is_none() {
            return Err(format!("unknown model {model:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_presets() {
        assert_eq!(fusion_slug("quorate/fusion"), Some(None));
        assert_eq!(
            fusion_slug("openrouter/fusion:budget"),
            Some(Some("budget"))
        );
        assert_eq!(fusion_slug("fusion"), Some(None));
        assert_eq!(fusion_slug("openrouter/openai/gpt-4o"), None);
        let config = Config::builtin();
        assert!(config.validate_fusion().is_ok());
        assert_eq!(config.presets["local"].panel.len(), 3);
    }

    #[test]
    fn strategy_names_are_serdes_and_parse_back() {
        for s in Strategy::ALL {
            assert_eq!(
                toml::Value::try_from(s).unwrap(),
                toml::Value::String(s.as_str().into())
            );
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        let e = "guess".parse::<Strategy>().unwrap_err();
        assert!(
            e.contains("\"guess\"") && e.contains("mixture, select"),
            "{e}"
        );
    }

    #[test]
    fn an_exit_quorum_is_a_strict_majority_up_to_the_panel() {
        assert_eq!((majority(1), majority(3), majority(4)), (1, 2, 3));
        assert!(check_exit_quorum(2, 3).is_ok() && check_exit_quorum(3, 3).is_ok());
        assert!(
            check_exit_quorum(2, 4).is_err(),
            "2 of 4 is a tie, not a majority"
        );
        assert_eq!(
            check_exit_quorum(4, 3).unwrap_err(),
            "must be from 2 (a strict majority of the panel) to 3 (all of it), got 4"
        );
    }

    #[test]
    fn preset_errors_name_the_key() {
        let err = |toml: &str| Config::from_toml(toml, "t").unwrap_err().to_string();
        let e = err("[presets.p]\npanel = []\nsynthesizer = \"local/smollm2-135m\"\n");
        assert!(e.contains("presets.p.panel") && e.contains("1 to 8"), "{e}");
        let e = err("[presets.p]\npanel = [\"nope/x\"]\nsynthesizer = \"local/smollm2-135m\"\n");
        assert!(
            e.contains("presets.p.panel[0]") && e.contains("nope/x"),
            "{e}"
        );
        let e = err(
            "[presets.p]\npanel = [\"quorate/fusion\"]\nsynthesizer = \"local/smollm2-135m\"\n",
        );
        assert!(e.contains("fusion itself"), "{e}");
        let e = err("[presets.p]\npanel = [\"local/smollm2-135m\"]\nsynthesizer = \"local/smollm2-135m\"\nquorum = 2\n");
        assert!(e.contains("presets.p.quorum"), "{e}");
        let e = err("[presets.p]\npanel = [\"local/smollm2-135m\"]\nsynthesizer = \"local/smollm2-135m\"\nmember_timeout_s = 700\n");
        assert!(e.contains("presets.p.member_timeout_s"), "{e}");
        let e = err("[presets.p]\npanel = [\"local/smollm2-135m\", \"local/smollm2-135m\", \"local/smollm2-135m\"]\nsynthesizer = \"local/smollm2-135m\"\nexit_quorum = 1\n");
        assert!(
            e.contains("presets.p.exit_quorum") && e.contains("from 2 (a strict majority"),
            "{e}"
        );
        let e = err("[fusion]\ndefault_preset = \"nope\"\n");
        assert!(e.contains("fusion.default_preset"), "{e}");
        let e = err("default_model = \"quorate/fusion:nope\"\n");
        assert!(e.contains("default_model"), "{e}");
    }
}
