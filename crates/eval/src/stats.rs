//! Intervals and percentiles. The bootstrap is seeded, so the same results give the same report.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resamples drawn for a bootstrap interval.
const RESAMPLES: usize = 2000;

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// The 95% percentile-bootstrap interval of the mean of `values` (resampling them).
pub fn bootstrap_ci(values: &[f64]) -> (f64, f64) {
    if values.len() < 2 {
        let m = mean(values);
        return (m, m);
    }
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let sum: f64 = (0..values.len())
                .map(|_| values[rng.gen_range(0..values.len())])
                .sum();
            sum / values.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    (
        percentile_sorted(&means, 2.5),
        percentile_sorted(&means, 97.5),
    )
}

/// McNemar's exact test on paired right/wrong outcomes: the two-sided p-value of `wins` (this
/// system right, the other wrong) against `losses` if both were equally likely (a fair coin
/// over the discordant pairs). Ties carry no information and are not passed in.
pub fn mcnemar_exact(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    // Binomial(n, 1/2) probabilities summed up to the smaller count, in logs (n may be large).
    let mut log_term = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for k in 0..=wins.min(losses) {
        tail += log_term.exp();
        log_term += ((n - k) as f64).ln() - ((k + 1) as f64).ln();
    }
    (2.0 * tail).min(1.0)
}

/// The `p`th percentile (0 to 100) of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, p)
}

fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_bracket_the_mean_and_are_reproducible() {
        let values: Vec<f64> = (0..100).map(|i| f64::from(i % 2)).collect();
        let (lo, hi) = bootstrap_ci(&values);
        assert!(lo < 0.5 && hi > 0.5 && hi - lo < 0.25, "{lo} {hi}");
        assert_eq!(bootstrap_ci(&values), (lo, hi));
        assert_eq!(bootstrap_ci(&[0.7]), (0.7, 0.7));
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 90.0), 4.0);
    }

    #[test]
    fn mcnemar_matches_the_binomial_by_hand() {
        // 1 against 5: 2 × (1 + 6) / 64.
        assert!((mcnemar_exact(1, 5) - 14.0 / 64.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 1), mcnemar_exact(1, 5));
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 0 against 10: 2 / 1024.
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-12);
        let p = mcnemar_exact(300, 500);
        assert!(p > 0.0 && p < 1e-10, "{p}");
    }
}
