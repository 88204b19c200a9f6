//! The gates a deploy passes before it starts, as one pure function: from what the
//! environment's view says (and the time, passed in) to [`Verdict::Admit`], nothing to do
//! ([`Verdict::AlreadyRuns`]), or a typed [`Refusal`] whose text is what the CLI and the API
//! say. A rollback passes the halt, freeze and `requires` gates (it is how one gets out of
//! trouble), never the one-deploy-at-a-time gate.

use std::fmt;
use std::time::Duration;

/// What holds an environment while `takt env stop` stops it (deploys are numbered from 1).
pub const STOPPING: u64 = 0;

/// An artifact as the gates compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
}

/// What an environment this one `requires` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream<'a> {
    pub environment: &'a str,
    /// name, version and digest of what it runs, if anything.
    pub running: Option<Wanted<'a>>,
    pub healthy: bool,
    /// How long what it runs has run there (now − since), if known.
    pub ran_for: Option<Duration>,
}

/// Everything the gates look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gates<'a> {
    pub environment: &'a str,
    pub wanted: Wanted<'a>,
    /// A rollback (or restore) of the environment.
    pub rollback: bool,
    /// Redeploy even what already runs (a restore after a restart).
    pub restore: bool,
    /// The reason of the halt in force, if any.
    pub halted: Option<&'a str>,
    /// The end of the freeze in force (RFC 3339), if any.
    pub frozen_until: Option<&'a str>,
    pub requires: Vec<Upstream<'a>>,
    /// How long what is deployed must have run in each required environment.
    pub soak: Option<Duration>,
    /// The deploy in flight here, if any, and whether it waits for an approval.
    pub busy: Option<(u64, bool)>,
    /// What runs here now, and whether its last deploy passed its checks.
    pub running_digest: Option<&'a str>,
    pub healthy: bool,
}

/// What the gates decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// It runs, healthy, already: nothing to do.
    AlreadyRuns,
    Refused(Refusal),
}

/// Why a deploy may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Halted {
        environment: String,
        reason: String,
    },
    Frozen {
        environment: String,
        until: String,
    },
    /// A required environment does not run it healthy (`runs`: what it runs instead).
    RequiresNotHealthy {
        environment: String,
        required: String,
        artifact: String,
        runs: Option<String>,
    },
    SoakNotOver {
        environment: String,
        required: String,
        artifact: String,
        soak: Duration,
        ran: Duration,
    },
    Busy {
        environment: String,
        deploy: u64,
    },
    AwaitingApproval {
        environment: String,
        deploy: u64,
    },
    /// `takt env stop` holds the environment while it stops it.
    Stopping {
        environment: String,
    },
}

impl Refusal {
    /// The deploy in flight that holds the environment, for the refusals that have one.
    pub fn deploy(&self) -> Option<u64> {
        match self {
            Refusal::Busy { deploy, .. } | Refusal::AwaitingApproval { deploy, .. } => Some(*deploy),
            _ => None,
        }
    }

    /// Something holds the environment for now (a deploy, a stop): trying again once it is
    /// free may succeed.
    pub fn held(&self) -> bool {
        matches!(
            self,
            Refusal::Busy { .. } | Refusal::AwaitingApproval { .. } | Refusal::Stopping { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Halted { environment: e, reason } => {
                write!(
                    f,
                    "environment `{e}` is halted ({reason}); `takt resume {e}` lifts the halt"
                )
            }
            Refusal::Frozen { environment: e, until } => write!(
                f,
                "environment `{e}` is frozen until {until}; deploys and promotions are refused until then (halt and rollback still work)"
            ),
            Refusal::RequiresNotHealthy {
                environment: e,
                required,
                artifact,
                runs,
            } => write!(
                f,
                "environment `{e}` requires {artifact} to run healthy in `{required}` first (it runs {} there)",
                runs.as_deref().unwrap_or("nothing")
            ),
            Refusal::SoakNotOver {
                environment: e,
                required,
                artifact,
                soak,
                ran,
            } => write!(
                f,
                "environment `{e}` requires {artifact} to soak in `{required}` for {}s; it has for {}s",
                soak.as_secs(),
                ran.as_secs()
            ),
            Refusal::Stopping { environment: e } => write!(
                f,
                "environment `{e}` is being stopped (`takt env stop`); deploy again once it has"
            ),
            Refusal::Busy { environment: e, deploy } => write!(
                f,
                "environment `{e}` is busy with deploy #{deploy}; one deploy per environment at a time (wait, or `takt halt`/`takt rollback {e}`)"
            ),
            Refusal::AwaitingApproval { environment: e, deploy } => write!(
                f,
                "environment `{e}` is busy with deploy #{deploy}, which waits for approval (`takt approve {e}`, or `takt rollback {e}`)"
            ),
        }
    }
}

fn shown(w: &Wanted<'_>) -> String {
    format!("{}@{}", w.name, w.version)
}

/// Why an environment held by `deploy` (or by a stop) refuses another deploy.
pub fn held_by(environment: &str, deploy: u64, waiting_for_approval: bool) -> Refusal {
    let environment = environment.to_string();
    if deploy == STOPPING {
        Refusal::Stopping { environment }
    } else if waiting_for_approval {
        Refusal::AwaitingApproval { environment, deploy }
    } else {
        Refusal::Busy { environment, deploy }
    }
}

/// The gates, in order: halt, freeze, each required environment (runs it healthy, soaked),
/// then one deploy at a time, then whether it runs already.
pub fn check(g: &Gates<'_>) -> Verdict {
    let environment = g.environment.to_string();
    let refuse = Verdict::Refused;
    if !g.rollback {
        if let Some(reason) = g.halted {
            return refuse(Refusal::Halted {
                environment,
                reason: reason.to_string(),
            });
        }
        if let Some(until) = g.frozen_until {
            return refuse(Refusal::Frozen {
                environment,
                until: until.to_string(),
            });
        }
        for up in &g.requires {
            let runs_it = up.running.as_ref().is_some_and(|r| r.digest == g.wanted.digest);
            if !runs_it || !up.healthy {
                return refuse(Refusal::RequiresNotHealthy {
                    environment,
                    required: up.environment.to_string(),
                    artifact: shown(&g.wanted),
                    runs: up
                        .running
                        .as_ref()
                        .map(|r| format!("{}{}", shown(r), if up.healthy { "" } else { ", unhealthy" })),
                });
            }
            if let (Some(soak), Some(ran)) = (g.soak, up.ran_for)
                && ran < soak
            {
                return refuse(Refusal::SoakNotOver {
                    environment,
                    required: up.environment.to_string(),
                    artifact: shown(&g.wanted),
                    soak,
                    ran,
                });
            }
        }
    }
    if let Some((deploy, waiting)) = g.busy {
        return refuse(held_by(g.environment, deploy, waiting));
    }
    if !g.restore && g.healthy && g.running_digest == Some(g.wanted.digest) {
        return Verdict::AlreadyRuns;
    }
    Verdict::Admit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(version: &'static str) -> Wanted<'static> {
        Wanted {
            name: "app",
            version,
            digest: version,
        }
    }

    fn gates() -> Gates<'static> {
        Gates {
            environment: "prod",
            wanted: art("2"),
            rollback: false,
            restore: false,
            halted: None,
            frozen_until: None,
            requires: vec![Upstream {
                environment: "staging",
                running: Some(art("2")),
                healthy: true,
                ran_for: Some(Duration::from_secs(600)),
            }],
            soak: Some(Duration::from_secs(300)),
            busy: None,
            running_digest: Some("1"),
            healthy: true,
        }
    }

    fn refusal(g: &Gates<'_>) -> Refusal {
        match check(g) {
            Verdict::Refused(r) => r,
            v => panic!("admitted: {v:?}"),
        }
    }

    #[test]
    fn a_deploy_that_passes_every_gate_is_admitted() {
        assert_eq!(check(&gates()), Verdict::Admit);
        let mut g = gates();
        g.running_digest = Some("2");
        assert_eq!(check(&g), Verdict::AlreadyRuns);
        g.restore = true;
        assert_eq!(check(&g), Verdict::Admit, "a restore redeploys what runs");
        g.restore = false;
        g.healthy = false;
        assert_eq!(check(&g), Verdict::Admit, "an unhealthy one is deployed again");
    }

    #[test]
    fn each_gate_refuses_with_its_reason() {
        let mut g = gates();
        g.halted = Some("incident 7");
        g.frozen_until = Some("2026-12-24T00:00:00Z");
        let r = refusal(&g);
        assert!(matches!(r, Refusal::Halted { .. }), "the halt comes first");
        assert!(r.to_string().contains("halted (incident 7); `takt resume prod`"), "{r}");

        let mut g = gates();
        g.frozen_until = Some("2026-12-24T00:00:00Z");
        assert!(refusal(&g).to_string().contains("frozen until 2026-12-24T00:00:00Z"));

        let mut g = gates();
        g.requires[0].running = Some(art("1"));
        let r = refusal(&g);
        assert!(
            r.to_string()
                .contains("requires app@2 to run healthy in `staging` first (it runs app@1 there)"),
            "{r}"
        );
        g.requires[0].running = Some(art("2"));
        g.requires[0].healthy = false;
        assert!(refusal(&g).to_string().contains("(it runs app@2, unhealthy there)"));
        g.requires[0].running = None;
        assert!(refusal(&g).to_string().contains("(it runs nothing there)"));

        let mut g = gates();
        g.requires[0].ran_for = Some(Duration::from_secs(60));
        let r = refusal(&g);
        assert!(matches!(r, Refusal::SoakNotOver { .. }));
        assert!(r.to_string().contains("for 300s; it has for 60s"), "{r}");

        let mut g = gates();
        g.busy = Some((4, false));
        assert_eq!(refusal(&g).deploy(), Some(4));
        assert!(refusal(&g).to_string().contains("busy with deploy #4"));
        g.busy = Some((4, true));
        assert!(matches!(refusal(&g), Refusal::AwaitingApproval { deploy: 4, .. }));
    }

    #[test]
    fn a_rollback_passes_halt_freeze_and_requires_but_not_a_deploy_in_flight() {
        let mut g = gates();
        g.rollback = true;
        g.halted = Some("x");
        g.frozen_until = Some("t");
        g.requires[0].running = None;
        assert_eq!(check(&g), Verdict::Admit);
        g.busy = Some((9, false));
        assert_eq!(refusal(&g).deploy(), Some(9));
    }
}
