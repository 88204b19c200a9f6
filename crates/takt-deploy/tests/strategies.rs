//! Properties of every strategy's state machine, over random plans, random failures and random
//! interventions by people (halts, resumes, approvals, rollbacks):
//! - every deploy ends: succeeded (all traffic to the new version), rolled back or failed (all
//!   traffic to the old one), or rollback failed (the caller halts the environment);
//! - traffic weights always sum to 100, and without an old version all of it goes to the new;
//! - nothing is stopped while it still holds traffic: a rollback moves the weights back before
//!   it stops the new version, and the old one is stopped only once the new one has it all;
//! - all of this holds as well for a deploy continued after a restart from the position it had
//!   reached (`Deploy::resume_at`).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::time::Duration;
use takt_deploy::analysis::{AnalysisSpec, Measurement};
use takt_deploy::canary::Step;
use takt_deploy::strategy::{Action, Deploy, End, Plan, Side, Spec};

fn plan() -> impl Strategy<Value = Plan> {
    let step = prop_oneof![
        (0u8..=100).prop_map(Step::SetWeight),
        prop::option::of((0u64..30).prop_map(Duration::from_secs)).prop_map(Step::Pause),
        (1u64..5, 1u32..4, 0u32..2).prop_map(|(i, count, failure_limit)| Step::Analysis(AnalysisSpec {
            interval: Duration::from_secs(i),
            count,
            failure_limit,
            ..Default::default()
        })),
    ];
    prop_oneof![
        Just(Plan::Recreate),
        (
            1u32..4,
            1u32..7,
            prop::option::of((0u64..20).prop_map(Duration::from_secs))
        )
            .prop_map(|(batch, instances, pause)| Plan::Rolling {
                batch,
                instances,
                pause
            }),
        (any::<bool>(), 0u64..600).prop_map(|(preview, k)| Plan::BlueGreen {
            preview,
            keep_old: Duration::from_secs(k)
        }),
        (prop::collection::vec(step, 0..6), prop::option::of(5u64..60)).prop_map(|(steps, d)| Plan::Canary {
            steps,
            progress_deadline: d.map(Duration::from_secs),
        }),
    ]
}

/// What the world does at each turn: a number picks success or failure of the action, or a
/// person's intervention before it.
fn world() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 200)
}

#[derive(Debug, Default)]
struct Traffic {
    /// The weights of the last route that succeeded (old, new); `None`: never routed.
    now: Option<(u8, u8)>,
    new_started: bool,
}

/// Drives `d` with the world's answers for at most `turns` turns (then `Ok(None)`), checking
/// the invariants at every action; `Ok(Some(end))` when it ended.
fn drive(
    d: &mut Deploy,
    t: &mut Traffic,
    has_old: bool,
    roll: &mut dyn FnMut() -> u8,
    now: &mut Duration,
    turns: usize,
) -> Result<Option<End>, TestCaseError> {
    let mut action = d.next(*now);
    for _ in 0..turns {
        let r = roll();
        // A person steps in now and then: halts, rollbacks.
        if r.is_multiple_of(23) {
            d.halt(*now, "the andon cord");
        }
        if r % 97 == 1 {
            action = d.abort(*now, "rolled back by hand");
            continue;
        }
        let ok = !r.is_multiple_of(7);
        let res = if ok { Ok(()) } else { Err(format!("failure {r}")) };
        action = match action {
            Action::Done(end) => return Ok(Some(end)),
            Action::WaitUntil(until) => {
                *now = until.max(*now);
                d.next(*now)
            }
            Action::AwaitApproval => d.approved(*now),
            Action::Paused { .. } | Action::Halted { .. } => {
                *now += Duration::from_secs(u64::from(r % 50));
                d.resume(*now)
            }
            Action::Measure { .. } => {
                let m = [
                    Measurement::Successful,
                    Measurement::Successful,
                    Measurement::Failed,
                    Measurement::Inconclusive,
                    Measurement::Error,
                ][usize::from(r % 5)];
                d.measured(*now, m)
            }
            Action::Route(w) => {
                prop_assert_eq!(u16::from(w.old) + u16::from(w.new), 100, "weights {:?}", w);
                prop_assert!(has_old || w.new == 100, "no old version, yet {w:?}");
                prop_assert!(t.new_started, "traffic to a version not started: {w:?}");
                if ok {
                    t.now = Some((w.old, w.new));
                }
                d.done(*now, res)
            }
            Action::RouteBack { .. } => {
                prop_assert!(has_old);
                if ok {
                    t.now = Some((100, 0));
                }
                d.done(*now, res)
            }
            Action::Unroute => {
                if ok {
                    t.now = Some((0, 0));
                }
                d.done(*now, res)
            }
            Action::Start => {
                t.new_started = true;
                d.done(*now, res)
            }
            Action::StopNew => {
                prop_assert!(
                    t.now.is_none_or(|(_, new)| new == 0),
                    "stops the new version while it holds {:?}",
                    t.now
                );
                d.done(*now, res)
            }
            Action::StopOld => {
                prop_assert!(
                    t.now.is_some_and(|(old, _)| old == 0),
                    "stops the old version while it holds {:?}",
                    t.now
                );
                d.done(*now, res)
            }
            Action::Smoke { of: Side::Old, .. } | Action::StartOld => {
                prop_assert!(has_old);
                d.done(*now, res)
            }
            _ => d.done(*now, res),
        };
    }
    Ok(None)
}

fn check_end(d: &mut Deploy, end: End, t: &Traffic, now: Duration) -> Result<(), TestCaseError> {
    match end {
        End::Succeeded { .. } => prop_assert_eq!(t.now, Some((0, 100))),
        End::RolledBack { .. } => prop_assert_eq!(t.now, Some((100, 0))),
        End::Failed { .. } | End::Cancelled { .. } => prop_assert!(
            t.now.is_none_or(|(_, new)| new == 0),
            "failed, yet the new version holds {:?}",
            t.now
        ),
        End::RollbackFailed { .. } => {}
    }
    prop_assert!(d.finished());
    // Once over it stays over, whatever comes in.
    prop_assert!(matches!(d.resume(now), Action::Done(_)));
    prop_assert!(matches!(d.abort(now, "late"), Action::Done(_)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_deploy_ends_safely(
        plan in plan(),
        approval in any::<bool>(),
        has_old in any::<bool>(),
        pause_on_failure in any::<bool>(),
        honours_halt in any::<bool>(),
        world in world(),
    ) {
        let mut d = Deploy::new(Spec { plan, approval, has_old, pause_on_failure, honours_halt });
        let mut t = Traffic::default();
        let mut now = Duration::ZERO;
        let mut dice = world.iter().copied().cycle();
        let mut roll = move || dice.next().unwrap_or(0);
        let end = drive(&mut d, &mut t, has_old, &mut roll, &mut now, 5000)?;
        prop_assert!(end.is_some(), "no end after 5000 turns");
        check_end(&mut d, end.unwrap(), &t, now)?;
    }

    /// The server stops after `cut` turns; a new one continues from the position and weight
    /// the old one had reached, with a fresh clock and the traffic as the supervisor kept it.
    #[test]
    fn a_deploy_continued_after_a_restart_ends_safely(
        plan in plan(),
        approval in any::<bool>(),
        has_old in any::<bool>(),
        pause_on_failure in any::<bool>(),
        world in world(),
        cut in 1usize..40,
    ) {
        let spec = Spec { plan, approval, has_old, pause_on_failure, honours_halt: true };
        let mut d = Deploy::new(spec.clone());
        let mut t = Traffic::default();
        let mut now = Duration::ZERO;
        let mut dice = world.iter().copied().cycle();
        let mut roll = move || dice.next().unwrap_or(0);
        if let Some(end) = drive(&mut d, &mut t, has_old, &mut roll, &mut now, cut)? {
            return check_end(&mut d, end, &t, now);
        }
        let Some(at) = d.position() else {
            // Rolling back, stopping or paused after a failure: a restart rolls it back.
            return Ok(());
        };
        let mut d = Deploy::resume_at(spec, at, d.weight()).expect("its own position fits its plan");
        prop_assert_eq!(d.position(), Some(at));
        // The new server does not know whether the new version still runs: it starts it again
        // if need be before anything else is routed to it.
        t.new_started = false;
        let mut now = Duration::ZERO;
        let end = drive(&mut d, &mut t, has_old, &mut roll, &mut now, 5000)?;
        prop_assert!(end.is_some(), "no end after 5000 turns");
        check_end(&mut d, end.unwrap(), &t, now)?;
    }
}
