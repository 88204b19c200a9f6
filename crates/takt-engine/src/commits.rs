//! `commit_info` events: what each commit a run or a deploy names says about itself (author,
//! committer date, subject), recorded once per project and commit.

use crate::EngineError;
use crate::git::Repo;
use std::collections::{HashMap, HashSet};
use takt_model::{Event, EventKind};
use takt_store::{EventFilter, Store};
use tokio::sync::Mutex;

/// Records `commit_info` once per (project, commit); remembers which it has (read from the log
/// the first time a project is asked about).
#[derive(Debug)]
pub struct CommitInfos {
    store: Store,
    known: Mutex<HashMap<String, HashSet<String>>>,
}

/// How many commits one `git log` call describes.
const BATCH: usize = 500;

impl CommitInfos {
    pub fn new(store: Store) -> CommitInfos {
        CommitInfos {
            store,
            known: Mutex::default(),
        }
    }

    /// Records a `commit_info` for each of `commits` not recorded before, read from `repo`
    /// (commits it lacks are left out). `run`: the run that names them, if any.
    pub async fn record(
        &self,
        project: &str,
        run: Option<u64>,
        repo: &Repo,
        commits: &[String],
    ) -> Result<(), EngineError> {
        let mut known = self.known.lock().await;
        if !known.contains_key(project) {
            let mut seen = HashSet::new();
            let infos = EventFilter {
                project: Some(project.to_string()),
                kind: Some("commit_info".into()),
                ..Default::default()
            };
            self.store
                .scan(&infos, |e| {
                    if let EventKind::CommitInfo { commit, .. } = e.kind {
                        seen.insert(commit);
                    }
                })
                .await?;
            known.insert(project.to_string(), seen);
        }
        let seen = known.entry(project.to_string()).or_default();
        let new: Vec<&String> = commits.iter().filter(|c| !seen.contains(*c)).collect();
        for chunk in new.chunks(BATCH) {
            let shas: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
            for info in repo.describe(&shas).await {
                let commit = info.commit.clone();
                let kind = EventKind::CommitInfo {
                    commit: info.commit,
                    author: info.author,
                    email: info.email,
                    committed_at: info.committed_at,
                    subject: info.subject,
                };
                self.store.append(&Event::now(project, run, kind)).await?;
                seen.insert(commit);
            }
        }
        Ok(())
    }
}
