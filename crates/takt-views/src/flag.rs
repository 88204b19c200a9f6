//! Feature flags as their changes tell it: per project, environment and flag, what the file
//! last defined, the run-time setting that wins over it (until the file changes that flag
//! again), and when it last changed.

use crate::Projection;
use serde::Serialize;
use std::collections::BTreeMap;
use takt_model::{Event, EventKind, FlagSetting, FlagSource, OffsetDateTime, timefmt};

/// One flag in one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagView {
    /// What the default branch's file defines there (`None`: no longer defined).
    pub file: Option<FlagSetting>,
    /// A run-time change, in force over the file until the file changes this flag.
    pub runtime: Option<RuntimeSetting>,
    /// When it last changed, from either source.
    #[serde(with = "timefmt::ms")]
    pub changed_at: OffsetDateTime,
}

/// A change made at run time: the setting and who made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeSetting {
    pub setting: FlagSetting,
    pub by: String,
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
}

impl FlagView {
    /// The setting in force, and where it comes from.
    pub fn in_force(&self) -> Option<(&FlagSetting, FlagSource)> {
        match (&self.runtime, &self.file) {
            (Some(r), Some(_)) => Some((&r.setting, FlagSource::Api)),
            (None, Some(f)) => Some((f, FlagSource::File)),
            (_, None) => None,
        }
    }
}

/// Every flag of every project, by (project, environment, flag key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub flags: BTreeMap<(String, String, String), FlagView>,
}

impl Flags {
    /// `project`'s flags: `((environment, key), view)`.
    pub fn of<'a>(&'a self, project: &'a str) -> impl Iterator<Item = ((&'a str, &'a str), &'a FlagView)> + 'a {
        // Keys sort by project first: its flags are one range of the map.
        self.flags
            .range((project.to_string(), String::new(), String::new())..)
            .take_while(move |((p, _, _), _)| p == project)
            .map(|((_, e, k), v)| ((e.as_str(), k.as_str()), v))
    }

    pub fn get(&self, project: &str, env: &str, key: &str) -> Option<&FlagView> {
        self.flags.get(&(project.to_string(), env.to_string(), key.to_string()))
    }
}

impl Projection for Flags {
    const KINDS: &'static [&'static str] = &["flag_changed"];

    fn apply(&mut self, e: &Event) {
        let EventKind::FlagChanged {
            environment,
            flag,
            source,
            by,
            after,
            ..
        } = &e.kind
        else {
            return;
        };
        let v = self
            .flags
            .entry((e.project.clone(), environment.clone(), flag.clone()))
            .or_insert_with(|| FlagView {
                file: None,
                runtime: None,
                changed_at: e.at,
            });
        v.changed_at = e.at;
        match source {
            FlagSource::File => {
                v.file = after.clone();
                v.runtime = None;
            }
            FlagSource::Api => {
                v.runtime = after.clone().map(|setting| RuntimeSetting {
                    setting,
                    by: by.clone().unwrap_or_default(),
                    at: e.at,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::FlagState;

    fn setting(state: FlagState) -> FlagSetting {
        FlagSetting {
            state,
            default_variant: Some("off".into()),
            targeting: None,
            variants: BTreeMap::new(),
        }
    }

    fn changed(source: FlagSource, after: FlagState, minute: i64) -> Event {
        Event {
            seq: None,
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute),
            project: "shop".into(),
            run: None,
            kind: EventKind::FlagChanged {
                environment: "production".into(),
                flag: "new-checkout".into(),
                source,
                by: (source == FlagSource::Api).then(|| "ops".into()),
                commit: None,
                before: None,
                after: Some(setting(after)),
            },
        }
    }

    #[test]
    fn a_runtime_change_wins_until_the_file_changes_that_flag_again() {
        let log = [
            changed(FlagSource::File, FlagState::Enabled, 0),
            changed(FlagSource::Api, FlagState::Disabled, 1),
        ];
        let flags = Flags::fold(&log);
        let v = flags.get("shop", "production", "new-checkout").unwrap();
        assert_eq!(
            v.in_force().map(|(s, src)| (s.state, src)),
            Some((FlagState::Disabled, FlagSource::Api))
        );
        assert_eq!(v.runtime.as_ref().unwrap().by, "ops");
        let log = [
            log[0].clone(),
            log[1].clone(),
            changed(FlagSource::File, FlagState::Enabled, 2),
        ];
        let flags = Flags::fold(&log);
        let v = flags.get("shop", "production", "new-checkout").unwrap();
        assert_eq!(
            v.in_force().map(|(s, src)| (s.state, src)),
            Some((FlagState::Enabled, FlagSource::File))
        );
        assert_eq!(v.changed_at, OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(2));
    }
}
