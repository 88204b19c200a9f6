//! Typed views of takt's event log: each concept (a run and its jobs, an incident, ...) is a
//! plain struct folded from the events that concern it, behind one [`Projection`] trait.
//!
//! Pure: no I/O, no clock, no tokio. The server, the CLI, metrics and notifications fold the
//! same events the same way through these types; what a view shows over HTTP is its serde
//! form. Views are rebuilt from the log when the server starts (see ARCHITECTURE.md, "Views").

pub mod artifact;
pub mod check;
pub mod commit;
pub mod drill;
pub mod environment;
pub mod flag;
pub mod incident;
pub mod project;
pub mod run;
pub mod token;

pub use artifact::{ArtifactView, Artifacts};
pub use check::{CheckView, Checks};
pub use commit::{CommitView, Commits};
pub use drill::{DrillView, Drills};
pub use environment::{Deployment, EnvView, Environments, Halt, InFlight, StepView, Stopped};
pub use flag::{FlagView, Flags, RuntimeSetting};
pub use incident::{Acknowledged, Incident, IncidentEntry, Incidents};
pub use project::{Project, Projects, Sealed};
pub use run::{JobState, JobView, Pending, RunState, RunView, Runs};
pub use token::{TokenInfo, Tokens};

use takt_model::Event;

/// A view folded from events, one at a time, in log order.
pub trait Projection {
    /// The event kinds it folds (`EventKind::name`); others are ignored. Readers ask the store
    /// for these kinds only.
    const KINDS: &'static [&'static str];

    /// Folds one event (of one of [`Projection::KINDS`]; others must be ignored).
    fn apply(&mut self, e: &Event);

    /// Whether `e` is of a kind this view folds.
    fn wants(e: &Event) -> bool {
        Self::KINDS.contains(&e.kind.name())
    }

    /// The view of these events (in log order).
    fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self
    where
        Self: Default,
    {
        let mut view = Self::default();
        for e in events {
            if Self::wants(e) {
                view.apply(e);
            }
        }
        view
    }
}
