//! `commit_info` events: what each commit a run or a deploy names says about itself (author,
//! committer date, subject), recorded once per project and commit.

use crate::EngineError;
use crate::git::Repo;
use std::collections::{HashMap, HashSet};
use takt_model::{Event, EventKind, OffsetDateTime};
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

/// One commit as `git log` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub commit: String,
    pub author: String,
    pub email: Option<String>,
    pub committed_at: OffsetDateTime,
    pub subject: String,
}

/// Parses `git log --format=%H%x1f%an%x1f%ae%x1f%cI%x1f%s%x1e` output.
pub(crate) fn parse_log(out: &str) -> Vec<Described> {
    out.split('\x1e')
        .filter_map(|rec| {
            let mut f = rec.trim_start_matches('\n').split('\x1f');
            let commit = f.next()?.trim().to_string();
            let author = f.next()?.to_string();
            let email = f.next().filter(|e| !e.is_empty()).map(str::to_string);
            let at = f.next()?;
            let committed_at = takt_model::timefmt::parse_rfc3339(at)?;
            let subject = f.next().unwrap_or("").trim_end().to_string();
            (commit.len() >= 40).then_some(Described {
                commit,
                author,
                email,
                committed_at,
                subject,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_log_records_parse_and_junk_is_left_out() {
        let out = format!(
            "{a}\x1fAda Lovelace\x1fada@example.org\x1f2026-11-30T10:00:00+01:00\x1fFix the thing\x1e\n\
             {b}\x1fNo Mail\x1f\x1f2026-11-30T09:00:00Z\x1f\x1e\nnot a record",
            a = "a".repeat(40),
            b = "b".repeat(40)
        );
        let d = parse_log(&out);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].author, "Ada Lovelace");
        assert_eq!(d[0].email.as_deref(), Some("ada@example.org"));
        assert_eq!(d[0].subject, "Fix the thing");
        assert_eq!(d[0].committed_at.unix_timestamp(), 1_796_029_200);
        assert_eq!(d[1].email, None);
        assert_eq!(d[1].subject, "");
    }
}
