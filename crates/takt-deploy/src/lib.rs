//! Progressive delivery, pure: no I/O, no clock, no tokio. Time is passed in.
//!
//! - [`split::WeightedRoundRobin`]: deterministic traffic splitting (the smooth weighted
//!   round-robin nginx uses), so that a test can count exactly which share went where.
//! - [`analysis::Analysis`]: the verdict of a series of measurements, with Argo Rollouts'
//!   `failure_limit`, `inconclusive_limit` and `consecutive_error_limit`.
//! - [`canary::Rollout`]: a canary's steps (`set_weight`, `pause`, `analysis`) as a state
//!   machine that says what to do next: shift traffic, wait, measure, promote, roll back.
//! - [`strategy::Deploy`]: a whole deploy — approval, start, smoke checks, every strategy
//!   (recreate, rolling, blue/green, canary), pause on failure and rollback — as one state
//!   machine the CD service's interpreter loop drives through the environment's driver.
//! - [`condition`]: analysis conditions such as `error_rate < 0.01 && latency_ms < 200`.
//! - [`gate::check`]: the gates before a deploy starts (halt, freeze, requires, soak, one at a
//!   time, already runs) as one function to `Admit` or a typed `Refusal`.
//!
//! Drivers (process, nginx, command) and the supervisor are adapters elsewhere; they call these.

pub mod analysis;
pub mod canary;
pub mod condition;
pub mod gate;
pub mod split;
pub mod strategy;
