//! Strategies: how a run makes its answer from the panel's. Each is a `Variant` in a module of
//! its own; the run asks it as members finish whether the panel may stop, and after the panel
//! whether it answers alone or hands over to the judge and the synthesis (`fuse`).

mod auto;
mod fuse;
mod mixture;
pub(crate) mod select;
mod vote;

pub use auto::{Agreement, Saved};
pub use quorate_config::Strategy;
pub use select::Selection;
pub use vote::{final_answer, VoteOutcome, VoteTally};

use crate::plan::Plan;
use crate::report::{FusionReport, MemberReport};

pub(crate) trait Variant: Send + Sync {
    /// Called each time a member finishes, with every member finished so far: a reason when the
    /// panel may stop now (the members still running are then cancelled).
    fn stop_early(&self, _finished: &[&MemberReport], _panel_size: usize) -> Option<String> {
        None
    }

    /// After the panel: the answer when this strategy makes it from the panel alone (recording
    /// how in the report), else `None` to go on to the judge and the synthesis.
    fn answer(&self, _report: &mut FusionReport) -> Option<String> {
        None
    }

    /// Whether the judge analyses the answers before the synthesis (`mixture` synthesizes
    /// from the raw answers).
    fn judges(&self) -> bool {
        true
    }

    /// Whether the judge picks one answer to return verbatim instead of analysing them all.
    fn selects(&self) -> bool {
        false
    }
}

pub(crate) fn variant(plan: &Plan) -> Box<dyn Variant> {
    match plan.strategy {
        Strategy::Fuse => Box::new(fuse::Fuse),
        Strategy::Vote => Box::new(vote::Vote),
        Strategy::Mixture => Box::new(mixture::Mixture),
        Strategy::Select => Box::new(select::Select),
        Strategy::Auto => Box::new(auto::Auto {
            threshold: plan.agreement,
            quorum: plan.exit_quorum,
        }),
    }
}
