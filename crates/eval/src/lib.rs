//! `quorate eval`: measures systems (a model alone, fusion, a majority vote) on DRACO's weighted
//! rubrics and on objective QA, with intervals, cost, latency and a report. Generation and grading
//! append JSONL records under the output folder, so a run resumes where it stopped.

pub mod draco;
mod panel;
pub mod progress;
mod prompts;
pub mod qa;
pub mod report;
pub mod stats;
pub mod store;
pub mod system;

pub use panel::PanelStore;
pub use qa::{Dataset, QaRun};
pub use report::Summary;
pub use system::{Settings, System};

/// The workplace's datasets for tests: `$QUORATE_DATASETS`, else `shared/datasets` beside the
/// checkout.
#[cfg(test)]
pub(crate) fn shared_datasets() -> std::path::PathBuf {
    std::env::var_os("QUORATE_DATASETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets")
        })
}
