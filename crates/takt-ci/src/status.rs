//! Commit statuses, without HTTP: which status a run's event means for its commit (and, when
//! the project asks, for its stage), and the request each forge takes for it.
//!
//! - GitHub and Gitea: `POST {api}/repos/{owner}/{repo}/statuses/{sha}` with `state`,
//!   `context` (`takt/<project>`, `takt/<project>/<stage>`), `target_url`, `description`.
//!   Their states are `pending`, `success`, `failure`, `error`: a running run is `pending`
//!   ("running"), a cancelled or interrupted one `error`.
//! - GitLab: `POST {api}/projects/{id}/statuses/{sha}` with `state` (`pending`, `running`,
//!   `success`, `failed`, `canceled`), `name`, `target_url`, `description`; the id is the
//!   project's number or its path, URL-encoded.

use serde_json::{Value, json};
use takt_model::{Event, EventKind, ForgeKind, ForgeLink, JobStatus, RunStatus, Trigger};
use takt_views::{JobState, RunView};

/// The project secret that authenticates commit statuses.
pub const FORGE_TOKEN: &str = "TAKT_FORGE_TOKEN";

/// The longest description the forges keep (GitHub's limit).
const MAX_DESCRIPTION: usize = 140;

/// A commit's state as takt sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    Success,
    Failure,
    Cancelled,
}

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub sha: String,
    pub state: State,
    /// `takt/<project>` or `takt/<project>/<stage>`.
    pub context: String,
    pub description: String,
    pub target_url: String,
}

/// One HTTP request to a forge.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// The statuses an event means, given its run as it stands now (`run`) and the server's
/// public address. Child pipelines post none: their trigger job stands for them.
pub fn updates(e: &Event, run: &RunView, link: &ForgeLink, public_url: &str) -> Vec<Update> {
    if matches!(run.trigger, Trigger::Parent { .. }) || run.commit.is_empty() {
        return Vec::new();
    }
    let n = run.run;
    let target_url = format!(
        "{}/api/v1/projects/{}/runs/{n}",
        public_url.trim_end_matches('/'),
        e.project
    );
    let context = format!("takt/{}", e.project);
    let whole = |state: State, description: String| Update {
        sha: run.commit.clone(),
        state,
        context: context.clone(),
        description,
        target_url: target_url.clone(),
    };
    let mut out = Vec::new();
    match &e.kind {
        EventKind::RunQueued { .. } => out.push(whole(State::Pending, format!("run #{n} is waiting"))),
        EventKind::RunStarted => out.push(whole(State::Running, format!("run #{n} is running"))),
        EventKind::RunFinished { status, reason, .. } => {
            let (state, verb) = match status {
                RunStatus::Success => (State::Success, "passed"),
                RunStatus::Failed => (State::Failure, "failed"),
                RunStatus::Cancelled => (State::Cancelled, "was cancelled"),
                RunStatus::Interrupted => (State::Cancelled, "was interrupted"),
                // Blocked until someone plays its manual job: not a verdict yet.
                RunStatus::Manual => (State::Pending, "waits for a manual job"),
                RunStatus::Running => return out,
            };
            let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            out.push(whole(state, format!("run #{n} {verb}{why}")));
        }
        EventKind::JobStarted { job, .. } | EventKind::JobFinished { job, .. } | EventKind::JobSkipped { job, .. }
            if link.stages =>
        {
            let Some(stage) = run.jobs.iter().find(|j| &j.name == job).and_then(|j| j.stage.clone()) else {
                return out;
            };
            if let Some((state, description)) = stage_state(run, &stage) {
                out.push(Update {
                    context: format!("{context}/{stage}"),
                    ..whole(state, description)
                });
            }
        }
        _ => {}
    }
    out
}

/// A stage's state from its jobs: running while one runs, else failed if one failed (and
/// may not fail), cancelled if one was, passed when all are done; `None` before any started.
fn stage_state(run: &RunView, stage: &str) -> Option<(State, String)> {
    let jobs: Vec<_> = run.jobs.iter().filter(|j| j.stage.as_deref() == Some(stage)).collect();
    let mut started = false;
    let (mut running, mut failed, mut cancelled, mut waiting) = (0, 0, 0, 0);
    for j in &jobs {
        match j.status {
            Some(JobState::Pending(takt_views::Pending::Running)) => {
                started = true;
                running += 1;
            }
            Some(JobState::Done(JobStatus::Failed)) if !j.allow_failure => {
                started = true;
                failed += 1;
            }
            Some(JobState::Done(JobStatus::Cancelled)) => {
                started = true;
                cancelled += 1;
            }
            Some(JobState::Done(_)) => started = true,
            _ => waiting += 1,
        }
    }
    if !started {
        return None;
    }
    let of = jobs.len();
    Some(if running > 0 || (waiting > 0 && failed == 0 && cancelled == 0) {
        (
            State::Running,
            format!("stage `{stage}`: {} of {of} jobs done", of - running - waiting),
        )
    } else if failed > 0 {
        (State::Failure, format!("stage `{stage}`: {failed} of {of} jobs failed"))
    } else if cancelled > 0 {
        (State::Cancelled, format!("stage `{stage}`: cancelled"))
    } else {
        (State::Success, format!("stage `{stage}`: {of} jobs passed"))
    })
}

/// The request that posts `u` to the forge `link` names, authenticated with `token` (without
/// one, no credentials: the forge's refusal says so).
pub fn request(link: &ForgeLink, token: Option<&str>, u: &Update) -> Option<Request> {
    let api = link.api.trim_end_matches('/');
    let mut description: String = u.description.chars().take(MAX_DESCRIPTION).collect();
    if description.len() < u.description.len() {
        description.pop();
        description.push('…');
    }
    Some(match link.forge {
        ForgeKind::Github | ForgeKind::Gitea => {
            let state = match u.state {
                State::Pending | State::Running => "pending",
                State::Success => "success",
                State::Failure => "failure",
                State::Cancelled => "error",
            };
            let mut headers = Vec::new();
            if link.forge == ForgeKind::Github {
                headers.push(("accept", "application/vnd.github+json".into()));
                headers.push(("x-github-api-version", "2022-11-28".into()));
            }
            let scheme = if link.forge == ForgeKind::Github {
                "Bearer"
            } else {
                "token"
            };
            headers.extend(token.map(|t| ("authorization", format!("{scheme} {t}"))));
            Request {
                url: format!("{api}/repos/{}/statuses/{}", link.repo, u.sha),
                headers,
                body: json!({
                    "state": state,
                    "context": u.context,
                    "target_url": u.target_url,
                    "description": description,
                }),
            }
        }
        ForgeKind::Gitlab => {
            let state = match u.state {
                State::Pending => "pending",
                State::Running => "running",
                State::Success => "success",
                State::Failure => "failed",
                State::Cancelled => "canceled",
            };
            Request {
                url: format!("{api}/projects/{}/statuses/{}", link.repo.replace('/', "%2F"), u.sha),
                headers: token.map(|t| ("private-token", t.to_string())).into_iter().collect(),
                body: json!({
                    "state": state,
                    "name": u.context,
                    "target_url": u.target_url,
                    "description": description,
                }),
            }
        }
        ForgeKind::None => return None,
    })
}

/// Checks a forge setting: a known forge, an http(s) API address (GitHub's and GitLab's
/// public ones by default), a repository of the forge's shape. Returns it completed.
pub fn check_link(mut link: ForgeLink) -> Result<ForgeLink, String> {
    if link.forge == ForgeKind::None {
        return Ok(link);
    }
    if link.api.is_empty() {
        link.api = match link.forge {
            ForgeKind::Github => "https://api.github.com".into(),
            ForgeKind::Gitlab => "https://gitlab.com/api/v4".into(),
            _ => return Err("a Gitea forge needs its API address: --forge-api https://HOST/api/v1".into()),
        };
    }
    let url = url::Url::parse(&link.api).map_err(|e| format!("--forge-api `{}`: {e}", link.api))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return Err(format!(
            "--forge-api `{}` must be an http(s) address without a query, e.g. https://api.github.com",
            link.api
        ));
    }
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 200
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let parts: Vec<&str> = link.repo.split('/').collect();
    let ok = match link.forge {
        ForgeKind::Github | ForgeKind::Gitea => parts.len() == 2 && parts.iter().all(|p| safe(p)),
        _ => !parts.is_empty() && parts.iter().all(|p| safe(p)),
    };
    if !ok {
        let shape = if link.forge == ForgeKind::Gitlab {
            "GitLab's project id or path (`group/name`)"
        } else {
            "OWNER/NAME"
        };
        return Err(format!("--forge-repo `{}` must be {shape}", link.repo));
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(forge: ForgeKind, repo: &str) -> ForgeLink {
        ForgeLink {
            forge,
            api: String::new(),
            repo: repo.into(),
            stages: false,
        }
    }

    #[test]
    fn settings_are_checked_and_completed() {
        let l = check_link(link(ForgeKind::Github, "octo/hello")).unwrap();
        assert_eq!(l.api, "https://api.github.com");
        assert!(
            check_link(link(ForgeKind::Gitea, "a/b"))
                .unwrap_err()
                .contains("--forge-api")
        );
        assert!(
            check_link(link(ForgeKind::Github, "a/b/c"))
                .unwrap_err()
                .contains("OWNER/NAME")
        );
        assert!(check_link(link(ForgeKind::Github, "../x")).is_err());
        assert!(check_link(link(ForgeKind::Gitlab, "group/sub/name")).is_ok());
        assert!(check_link(link(ForgeKind::Gitlab, "42")).is_ok());
        let mut bad = link(ForgeKind::Github, "a/b");
        bad.api = "ftp://x".into();
        assert!(check_link(bad).unwrap_err().contains("http(s)"));
    }

    #[test]
    fn each_forge_gets_its_own_shape() {
        let u = Update {
            sha: "a".repeat(40),
            state: State::Cancelled,
            context: "takt/web".into(),
            description: "x".repeat(200),
            target_url: "http://ci/api/v1/projects/web/runs/1".into(),
        };
        let gh = request(&check_link(link(ForgeKind::Github, "o/r")).unwrap(), Some("T"), &u).unwrap();
        assert_eq!(gh.url, format!("https://api.github.com/repos/o/r/statuses/{}", u.sha));
        assert_eq!(gh.body["state"], "error");
        assert_eq!(gh.body["description"].as_str().unwrap().chars().count(), 140);
        assert!(gh.headers.contains(&("authorization", "Bearer T".into())));
        let gl = request(&check_link(link(ForgeKind::Gitlab, "g/r")).unwrap(), Some("T"), &u).unwrap();
        assert_eq!(
            gl.url,
            format!("https://gitlab.com/api/v4/projects/g%2Fr/statuses/{}", u.sha)
        );
        assert_eq!(gl.body["state"], "canceled");
        assert_eq!(gl.body["name"], "takt/web");
        assert!(gl.headers.contains(&("private-token", "T".into())));
    }
}
