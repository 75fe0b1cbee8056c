//! What one fusion run does: who sits on the panel, who judges and who synthesizes, under which
//! deadlines. Built from the model slug (`quorate/fusion[:preset]`), the `fusion` plugin object
//! and the config's presets, in that order of precedence: explicit fields beat the preset.

use std::time::Duration;

use quorate_api::request::{in_range, TEMPERATURES};
use quorate_api::{CapName, ModelRequest};
use quorate_config::{
    check_exit_quorum, fusion_slug, majority, Config, PresetConfig, Strategy, MAX_PANEL,
    MAX_TOOL_CALLS,
};
use quorate_providers::Error;
use quorate_tools::ToolSpec;

use crate::server_tools::is_research_tool;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a caller may set on a fusion run; what it leaves unset comes from the preset. The
/// OpenRouter-compatible plugin object (`{"id": "fusion", "model", "analysis_models", ...}`) and
/// the fusion tool's `parameters` are its JSON form; in-process callers (`quorate ask`, eval) fill
/// it as a type and send `to_plugin()`, so every way in is checked by the same code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBuilder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The synthesizer, and the judge unless `judge` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Progress chunks (`fusion_event`) in the stream; off unless asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_progress: Option<bool>,
    /// Research tools for the panel: names or `{"type", "parameters"}` objects; `[]` is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// Tool calls each agentic member may make (0 to 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u32>,
    /// `"strict"` removes citations of URLs no member retrieved; `"report"` (the default) only
    /// lists them in `fusion.unverified_citations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<String>,
    /// How the answer is made from the panel's (`fuse`, `vote`, `auto`, `select`, `mixture`);
    /// default: the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// `auto`: members that must agree to stop early (a strict majority of the panel to all of
    /// it); default: the preset's, else a strict majority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_quorum: Option<usize>,
}

impl PlanBuilder {
    /// The plugin object a request carries: `{"id": "fusion", ...the fields set}`.
    pub fn to_plugin(&self) -> Value {
        let mut plugin = serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()));
        if let Some(object) = plugin.as_object_mut() {
            object.insert("id".into(), Value::from("fusion"));
        }
        plugin
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub preset: String,
    /// One model per slot; repeats are self-fusion.
    pub panel: Vec<String>,
    /// The judge, then the judges to try when its analysis stays invalid.
    pub judges: Vec<String>,
    pub synthesizer: String,
    /// Panel sampling temperature.
    pub temperature: Option<f64>,
    /// Output cap of each panel answer and of the synthesis.
    pub max_completion_tokens: Option<u32>,
    pub member_timeout: Duration,
    pub total_timeout: Duration,
    pub quorum: usize,
    pub stream_progress: bool,
    /// Slot `i` samples with seed `seed + i`, so self-fusion slots answer differently.
    pub seed: u64,
    /// The panel's research tools; empty when research is off.
    pub tools: Vec<ToolSpec>,
    pub max_tool_calls: u32,
    /// Unverified citations are removed from the answer, not only reported.
    pub strict_citations: bool,
    pub strategy: Strategy,
    /// `auto`: word overlap at which prose answers agree.
    pub agreement: f64,
    /// `auto`: members that must agree to stop early.
    pub exit_quorum: usize,
}

impl Plan {
    /// Caps a panel answer or the synthesis at the plan's output cap, under the plugin's name
    /// for it.
    pub(crate) fn cap(&self, req: &mut ModelRequest) {
        req.max_tokens = self.max_completion_tokens;
        if req.max_tokens.is_some() {
            req.cap_name = CapName::MaxCompletionTokens;
        }
    }

    /// The run a request asks for, or `None` when it is an ordinary completion. Errors name the
    /// offending field.
    pub fn from_request(config: &Config, req: &ModelRequest) -> Result<Option<Plan>, Error> {
        let plugin = find_plugin(req)?;
        let slug = fusion_slug(&req.model);
        let Some((index, plugin)) = plugin.or(slug.map(|_| (0, PlanBuilder::default()))) else {
            return Ok(None);
        };
        Self::build(config, req, &format!("plugins[{index}]"), plugin, slug).map(Some)
    }

    /// The run a `quorate:fusion` tool in `req.tools` stands for, with the tool's index. Its
    /// `parameters` take the plugin's fields, except that `model` names the judge; the request's
    /// own model writes the final answer.
    pub fn for_tool(config: &Config, req: &ModelRequest) -> Result<Option<(usize, Plan)>, Error> {
        refuse_unknown_server_tools(req)?;
        let Some((index, tool)) = find_tool(req) else {
            return Ok(None);
        };
        if fusion_slug(&req.model).is_some() {
            return Err(Error::BadRequest(format!(
                "tools[{index}]: the fusion tool needs an ordinary model to call it, not {:?}",
                req.model
            )));
        }
        let prefix = format!("tools[{index}].parameters");
        let parameters = tool.get("parameters").cloned().unwrap_or(Value::Null);
        let mut plugin: PlanBuilder = match parameters {
            Value::Null => PlanBuilder::default(),
            value => serde_json::from_value(value)
                .map_err(|e| Error::BadRequest(format!("{prefix}: {e}")))?,
        };
        if plugin.strategy.is_some_and(|s| s != Strategy::Fuse) {
            return Err(Error::BadRequest(format!(
                "{prefix}.strategy: the fusion tool hands the panel's analysis to the calling \
                 model, so only \"fuse\" applies"
            )));
        }
        plugin.judge = plugin.model.take().or_else(|| Some(req.model.clone()));
        // A preset's strategy does not apply either: the calling model writes the answer. As
        // for any fused run, that refuses an `exit_quorum` and ignores the preset's.
        plugin.strategy = Some(Strategy::Fuse);
        let plan = Self::build(config, req, &prefix, plugin, None)?;
        Ok(Some((index, plan)))
    }

    fn build(
        config: &Config,
        req: &ModelRequest,
        prefix: &str,
        plugin: PlanBuilder,
        slug: Option<Option<&str>>,
    ) -> Result<Plan, Error> {
        let field = |name: &str| format!("{prefix}.{name}");
        let (preset_name, preset) = pick_preset(config, &plugin, slug, &field)?;
        let panel = match &plugin.analysis_models {
            Some(models) => check_panel(config, models, &field("analysis_models"))?,
            None => preset.panel.clone(),
        };
        // A plain model id with the plugin makes that model the synthesizer (and judge).
        let model = plugin
            .model
            .clone()
            .or_else(|| slug.is_none().then(|| req.model.clone()));
        if let Some(m) = &plugin.model {
            check_model(config, m, &field("model"))?;
        }
        if let Some(m) = &plugin.judge {
            check_model(config, m, &field("judge"))?;
        }
        let judge = plugin
            .judge
            .clone()
            .or_else(|| model.clone())
            .or_else(|| preset.judge.clone())
            .unwrap_or_else(|| preset.synthesizer.clone());
        let mut judges = vec![judge];
        for fallback in &preset.judge_fallbacks {
            if !judges.contains(fallback) {
                judges.push(fallback.clone());
            }
        }
        in_range(plugin.temperature, TEMPERATURES)
            .map_err(|e| Error::BadRequest(format!("{}: {e}", field("temperature"))))?;
        if plugin.max_completion_tokens == Some(0) {
            return Err(Error::BadRequest(format!(
                "{}: must be at least 1",
                field("max_completion_tokens")
            )));
        }
        let research = Research::from_plugin(config, req, &plugin, &field)?;
        let strategy = plugin.strategy.unwrap_or(preset.strategy);
        let exit_quorum = exit_quorum(&plugin, preset, strategy, panel.len(), &field)?;
        Ok(Plan {
            preset: preset_name,
            quorum: preset.quorum.min(panel.len()),
            panel,
            judges,
            synthesizer: model.unwrap_or_else(|| preset.synthesizer.clone()),
            temperature: plugin
                .temperature
                .or(req.temperature)
                .or(preset.temperature),
            max_completion_tokens: plugin
                .max_completion_tokens
                .or(req.max_tokens)
                .or(preset.max_completion_tokens),
            member_timeout: Duration::from_secs_f64(preset.member_timeout_s),
            total_timeout: Duration::from_secs_f64(preset.total_timeout_s),
            stream_progress: plugin.stream_progress.unwrap_or(false),
            seed: seed(req),
            tools: research.tools,
            max_tool_calls: research.max_tool_calls,
            strict_citations: research.strict_citations,
            strategy,
            agreement: preset.agreement,
            exit_quorum,
        })
    }
}

/// The plugin's `exit_quorum`, else the preset's, else a strict majority, checked against the
/// run's own panel (the plugin's `analysis_models` may resize it).
fn exit_quorum(
    plugin: &PlanBuilder,
    preset: &PresetConfig,
    strategy: Strategy,
    panel: usize,
    field: &impl Fn(&str) -> String,
) -> Result<usize, Error> {
    let bad = |e: String| Error::BadRequest(format!("{}: {e}", field("exit_quorum")));
    if strategy != Strategy::Auto {
        return match plugin.exit_quorum {
            Some(_) => Err(bad(format!(
                "applies to the \"auto\" strategy, and this run's is {:?}",
                strategy.as_str()
            ))),
            None => Ok(majority(panel)),
        };
    }
    match (plugin.exit_quorum, preset.exit_quorum) {
        (Some(n), _) => check_exit_quorum(n, panel).map(|()| n).map_err(bad),
        // The preset's fits its own panel; the plugin's `analysis_models` may have resized it.
        (None, Some(n)) => check_exit_quorum(n, panel).map(|()| n).map_err(|e| {
            Error::BadRequest(format!(
                "{}: the preset's exit_quorum {e} for a panel of {panel}",
                field("analysis_models")
            ))
        }),
        (None, None) => Ok(majority(panel)),
    }
}

/// The plugin's research fields, checked.
struct Research {
    tools: Vec<ToolSpec>,
    max_tool_calls: u32,
    strict_citations: bool,
}

impl Research {
    /// The plugin's fields; without a `tools` field, the request's `quorate:web_*` server tools
    /// (an OpenRouter-style request) say which tools the panel gets, else both do.
    fn from_plugin(
        config: &Config,
        req: &ModelRequest,
        plugin: &PlanBuilder,
        field: &impl Fn(&str) -> String,
    ) -> Result<Self, Error> {
        let server_tools = crate::server_tools::ResearchPlan::from_request(config, req)?;
        let tools = match (&plugin.tools, server_tools) {
            (Some(value), _) => {
                ToolSpec::parse_list(value, &field("tools")).map_err(Error::BadRequest)?
            }
            (None, Some(plan)) => plan.tools,
            (None, None) => ToolSpec::defaults(),
        };
        let max_tool_calls = plugin.max_tool_calls.unwrap_or(config.tools.max_tool_calls);
        if max_tool_calls > MAX_TOOL_CALLS {
            return Err(Error::BadRequest(format!(
                "{}: at most {MAX_TOOL_CALLS}, got {max_tool_calls}",
                field("max_tool_calls")
            )));
        }
        let strict_citations = match plugin.citations.as_deref() {
            None | Some("report") => false,
            Some("strict") => true,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "{}: \"strict\" or \"report\", got {other:?}",
                    field("citations")
                )))
            }
        };
        Ok(Self {
            tools,
            max_tool_calls,
            strict_citations,
        })
    }
}

/// Tool types that ask for fusion as a server-side tool.
pub const FUSION_TOOL_TYPES: &[&str] = &["quorate:fusion", "openrouter:fusion"];

/// `quorate:*` and `openrouter:*` tools run in the gateway; one it does not have is an error
/// here rather than a confusing one from upstream. The fusion tool takes its panel's research
/// tools in its own `parameters.tools`, not next to it.
fn refuse_unknown_server_tools(req: &ModelRequest) -> Result<(), Error> {
    let has_fusion_tool = find_tool(req).is_some();
    for (i, tool) in req.tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        let server_tool = kind.starts_with("quorate:") || kind.starts_with("openrouter:");
        if !server_tool || FUSION_TOOL_TYPES.contains(&kind) {
            continue;
        }
        if !is_research_tool(kind) {
            return Err(Error::BadRequest(format!(
                "tools[{i}].type: {kind} is not a server tool of this gateway (available: {}, \
                 quorate:web_search, quorate:web_fetch)",
                FUSION_TOOL_TYPES.join(", ")
            )));
        }
        if has_fusion_tool {
            return Err(Error::BadRequest(format!(
                "tools[{i}]: {kind} cannot sit next to the fusion tool; give the panel's research \
                 tools in the fusion tool's parameters.tools"
            )));
        }
    }
    Ok(())
}

fn find_tool(req: &ModelRequest) -> Option<(usize, &Value)> {
    req.tools.iter().enumerate().find(|(_, tool)| {
        tool.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| FUSION_TOOL_TYPES.contains(&t))
    })
}

/// The first enabled `fusion` entry of `plugins`, with its index.
fn find_plugin(req: &ModelRequest) -> Result<Option<(usize, PlanBuilder)>, Error> {
    for (i, value) in req.plugins.iter().enumerate() {
        if value.get("id").and_then(Value::as_str) != Some("fusion") {
            continue;
        }
        let mut fields = value.clone();
        if let Some(object) = fields.as_object_mut() {
            object.remove("id");
        }
        let plugin: PlanBuilder = serde_json::from_value(fields)
            .map_err(|e| Error::BadRequest(format!("plugins[{i}]: {e}")))?;
        if plugin.enabled != Some(false) {
            return Ok(Some((i, plugin)));
        }
    }
    Ok(None)
}

fn pick_preset<'c>(
    config: &'c Config,
    plugin: &PlanBuilder,
    slug: Option<Option<&str>>,
    field: &impl Fn(&str) -> String,
) -> Result<(String, &'c PresetConfig), Error> {
    let known = || {
        config
            .presets
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = &plugin.preset {
        return config
            .presets
            .get(name)
            .map(|p| (name.clone(), p))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "{}: unknown preset {name:?} (presets: {})",
                    field("preset"),
                    known()
                ))
            });
    }
    let name = slug.flatten().unwrap_or_else(|| config.default_preset());
    config
        .presets
        .get(name)
        .map(|p| (name.to_string(), p))
        .ok_or_else(|| {
            Error::UnknownModel(format!(
                "model: unknown fusion preset {name:?} (presets: {}); GET /v1/models lists them",
                known()
            ))
        })
}

fn check_model(config: &Config, model: &str, field: &str) -> Result<(), Error> {
    config
        .check_inner_model(model)
        .map_err(|m| Error::BadRequest(format!("{field}: {m}")))
}

fn check_panel(config: &Config, models: &[String], field: &str) -> Result<Vec<String>, Error> {
    if models.is_empty() || models.len() > MAX_PANEL {
        return Err(Error::BadRequest(format!(
            "{field}: 1 to {MAX_PANEL} models, got {}",
            models.len()
        )));
    }
    for (i, model) in models.iter().enumerate() {
        check_model(config, model, &format!("{field}[{i}]"))?;
    }
    Ok(models.to_vec())
}

/// The caller's `seed` when it gave one (a reproducible panel), else a random one.
fn seed(req: &ModelRequest) -> u64 {
    req.seed
        .map_or_else(|| u64::from(rand::random::<u32>()), |s| s as u64)
}

/// A request made inside a fusion run (its fusion depth above 0) may not start another run.
pub(crate) fn refuse_nested(fusion_depth: u8) -> Result<(), Error> {
    if fusion_depth == 0 {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "fusion refused: this request comes from inside a fusion run (fusion depth \
         {fusion_depth}); a panel member, judge or synthesizer cannot start another fusion"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_api::ChatRequest;
    use serde_json::json;

    fn plan(body: Value) -> Result<Option<Plan>, Error> {
        let config = Config::from_toml(
            "[fusion]\ndefault_preset = \"local\"\n[models.\"openai/a\"]\nprovider = \"openai\"\n",
            "t",
        )
        .unwrap();
        let mut body = body;
        body["messages"] = json!([{"role": "user", "content": "q"}]);
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        Plan::from_request(&config, &req.into())
    }

    #[test]
    fn slugs_pick_presets_and_ordinary_models_are_not_fusion() {
        assert!(plan(json!({"model": "openai/a"})).unwrap().is_none());
        let p = plan(json!({"model": "quorate/fusion"})).unwrap().unwrap();
        assert_eq!((p.preset.as_str(), p.panel.len()), ("local", 3));
        assert_eq!(p.judges, ["local/qwen2.5-coder-1.5b"]);
        let p = plan(json!({"model": "openrouter/fusion:budget"}))
            .unwrap()
            .unwrap();
        assert_eq!(p.preset, "budget");
        assert_ne!(p.judges[0], p.synthesizer, "budget has its own judge");
        let e = plan(json!({"model": "fusion:nope"})).unwrap_err();
        assert_eq!(e.status(), 404);
        let off = json!({"model": "openai/a", "plugins": [{"id": "fusion", "enabled": false}]});
        assert!(plan(off).unwrap().is_none());
    }

    #[test]
    fn plugin_fields_override_the_preset() {
        let p = plan(
            json!({"model": "quorate/fusion", "temperature": 0.3, "plugins": [{"id": "web"}, {
            "id": "fusion", "analysis_models": ["openai/a", "openai/a"], "model": "openai/a",
            "max_completion_tokens": 99}]}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.panel, ["openai/a", "openai/a"]);
        assert_eq!(
            (p.synthesizer.as_str(), p.judges[0].as_str()),
            ("openai/a", "openai/a")
        );
        assert_eq!(
            (p.temperature, p.max_completion_tokens),
            (Some(0.3), Some(99))
        );
        // A plain model with the plugin is the synthesizer.
        let p = plan(json!({"model": "openai/a", "plugins": [{"id": "fusion", "judge": "local/smollm2-135m"}]}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.synthesizer.as_str(), p.judges[0].as_str()),
            ("openai/a", "local/smollm2-135m")
        );
        let p = plan(json!({"model": "fusion", "seed": 41}))
            .unwrap()
            .unwrap();
        assert_eq!(p.seed, 41);
    }

    #[test]
    fn auto_exits_on_a_strict_majority_unless_told_otherwise() {
        let p = plan(json!({"model": "quorate/fusion"})).unwrap().unwrap();
        assert_eq!(p.exit_quorum, 2, "2 of the local preset's 3");
        let all = json!({"model": "quorate/fusion", "plugins": [{"id": "fusion",
            "strategy": "auto", "exit_quorum": 3}]});
        assert_eq!(plan(all).unwrap().unwrap().exit_quorum, 3);
        let five = json!({"model": "quorate/fusion", "plugins": [{"id": "fusion",
            "strategy": "auto", "analysis_models": vec!["openai/a"; 5]}]});
        assert_eq!(plan(five).unwrap().unwrap().exit_quorum, 3);
        let config = Config::from_toml(
            "[fusion]\ndefault_preset = \"all\"\n[models.\"openai/a\"]\nprovider = \"openai\"\n\
             [presets.all]\n\
             panel = [\"openai/a\", \"openai/a\", \"openai/a\"]\nsynthesizer = \"openai/a\"\n\
             strategy = \"auto\"\nexit_quorum = 3\n",
            "t",
        )
        .unwrap();
        let req: ChatRequest = serde_json::from_value(json!({"model": "quorate/fusion",
            "messages": [], "plugins": [{"id": "fusion", "analysis_models": vec!["openai/a"; 2]}]}))
        .unwrap();
        let e = Plan::from_request(&config, &req.into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugins[0].analysis_models: the preset's exit_quorum must be from 2 (a strict \
             majority of the panel) to 2 (all of it), got 3 for a panel of 2"
        );
        let fuse: ChatRequest = serde_json::from_value(json!({"model": "quorate/fusion",
            "messages": [], "plugins": [{"id": "fusion", "strategy": "fuse",
            "analysis_models": vec!["openai/a"; 2]}]}))
        .unwrap();
        assert!(
            Plan::from_request(&config, &fuse.into()).is_ok(),
            "a fuse run ignores the preset's exit quorum"
        );
    }

    #[test]
    fn plugin_errors_name_the_field() {
        let err = |plugin: Value| {
            plan(json!({"model": "quorate/fusion", "plugins": [plugin]}))
                .unwrap_err()
                .to_string()
        };
        let nine = vec!["openai/a"; 9];
        assert!(err(json!({"id": "fusion", "analysis_models": nine}))
            .starts_with("plugins[0].analysis_models: 1 to 8"));
        let e = err(json!({"id": "fusion", "analysis_models": ["openai/a", "ghost"]}));
        assert!(
            e.starts_with("plugins[0].analysis_models[1]: unknown model"),
            "{e}"
        );
        let e = err(json!({"id": "fusion", "analysis_models": ["quorate/fusion"]}));
        assert!(e.contains("fusion itself"), "{e}");
        assert!(err(json!({"id": "fusion", "preset": "nope"})).starts_with("plugins[0].preset"));
        assert!(
            err(json!({"id": "fusion", "temperature": 5})).starts_with("plugins[0].temperature")
        );
        assert!(err(json!({"id": "fusion", "colour": 5})).contains("colour"));
        assert!(err(json!({"id": "fusion", "tools": ["web_browse"]}))
            .starts_with("plugins[0].tools[0]: unknown tool"));
        assert!(err(json!({"id": "fusion", "max_tool_calls": 17}))
            .starts_with("plugins[0].max_tool_calls"));
        assert!(
            err(json!({"id": "fusion", "citations": "loose"})).starts_with("plugins[0].citations")
        );
        let e = err(json!({"id": "fusion", "strategy": "auto", "exit_quorum": 4}));
        assert_eq!(
            e,
            "plugins[0].exit_quorum: must be from 2 (a strict majority of the panel) to 3 \
             (all of it), got 4"
        );
        let e = err(json!({"id": "fusion", "exit_quorum": 3}));
        assert!(
            e.starts_with("plugins[0].exit_quorum: applies to the \"auto\" strategy"),
            "{e}"
        );
    }

    #[test]
    fn research_defaults_to_both_tools_and_an_empty_list_turns_it_off() {
        let p = plan(json!({"model": "quorate/fusion"})).unwrap().unwrap();
        assert_eq!(p.tools.len(), 2);
        assert_eq!((p.max_tool_calls, p.strict_citations), (8, false));
        let p = plan(
            json!({"model": "quorate/fusion", "plugins": [{"id": "fusion", "tools": [],
            "max_tool_calls": 3, "citations": "strict"}]}),
        )
        .unwrap()
        .unwrap();
        assert!(p.tools.is_empty());
        assert_eq!((p.max_tool_calls, p.strict_citations), (3, true));
    }

    #[test]
    fn the_fusion_tool_fuses_whatever_the_presets_strategy() {
        let config = Config::from_toml(
            "[fusion]\ndefault_preset = \"all\"\n[models.\"openai/a\"]\nprovider = \"openai\"\n\
             [presets.all]\npanel = [\"openai/a\", \"openai/a\", \"openai/a\"]\n\
             synthesizer = \"openai/a\"\nstrategy = \"auto\"\nexit_quorum = 3\n",
            "t",
        )
        .unwrap();
        let req: ChatRequest = serde_json::from_value(json!({"model": "openai/a",
            "messages": [], "tools": [{"type": "quorate:fusion",
            "parameters": {"analysis_models": ["openai/a", "openai/a"]}}]}))
        .unwrap();
        let (_, plan) = Plan::for_tool(&config, &req.into()).unwrap().unwrap();
        assert_eq!(
            (plan.strategy, plan.panel.len()),
            (Strategy::Fuse, 2),
            "the preset's unanimity of 3 does not bind a fused panel of 2"
        );
    }

    #[test]
    fn the_fusion_tool_makes_the_request_model_synthesize() {
        let config =
            Config::from_toml("[models.\"openai/a\"]\nprovider = \"openai\"\n", "t").unwrap();
        let req = |tools: Value, model: &str| -> ModelRequest {
            serde_json::from_value::<ChatRequest>(
                json!({"model": model, "messages": [], "tools": tools}),
            )
            .unwrap()
            .into()
        };
        let client = json!({"type": "function", "function": {"name": "f"}});
        let (index, plan) = Plan::for_tool(
            &config,
            &req(json!([client, {"type": "openrouter:fusion"}]), "openai/a"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(index, 1);
        assert_eq!(
            (plan.synthesizer.as_str(), plan.judges[0].as_str()),
            ("openai/a", "openai/a")
        );
        let tool = json!([{"type": "quorate:fusion", "parameters": {"model": "local/smollm2-135m",
            "analysis_models": ["openai/a", "openai/a"]}}]);
        let (_, plan) = Plan::for_tool(&config, &req(tool, "openai/a"))
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.judges[0], "local/smollm2-135m",
            "parameters.model is the judge"
        );
        assert_eq!(plan.panel, ["openai/a", "openai/a"]);
        let e = Plan::for_tool(
            &config,
            &req(
                json!([{"type": "quorate:fusion", "parameters": {"analysis_models": []}}]),
                "openai/a",
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tools[0].parameters.analysis_models"),
            "{e}"
        );
        let tool = json!([{"type": "quorate:fusion", "parameters": {"exit_quorum": 2}}]);
        let e = Plan::for_tool(&config, &req(tool, "openai/a")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tools[0].parameters.exit_quorum: applies to the \"auto\""),
            "{e}"
        );
        let e = Plan::for_tool(
            &config,
            &req(json!([{"type": "quorate:web_browse"}]), "openai/a"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tools[0].type: quorate:web_browse"),
            "{e}"
        );
        let e = Plan::for_tool(
            &config,
            &req(
                json!([{"type": "quorate:fusion"}, {"type": "quorate:web_search"}]),
                "openai/a",
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("parameters.tools"), "{e}");
        assert!(Plan::for_tool(
            &config,
            &req(json!([{"type": "quorate:web_search"}]), "openai/a")
        )
        .unwrap()
        .is_none());
        assert!(Plan::for_tool(
            &config,
            &req(json!([{"type": "quorate:fusion"}]), "quorate/fusion")
        )
        .is_err());
        assert!(Plan::for_tool(&config, &req(json!([]), "openai/a"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_plan_builder_is_the_plugin_object_as_a_type() {
        let builder = PlanBuilder {
            analysis_models: Some(vec!["openai/a".into(); 2]),
            max_tool_calls: Some(2),
            strategy: Some(Strategy::Vote),
            ..PlanBuilder::default()
        };
        let plugin = builder.to_plugin();
        assert_eq!(
            plugin,
            json!({"id": "fusion", "analysis_models": ["openai/a", "openai/a"],
                   "max_tool_calls": 2, "strategy": "vote"})
        );
        let plan = plan(json!({"model": "quorate/fusion", "plugins": [plugin]}))
            .unwrap()
            .unwrap();
        assert_eq!(plan.panel, ["openai/a", "openai/a"]);
        assert_eq!((plan.max_tool_calls, plan.strategy), (2, Strategy::Vote));
    }

    #[test]
    fn nested_fusion_is_refused() {
        assert!(refuse_nested(0).is_ok());
        let e = refuse_nested(1).unwrap_err();
        assert!(e.to_string().starts_with("fusion refused"), "{e}");
        assert_eq!(e.status(), 400);
    }
}
