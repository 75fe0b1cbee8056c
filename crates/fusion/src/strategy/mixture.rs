//! `mixture`: every member answers and the synthesizer writes one answer from the raw answers,
//! with no judge (Mixture-of-Agents). The ablation that says what the judge's structured
//! analysis adds over `fuse`.

use super::Variant;

pub(crate) struct Mixture;

impl Variant for Mixture {
    fn judges(&self) -> bool {
        false
    }
}
