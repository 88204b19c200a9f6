//! `takt.yml` → validated [`Pipeline`] (every error with file:line:column) → [`Plan`] for one
//! commit → [`Schedule`], the stop-the-line scheduler.
//!
//! Pure: no I/O, no clock, no tokio. The engine feeds it facts and acts on its decisions.

pub mod diag;
pub mod duration;
pub mod expr;
pub mod gitlab;
pub mod glob;
pub mod limits;
pub mod model;
pub mod parse;
pub mod plan;
pub mod reports;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
pub use gitlab::Layout;
pub use model::*;
pub use parse::{ParseOptions, artifact_name_for_job, check_artifact_name, parse, parse_with};
pub use plan::{Plan, PlanContext, PlanError, PlannedJob, Schedule, Skip, critical_path, plan};
