//! Polling: every project's repository fetched on an interval, each branch or tag that moved
//! reported through the trigger path.

use crate::Ci;
use crate::trigger::report;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use takt_model::Trigger;

/// Polls every project's repository: each `interval` (or the project's `poll_seconds`; 0 turns
/// it off) the mirror is fetched and every branch or tag that moved or appeared is reported.
/// Each project is polled by a task of its own, so one slow remote (bounded by git's
/// timeouts) delays only its own project; a project is never polled twice at once.
pub fn start(ci: Arc<Ci>, interval: Duration) {
    tokio::spawn(async move {
        let polls: Arc<Mutex<HashMap<String, Poll>>> = Arc::default();
        let tick = Duration::from_millis(200).min(interval.max(Duration::from_millis(50)));
        loop {
            tokio::time::sleep(tick).await;
            let projects = ci.projects.read().list();
            for p in projects {
                let every = p.options.poll_seconds.map_or(interval, Duration::from_secs);
                if every.is_zero() {
                    continue;
                }
                let known = {
                    let mut polls = polls.lock();
                    let entry = polls.entry(p.name.clone()).or_default();
                    let due = !entry.busy && entry.last.is_none_or(|t| t.elapsed() >= every);
                    if !due {
                        continue;
                    }
                    entry.busy = true;
                    entry.refs.take()
                };
                let (ci, polls) = (ci.clone(), polls.clone());
                tokio::spawn(async move {
                    // Marks the poll done however the task ends (even by a panic).
                    let mut done = PollDone {
                        polls,
                        name: p.name.clone(),
                        refs: None,
                    };
                    done.refs = poll_one(&ci, &p.name, known).await;
                });
            }
        }
    });
}

/// Ends a project's poll when dropped: not busy any more, and the refs it saw (if any).
struct PollDone {
    polls: Arc<Mutex<HashMap<String, Poll>>>,
    name: String,
    refs: Option<HashMap<String, String>>,
}

impl Drop for PollDone {
    fn drop(&mut self) {
        {
            let mut polls = self.polls.lock();
            *polls.entry(self.name.clone()).or_default() = Poll {
                last: Some(Instant::now()),
                busy: false,
                refs: self.refs.take(),
            };
        }
    }
}

/// One project's polling state.
#[derive(Default)]
struct Poll {
    /// When its last poll ended.
    last: Option<Instant>,
    /// A poll is under way.
    busy: bool,
    /// The refs it had then (`None` before the first look).
    refs: Option<HashMap<String, String>>,
}

/// Fetches one project's mirror and reports what moved since `before`; returns the refs now.
async fn poll_one(ci: &Ci, name: &str, before: Option<HashMap<String, String>>) -> Option<HashMap<String, String>> {
    let mirror = takt_engine::git::Repo::bare(&crate::projects::mirror_path(&ci.data_dir, name));
    let before = match before {
        Some(refs) => refs,
        // First look: what the mirror has now is known; news starts after it. If git cannot
        // say, the first look waits for the next poll (an empty list would make every branch
        // look new).
        None => match mirror.refs().await {
            Ok(refs) => refs.into_iter().collect(),
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "poll: cannot list the mirror's refs");
                return None;
            }
        },
    };
    if let Err(e) = ci.queue.fetch(name).await {
        tracing::warn!(project = %name, error = %e, "poll: cannot fetch");
    }
    let now: HashMap<String, String> = match mirror.refs().await {
        Ok(refs) => refs.into_iter().collect(),
        Err(e) => {
            tracing::warn!(project = %name, error = %e, "poll: cannot list the mirror's refs");
            return Some(before);
        }
    };
    for (r, id) in &now {
        if before.get(r) == Some(id) {
            continue;
        }
        match report(ci, name, Some(id), Some(r), Trigger::Poll, false).await {
            Ok((s, commit)) => {
                tracing::info!(project = %name, git_ref = %r, %commit, ?s, "poll found a new commit")
            }
            Err(e) => {
                tracing::warn!(project = %name, git_ref = %r, error = %e, "poll: cannot queue")
            }
        }
    }
    Some(now)
}
