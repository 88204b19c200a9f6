//! Artifacts: each stored version, where it came from, and whether it was deleted, folded from
//! `artifact_stored` and `artifact_deleted`. (The signed manifest, with the provenance, is in
//! the artifact repository; this is what the log says.)

use crate::Projection;
use serde::{Deserialize, Serialize};
use takt_model::{Event, EventKind, timefmt};

/// One stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactView {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    pub project: String,
    /// The run whose job stored it; `None` for a push.
    pub run: Option<u64>,
    /// The job that stored it (`push` for a push).
    pub job: String,
    /// RFC 3339.
    pub stored_at: String,
}

/// Every version stored and not deleted, in the order they were stored.
#[derive(Debug, Clone, Default)]
pub struct Artifacts {
    stored: Vec<ArtifactView>,
}

impl Projection for Artifacts {
    const KINDS: &'static [&'static str] = &["artifact_stored", "artifact_deleted"];

    fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::ArtifactStored {
                job,
                name,
                version,
                digest,
                size,
            } => self.stored.push(ArtifactView {
                name: name.clone(),
                version: version.clone(),
                digest: digest.clone(),
                size: *size,
                project: e.project.clone(),
                run: e.run.filter(|r| *r > 0),
                job: job.clone(),
                stored_at: timefmt::rfc3339(e.at),
            }),
            EventKind::ArtifactDeleted { name, version, .. } => {
                self.stored.retain(|a| !(a.name == *name && a.version == *version));
            }
            _ => {}
        }
    }
}

impl Artifacts {
    /// Newest first, of one project and one name if given.
    pub fn newest_first<'a>(
        &'a self,
        project: Option<&'a str>,
        name: Option<&'a str>,
    ) -> impl Iterator<Item = &'a ArtifactView> + 'a {
        self.stored
            .iter()
            .rev()
            .filter(move |a| project.is_none_or(|p| a.project == p) && name.is_none_or(|n| a.name == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::OffsetDateTime;

    fn ev(project: &str, run: Option<u64>, kind: EventKind) -> Event {
        let mut e = Event::now(project, run, kind);
        e.at = OffsetDateTime::UNIX_EPOCH;
        e
    }

    #[test]
    fn versions_fold_newest_first_and_deleted_ones_go() {
        let stored = |name: &str, version: &str, run| {
            ev(
                "demo",
                run,
                EventKind::ArtifactStored {
                    job: "build".into(),
                    name: name.into(),
                    version: version.into(),
                    digest: format!("sha256:{version}"),
                    size: 3,
                },
            )
        };
        let events = [
            stored("app", "1", Some(1)),
            stored("app", "2", Some(2)),
            stored("lib", "1", None),
            ev(
                "demo",
                None,
                EventKind::ArtifactDeleted {
                    name: "app".into(),
                    version: "1".into(),
                    digest: "sha256:1".into(),
                    reason: "keep_last".into(),
                },
            ),
        ];
        let a = Artifacts::fold(&events);
        let all: Vec<_> = a
            .newest_first(None, None)
            .map(|x| (x.name.as_str(), x.version.as_str()))
            .collect();
        assert_eq!(all, [("lib", "1"), ("app", "2")]);
        assert_eq!(a.newest_first(Some("demo"), Some("app")).count(), 1);
        assert_eq!(a.newest_first(Some("other"), None).count(), 0);
        let lib = a.newest_first(None, Some("lib")).next().unwrap();
        assert_eq!((lib.run, lib.stored_at.as_str()), (None, "1970-01-01T00:00:00.000Z"));
    }
}
