//! The prompts of the judge, the synthesizer and research: minijinja templates from `crates/fusion/prompts/`,
//! compiled into the binary, each replaceable by a file of the same name in `fusion.prompts_dir`.

use std::path::Path;

use minijinja::Environment;
use quorate_providers::Error;
use serde::Serialize;

pub const JUDGE: &str = "judge.j2";
pub const SELECT: &str = "select.j2";
pub const JUDGE_REPAIR: &str = "judge_repair.j2";
pub const SYNTHESIS: &str = "synthesis.j2";
pub const FUSION_TOOL: &str = "fusion_tool.j2";
pub const RESEARCH: &str = "research.j2";
pub const PREFETCH: &str = "prefetch.j2";
pub const TOOLS_SPENT: &str = "tools_spent.j2";

const BUILTIN: &[(&str, &str)] = &[
    (JUDGE, include_str!("../prompts/judge.j2")),
    (SELECT, include_str!("../prompts/select.j2")),
    (JUDGE_REPAIR, include_str!("../prompts/judge_repair.j2")),
    (SYNTHESIS, include_str!("../prompts/synthesis.j2")),
    (FUSION_TOOL, include_str!("../prompts/fusion_tool.j2")),
    (RESEARCH, include_str!("../prompts/research.j2")),
    (PREFETCH, include_str!("../prompts/prefetch.j2")),
    (TOOLS_SPENT, include_str!("../prompts/tools_spent.j2")),
];

pub struct Prompts {
    env: Environment<'static>,
}

impl Prompts {
    /// The built-in templates, with any of them overridden from `dir`. Errors name the file.
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, builtin) in BUILTIN {
            let custom = dir.map(|d| d.join(name)).filter(|p| p.is_file());
            let (source, origin) = match &custom {
                Some(path) => (
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                    path.display().to_string(),
                ),
                None => (builtin.to_string(), format!("built-in {name}")),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| format!("{origin}: {e}"))?;
        }
        Ok(Self { env })
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, Error> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| Error::Internal(format!("prompt template {name} failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_templates_render_their_variables() {
        let prompts = Prompts::load(None).unwrap();
        let answers = json!([{"label": "#1", "model": "m", "content": "Paris."},
                             {"label": "#2", "model": "m", "content": "Lyon."}]);
        let judge = prompts
            .render(
                JUDGE,
                json!({"conversation": [{"role": "user", "content": "Capital?"}],
                                  "question": "Capital?", "answers": answers}),
            )
            .unwrap();
        assert!(judge.contains("[user] Capital?") && judge.contains("### Answer #2 (m)\nLyon."));
        assert!(judge.contains("(#1, #2)"), "{judge}");
        let select = prompts
            .render(
                SELECT,
                json!({"conversation": [], "question": "Capital?", "answers": answers, "compact": true}),
            )
            .unwrap();
        assert!(
            select.contains("#2: Lyon.") && select.contains("(#1, #2)"),
            "{select}"
        );
        let analysis = json!({"consensus": ["c1"], "contradictions": [{"topic": "city",
            "stances": [{"model": "#1", "stance": "Paris"}, {"model": "#2", "stance": "Lyon"}]}],
            "partial_coverage": [], "unique_insights": [], "blind_spots": ["b1"]});
        let synthesis = prompts
            .render(
                SYNTHESIS,
                json!({"question": "Capital?", "answers": answers,
                "analysis": analysis, "degraded": true, "answered": 2, "panel_size": 3}),
            )
            .unwrap();
        assert!(synthesis.starts_with("Capital?"));
        assert!(
            synthesis.contains("- city: #1 says Paris; #2 says Lyon"),
            "{synthesis}"
        );
        assert!(synthesis.contains("1 of 3 members failed") && synthesis.contains("- b1"));
        let bare = prompts
            .render(SYNTHESIS, json!({"question": "Q", "answers": answers, "analysis": null,
                "judge_failure": "judge_not_valid_json", "degraded": false, "answered": 2, "panel_size": 2}))
            .unwrap();
        assert!(bare.contains("No analysis is available (judge_not_valid_json)"));
    }

    #[test]
    fn a_folder_overrides_templates_by_name() {
        let dir = std::env::temp_dir().join(format!("quorate-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(JUDGE_REPAIR), "fix: {{ error }}").unwrap();
        let prompts = Prompts::load(Some(&dir)).unwrap();
        assert_eq!(
            prompts.render(JUDGE_REPAIR, json!({"error": "e"})).unwrap(),
            "fix: e"
        );
        assert!(prompts
            .render(JUDGE, json!({"answers": []}))
            .unwrap()
            .contains("judge"));
        std::fs::write(dir.join(SYNTHESIS), "{% if %}").unwrap();
        let e = Prompts::load(Some(&dir)).err().unwrap();
        assert!(e.contains("synthesis.j2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
