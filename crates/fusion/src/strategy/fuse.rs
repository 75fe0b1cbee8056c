//! `fuse`: every member answers, the judge analyses the answers and the synthesizer writes one
//! answer grounded in the analysis (the judge and the synthesis live in the run).

use super::Variant;
use crate::report::{FusionReport, MemberReport};

pub(crate) struct Fuse;

impl Variant for Fuse {
    fn stop_early(&self, _finished: &[&MemberReport], _panel_size: usize) -> Option<String> {
        None
    }

    fn answer(&self, _report: &mut FusionReport) -> Option<String> {
        None
    }
}
