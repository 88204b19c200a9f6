//! takt's integration tests: the real binary, real repositories, servers and tools. One test
//! binary (one link, and one pool of test threads for all of them instead of 22 binaries run
//! one after another); each file is a module named for what it tests.
#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

mod common;

mod arrows;
mod artifacts_api;
mod cli;
mod demo;
mod deploy;
mod deploy_drivers;
mod deploy_gates;
mod examples;
mod flags;
mod flow_metrics;
mod followers;
mod forge;
mod gitlab;
mod isolation;
mod lint;
mod monitoring;
mod newcomer;
mod notify;
mod remediation;
mod run;
mod s3;
mod security;
mod serve;
mod server_pg;
mod server_runs;
mod triggers;
mod ui;
