//! The harness's prompts (QA questions and the DRACO grader) as minijinja templates from
//! `crates/eval/prompts/`, compiled in.

use minijinja::Environment;
use serde::Serialize;

pub const QA_MC: &str = "qa_mc.j2";
pub const QA_MATH: &str = "qa_math.j2";
pub const GRADER: &str = "grader.j2";

pub fn render(name: &str, context: impl Serialize) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    for (n, source) in [
        (QA_MC, include_str!("../prompts/qa_mc.j2")),
        (QA_MATH, include_str!("../prompts/qa_math.j2")),
        (GRADER, include_str!("../prompts/grader.j2")),
    ] {
        env.add_template(n, source)?;
    }
    Ok(env.get_template(name)?.render(context)?.trim().to_string())
}
