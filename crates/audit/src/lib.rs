//! # reveal-audit
//!
//! The audit of one trained model, by reveal or elsewhere: reconstruct its training samples,
//! set every figure beside the same figure of null models (random models with its layer norms),
//! map where its classes differ beyond what clean images of the task explain, and say whether a
//! compact shortcut shows, or a pattern spread over the image.
//!
//! - [`biasmap`]: the map, its hotspot, the clean-subset maps, the check against planted triggers;
//! - [`verdict`]: candidates → a calibrated map → the verdict;
//! - [`nulls`]: the null models;
//! - [`scoring`]: a model's candidates scored against its training set (S, ρ10, recovered);
//! - [`workflow`]: the audit end to end, resumable ([`audit`]);
//! - [`page`]: the audit's HTML page, from its finished report;
//! - [`zoo`]: a population of models, clean and with planted shortcuts, audited to measure the
//!   audit's error rates ([`metrics`]);
//! - [`stats`]: the few statistics all of these use.

pub mod biasmap;
pub mod metrics;
pub mod nulls;
pub mod page;
pub mod scoring;
pub mod stats;
pub mod verdict;
pub mod workflow;
pub mod zoo;

pub use biasmap::TriggerCheck;
pub use verdict::{Candidates, Verdict};
pub use workflow::{audit, AuditBudget, AuditConfig, AuditReport};
