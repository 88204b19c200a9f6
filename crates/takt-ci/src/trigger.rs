//! The trigger path: every way a commit is reported (the API, a git hook, a forge's webhook,
//! the poller, a schedule) ends here — fetch the mirror, resolve what was reported, check that
//! the commit is on the branch or tag it claims, submit it to the queue.

use crate::forge::{Forge, MergeRequest};
use crate::queue::{QueueError, Submission, Submitted};
use crate::{Ci, projects};
use takt_engine::git::Repo;
use takt_model::{MergeRequestRun, Trigger};

/// Why a trigger queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// What was reported is wrong: a bad ref, an unknown revision, a commit not on its branch.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Where a reported commit belongs: `refs/heads/B` → (Some(B), None), `refs/tags/T` →
/// (None, Some(T)); the name must follow git's ref-format rules (`check_ref_name`). One
/// check for every path a ref arrives by (API, hook, webhook payload, poll, schedule).
pub fn parse_ref(r: &str) -> Result<(Option<String>, Option<String>), String> {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        projects::check_ref_name("branch", b).map(|()| (Some(b.to_string()), None))
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        projects::check_ref_name("tag", t).map(|()| (None, Some(t.to_string())))
    } else {
        let shown: String = r.chars().take(60).flat_map(char::escape_debug).collect();
        Err(format!("`{shown}` is neither refs/heads/… nor refs/tags/…"))
    }
}

/// A run is labelled with a branch only if the commit is on it (the branch's head or one of
/// its ancestors), and with a tag only if the tag names it: a branch's name decides which
/// secrets a run gets, so it cannot be claimed for another commit. Checked for every trigger
/// and for retries.
pub async fn on_its_ref(
    mirror: &Repo,
    project: &str,
    commit: &str,
    branch: Option<&str>,
    tag: Option<&str>,
) -> Result<(), String> {
    if let Some(b) = branch {
        let head = mirror
            .resolve(&format!("refs/heads/{b}"))
            .await
            .map_err(|_| format!("the repository of `{project}` has no branch `{b}`"))?;
        if head != commit && !mirror.is_ancestor(commit, &head).await {
            return Err(format!(
                "commit {commit} is not on branch `{b}` (its head is {head}); a run's branch must contain its commit"
            ));
        }
    } else if let Some(t) = tag {
        let tagged = mirror
            .resolve(&format!("refs/tags/{t}"))
            .await
            .map_err(|_| format!("the repository of `{project}` has no tag `{t}`"))?;
        if tagged != commit {
            return Err(format!("tag `{t}` names commit {tagged}, not {commit}"));
        }
    }
    Ok(())
}

/// The branch whose head `commit` is: `default` if it is one of them, else the only one;
/// `None` when no branch, or several others, have it as their head.
async fn head_branch(mirror: &Repo, commit: &str, default: &str) -> Option<String> {
    let heads: Vec<String> = mirror
        .refs()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, id)| id == commit)
        .filter_map(|(r, _)| r.strip_prefix("refs/heads/").map(str::to_string))
        .collect();
    if heads.iter().any(|b| b == default) {
        return Some(default.to_string());
    }
    match heads.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Fetches the project's mirror, resolves what was reported, and submits the run.
pub async fn report(
    ci: &Ci,
    project: &str,
    rev: Option<&str>,
    git_ref: Option<&str>,
    trigger: Trigger,
    force: bool,
) -> Result<(Submitted, String), TriggerError> {
    let arrived = std::time::Instant::now();
    let p = ci.project(project)?;
    let queue = &ci.queue;
    let bad = TriggerError::BadRequest;
    // What was sent is checked before any git work.
    if let Some(rev) = rev
        && (rev.is_empty() || rev.len() > projects::MAX_REF_NAME || rev.chars().any(char::is_control))
    {
        return Err(bad(format!(
            "`rev` must be a commit id, branch or tag of at most {} bytes, without control characters",
            projects::MAX_REF_NAME
        )));
    }
    let named = git_ref.map(parse_ref).transpose().map_err(bad)?;
    queue
        .fetch(project)
        .await
        .map_err(|e| bad(format!("cannot fetch the repository of `{project}`: {e}")))?;
    let mirror = Repo::bare(&projects::mirror_path(&ci.data_dir, project));
    let resolve = |rev: String| {
        let mirror = &mirror;
        async move { mirror.resolve(&rev).await.map_err(|e| bad(e.to_string())) }
    };
    let (branch, tag, commit) = match (named, git_ref, rev) {
        (Some((b, t)), Some(r), rev) => (b, t, resolve(rev.unwrap_or(r).to_string()).await?),
        (_, _, Some(rev)) => {
            let (b, t) = mirror.ref_of(rev).await;
            let commit = resolve(rev.to_string()).await?;
            if b.is_none() && t.is_none() {
                // A commit id: the branch whose head it is (the default branch first).
                (head_branch(&mirror, &commit, &p.branch).await, None, commit)
            } else {
                (b, t, commit)
            }
        }
        _ => (Some(p.branch.clone()), None, resolve(p.branch.clone()).await?),
    };
    on_its_ref(&mirror, project, &commit, branch.as_deref(), tag.as_deref())
        .await
        .map_err(bad)?;
    let submitted = queue
        .submit(Submission {
            project: project.to_string(),
            commit: commit.clone(),
            branch,
            tag,
            trigger,
            force,
            carry: None,
            merge_request: None,
        })
        .await?;
    if let Submitted::Queued(run) = submitted {
        (ci.on_queued)(project, run, arrived);
    }
    Ok((submitted, commit))
}

/// Where a forge keeps a merge request's head in the target repository: GitHub's and Gitea's
/// `refs/pull/N/head`, GitLab's `refs/merge-requests/N/head` (a mirror fetches every ref).
pub fn merge_request_ref(forge: Forge, iid: u64) -> String {
    match forge {
        Forge::Github | Forge::Gitea => format!("refs/pull/{iid}/head"),
        Forge::Gitlab => format!("refs/merge-requests/{iid}/head"),
    }
}

/// Submits a merge-request pipeline for the request's head. The head must be on the request's
/// ref in the project's repository (the forge's, not the payload's word, as a branch must
/// contain its run's commit). The run is labelled with the source branch — whose secrets a
/// protected source branch gives — only when the request is not from a fork and the head is
/// on that branch here; a fork's run has no branch, hence no secrets.
pub async fn report_merge_request(
    ci: &Ci,
    project: &str,
    forge: Forge,
    mr: &MergeRequest,
    trigger: Trigger,
) -> Result<(Submitted, String), TriggerError> {
    let arrived = std::time::Instant::now();
    ci.project(project)?;
    let bad = TriggerError::BadRequest;
    ci.queue
        .fetch(project)
        .await
        .map_err(|e| bad(format!("cannot fetch the repository of `{project}`: {e}")))?;
    let mirror = Repo::bare(&projects::mirror_path(&ci.data_dir, project));
    let mr_ref = merge_request_ref(forge, mr.iid);
    let tip = mirror.resolve(&mr_ref).await.map_err(|_| {
        bad(format!(
            "the repository of `{project}` has no {mr_ref} for merge request !{}; is it the request's target repository?",
            mr.iid
        ))
    })?;
    if tip != mr.head && !mirror.is_ancestor(&mr.head, &tip).await {
        return Err(bad(format!(
            "commit {} is not on {mr_ref} (its head is {tip}); a merge request's run must be of its commits",
            mr.head
        )));
    }
    let branch = if mr.fork {
        None
    } else {
        on_its_ref(&mirror, project, &mr.head, Some(&mr.source_branch), None)
            .await
            .ok()
            .map(|()| mr.source_branch.clone())
    };
    let submitted = ci
        .queue
        .submit(Submission {
            project: project.to_string(),
            commit: mr.head.clone(),
            branch,
            tag: None,
            trigger,
            force: false,
            carry: None,
            merge_request: Some(MergeRequestRun {
                iid: mr.iid,
                title: mr.title.clone(),
                source_branch: mr.source_branch.clone(),
                target_branch: mr.target_branch.clone(),
                fork: mr.fork,
            }),
        })
        .await?;
    if let Submitted::Queued(run) = submitted {
        (ci.on_queued)(project, run, arrived);
    }
    Ok((submitted, mr.head.clone()))
}
