//! Maintenance windows (`maintenance:` in takt.yml), pure: whether one is open at a time, and
//! when the next one is. During a window no incident opens for the services it covers, and
//! the status page shows them as under maintenance.

use serde::{Deserialize, Serialize};

const DAY: i64 = 86_400;

/// When a window starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Every day at `minute` past midnight UTC, on these weekdays (0 Monday .. 6 Sunday; empty:
    /// every day), as Gatus's `maintenance: {start, every}`.
    Daily { minute: i64, days: Vec<u8> },
    /// Once, at unix seconds `at`.
    Once { at: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Start,
    pub duration_s: i64,
    /// The services it covers; empty: all of the project's.
    pub services: Vec<String>,
}

/// Weekday of unix seconds `t` (0 Monday .. 6 Sunday; 1970-01-01 was a Thursday).
fn weekday(t: i64) -> u8 {
    ((t.div_euclid(DAY) + 3).rem_euclid(7)) as u8
}

impl Window {
    pub fn covers(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }

    /// The occurrence open at `now`, or else the next one to start within a week: (start, end).
    pub fn around(&self, now: i64) -> Option<(i64, i64)> {
        match &self.start {
            Start::Once { at } => (now < at + self.duration_s).then_some((*at, at + self.duration_s)),
            Start::Daily { minute, days } => {
                let today = now - now.rem_euclid(DAY);
                // From yesterday's (a window may run past midnight) to a week ahead.
                (-1..=7).find_map(|k| {
                    let day = today + k * DAY;
                    if !days.is_empty() && !days.contains(&weekday(day)) {
                        return None;
                    }
                    let start = day + minute * 60;
                    let end = start + self.duration_s;
                    (now < end).then_some((start, end))
                })
            }
        }
    }

    pub fn active(&self, now: i64) -> bool {
        self.around(now).is_some_and(|(s, e)| s <= now && now < e)
    }
}

/// Whether `service` is inside one of `windows` at `now`.
pub fn under_maintenance(windows: &[Window], service: &str, now: i64) -> bool {
    windows.iter().any(|w| w.covers(service) && w.active(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_windows_on_weekdays_and_past_midnight() {
        // 1970-01-05 was a Monday.
        let monday = 4 * DAY;
        assert_eq!(weekday(monday), 0);
        assert_eq!(weekday(monday + 6 * DAY + 3600), 6);
        let w = Window {
            start: Start::Daily {
                minute: 23 * 60,
                days: vec![0],
            },
            duration_s: 2 * 3600,
            services: vec!["shop".into()],
        };
        assert!(!w.active(monday + 22 * 3600));
        assert!(w.active(monday + 23 * 3600 + 1));
        assert!(w.active(monday + DAY + 1800), "Tuesday 00:30, still Monday's window");
        assert!(!w.active(monday + DAY + 23 * 3600 + 1), "not on Tuesdays");
        assert_eq!(
            w.around(monday + DAY + 2 * 3600),
            Some((monday + 7 * DAY + 23 * 3600, monday + 8 * DAY + 3600))
        );
        assert!(w.covers("shop") && !w.covers("api"));
        assert!(under_maintenance(std::slice::from_ref(&w), "shop", monday + 23 * 3600));
        assert!(!under_maintenance(&[w], "api", monday + 23 * 3600));
    }

    #[test]
    fn a_window_once_is_over_after_it() {
        let w = Window {
            start: Start::Once { at: 1000 },
            duration_s: 60,
            services: vec![],
        };
        assert_eq!(w.around(0), Some((1000, 1060)));
        assert!(w.active(1000) && w.active(1059) && !w.active(1060) && !w.active(999));
        assert_eq!(w.around(1060), None);
        assert!(w.covers("anything"));
    }
}
