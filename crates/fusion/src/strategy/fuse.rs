//! `fuse`: every member answers, the judge analyses the answers and the synthesizer writes one
//! answer grounded in the analysis (the judge and the synthesis live in the run).

use super::Variant;

pub(crate) struct Fuse;

impl Variant for Fuse {}
