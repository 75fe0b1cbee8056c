//! Reading what models write.

/// JSON a model wrapped in a markdown code fence (```` ```json ... ``` ````), unwrapped; other
/// text as it is, trimmed.
pub fn unfenced(text: &str) -> &str {
    let text = text.trim();
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_come_off() {
        assert_eq!(unfenced(" ```json\n{\"a\": 1}\n``` "), "{\"a\": 1}");
        assert_eq!(unfenced("```\n[1]\n```"), "[1]");
        assert_eq!(unfenced(" {} "), "{}");
    }
}
