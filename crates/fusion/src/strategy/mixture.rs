//! `mixture`: every member answers and the synthesizer writes one answer from the raw answers,
//! with no judge (Mixture-of-Agents). The ablation that says what the judge's structured
//! analysis adds over `fuse`.

use super::Variant;
use crate::report::{FusionReport, MemberReport};

pub(crate) struct Mixture;

impl Variant for Mixture {
    fn stop_early(&self, _finished: &[&MemberReport], _panel_size: usize) -> Option<String> {
        None
    }

    fn answer(&self, _report: &mut FusionReport) -> Option<String> {
        None
    }

    fn judges(&self) -> bool {
        false
    }
}
