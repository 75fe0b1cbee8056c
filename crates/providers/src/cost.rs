//! Cost of a call in exact decimals.

use quorate_api::Usage;
use quorate_config::ResolvedModel;
use rust_decimal::Decimal;

const PER_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// The upstream's own `usage.cost` when it reports one (OpenRouter does); otherwise tokens times
/// the configured prices; zero when neither is known.
pub fn price(usage: &Usage, model: &ResolvedModel) -> Decimal {
    if let Some(cost) = usage.cost {
        return cost;
    }
    let part = |tokens: u64, per_mtok: Option<Decimal>| {
        per_mtok.map_or(Decimal::ZERO, |p| Decimal::from(tokens) * p / PER_MILLION)
    };
    part(usage.prompt_tokens, model.input_usd_per_mtok)
        + part(usage.completion_tokens, model.output_usd_per_mtok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn model(input: &str, output: &str) -> ResolvedModel {
        ResolvedModel {
            id: "m".into(),
            provider: "p".into(),
            upstream: "m".into(),
            context_length: None,
            input_usd_per_mtok: Some(Decimal::from_str(input).unwrap()),
            output_usd_per_mtok: Some(Decimal::from_str(output).unwrap()),
            fallbacks: vec![],
            max_output_tokens: None,
            gguf: None,
            supports_tools: true,
        }
    }

    #[test]
    fn computed_from_prices_exactly() {
        let usage = Usage::new(1234, 567);
        // 1234 * 0.15 / 1e6 + 567 * 0.6 / 1e6 = 0.0001851 + 0.0003402
        assert_eq!(
            price(&usage, &model("0.15", "0.6")),
            Decimal::from_str("0.0005253").unwrap()
        );
    }

    #[test]
    fn upstream_cost_wins() {
        let mut usage = Usage::new(10, 10);
        usage.cost = Some(Decimal::from_str("0.42").unwrap());
        assert_eq!(
            price(&usage, &model("1", "1")),
            Decimal::from_str("0.42").unwrap()
        );
    }
}
