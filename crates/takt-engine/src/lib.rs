//! Drives a [`Plan`](takt_pipeline::Plan) through an [`Executor`](takt_exec::Executor): prepares
//! each job's clean workspace, runs it, stores its log, artifacts, test report and cache, and
//! appends every fact to the event log. `takt run` uses it directly; the server will too.

pub mod commits;
pub mod datadir;
pub mod git;
pub mod junit;
pub mod log;
pub mod report;
pub mod run;
mod workspace;

pub use datadir::DataDir;
pub use report::{ArtifactReport, BudgetWarning, CacheReport, JobReport, RunReport};
pub use run::{Carry, Engine, Live, LiveJob, PIPELINE_FILES, Prepared, Progress, RunRequest};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path} is not a git repository: {reason}")]
    NotARepo { path: PathBuf, reason: String },
    #[error("unknown revision `{rev}`: {reason}")]
    UnknownRevision { rev: String, reason: String },
    #[error("no {file} (nor .gitlab-ci.yml) in {root} (commit {commit}); create one — see docs/pipeline.md")]
    NoPipelineFile {
        root: PathBuf,
        file: String,
        commit: String,
    },
    #[error("the child pipeline {file} is not in commit {commit}")]
    NoChildPipeline { file: String, commit: String },
    #[error("{0}")]
    InvalidPipeline(takt_pipeline::Diagnostics),
    #[error("{0}")]
    Plan(#[from] takt_pipeline::PlanError),
    #[error("the data directory {path} is in use by another takt process (pid {pid}); wait for it or pass --data-dir")]
    Locked { path: PathBuf, pid: String },
    #[error("`{command}` failed: {message}")]
    Git { command: String, message: String },
    #[error("{doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] takt_store::StoreError),
    #[error(transparent)]
    Blob(#[from] takt_blob::BlobError),
}

impl EngineError {
    /// Whether the error is the user's input (exit code 2) rather than a failure of takt's
    /// surroundings.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EngineError::NotARepo { .. }
                | EngineError::UnknownRevision { .. }
                | EngineError::NoPipelineFile { .. }
                | EngineError::InvalidPipeline(_)
                | EngineError::Plan(_)
                | EngineError::Locked { .. }
        )
    }
}
