//! What each commit says about itself (`commit_info`, recorded once per commit a run or a
//! deploy names): its author, time and subject, for incidents' suspects and the flow metrics.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use takt_model::{Event, EventKind, OffsetDateTime, timefmt};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitView {
    pub commit: String,
    pub author: String,
    #[serde(with = "timefmt::ms")]
    pub committed_at: OffsetDateTime,
    pub subject: String,
}

/// Every commit's information, by full sha.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commits {
    pub commits: HashMap<String, CommitView>,
}

impl Commits {
    pub fn get(&self, sha: &str) -> Option<&CommitView> {
        self.commits.get(sha)
    }
}

impl Projection for Commits {
    const KINDS: &'static [&'static str] = &["commit_info"];

    fn apply(&mut self, e: &Event) {
        if let EventKind::CommitInfo {
            commit,
            author,
            committed_at,
            subject,
            ..
        } = &e.kind
        {
            self.commits.entry(commit.clone()).or_insert_with(|| CommitView {
                commit: commit.clone(),
                author: author.clone(),
                committed_at: *committed_at,
                subject: subject.clone(),
            });
        }
    }
}
