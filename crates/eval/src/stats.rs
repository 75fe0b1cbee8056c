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
}
