//! What the server and an environment's supervisor say to each other: one JSON object per line
//! over the supervisor's Unix socket, a request and then its response.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A request to the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Starts `instances` copies of a release under `slot` (each with its own `PORT`) and
    /// answers once every one of them answers its health path with 2xx (or fails).
    Start {
        slot: String,
        /// The release's read-only directory: the working directory of its instances.
        dir: PathBuf,
        /// Run with `sh -c`.
        command: String,
        instances: u32,
        env: Vec<(String, String)>,
        health: String,
        ready_timeout_ms: u64,
    },
    /// Shares the public port's traffic among slots (weights in percent; absent slots get none).
    Route {
        weights: Vec<(String, u32)>,
    },
    /// Sends all traffic of the preview port (bound on first use) to `slot`; `None`: nothing.
    Preview {
        port: u16,
        slot: Option<String>,
    },
    /// Stops a slot's instances.
    Stop {
        slot: String,
    },
    /// Restarts a slot's instances one at a time (remediation): each is stopped, started
    /// again on its port, and answers its health path before the next.
    Restart {
        slot: String,
        health: String,
        ready_timeout_ms: u64,
    },
    Status,
    /// Stops every instance and the supervisor.
    Shutdown,
}

/// The supervisor's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// What the supervisor runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// The public port (0: no proxy; the nginx driver routes instead).
    pub port: u16,
    pub slots: Vec<SlotStatus>,
    /// Everything the public port's proxy counted since the supervisor started: every slot's,
    /// also of slots stopped since, and requests refused for want of an instance (errors).
    #[serde(default)]
    pub total: Traffic,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: String,
    /// Percent of the public port's traffic.
    pub weight: u32,
    pub instances: Vec<InstanceStatus>,
    /// Totals since the slot started, as the proxy saw them.
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub port: u16,
    pub pid: Option<u32>,
    pub restarts: u32,
}

/// Requests, errors (5xx and unreachable) and summed latency, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub latency_us: u64,
}

impl Traffic {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency_us: self.latency_us.saturating_sub(earlier.latency_us),
        }
    }
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
    pub fn mean_latency_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_us as f64 / self.requests as f64 / 1000.0
        }
    }
}
