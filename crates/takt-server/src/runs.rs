//! Runs over HTTP: trigger, list, show, cancel, retry, and job logs (whole, by byte range, or
//! followed live as Server-Sent Events).

use crate::queue::{Submission, Submitted};
use crate::{ApiError, AppState, Caller, body_error, page_limit, query};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use takt_api::{RetryBody, RunsQuery, TriggerBody, Triggered};
use takt_engine::Carry;
use takt_engine::git::Repo;
use takt_model::{Event, EventKind, Trigger};
use takt_store::EventFilter;
use takt_views::{Projection, RunView};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a live log follower looks for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(20);

/// Every run's summary (no jobs), kept current by a store observer: listing runs costs what
/// the answer costs, not a replay of the log.
pub struct RunIndex {
    runs: parking_lot::Mutex<takt_views::Runs>,
    /// What each commit says about itself (the lists show author and subject).
    commits: parking_lot::Mutex<takt_views::Commits>,
}

impl Default for RunIndex {
    fn default() -> RunIndex {
        RunIndex {
            runs: parking_lot::Mutex::new(takt_views::Runs::summaries()),
            commits: parking_lot::Mutex::new(takt_views::Commits::default()),
        }
    }
}

impl RunIndex {
    pub fn apply(&self, e: &Event) {
        if takt_views::run::SUMMARY_KINDS.contains(&e.kind.name()) {
            self.runs.lock().apply(e);
        } else if <takt_views::Commits as Projection>::KINDS.contains(&e.kind.name()) {
            self.commits.lock().apply(e);
        }
    }

    /// What a commit says about itself, if the log has it.
    pub fn commit(&self, sha: &str) -> Option<takt_views::CommitView> {
        self.commits.lock().get(sha).cloned()
    }

    /// One run's summary.
    pub fn get(&self, project: &str, run: u64) -> Option<RunView> {
        self.runs.lock().get(project, run).cloned()
    }

    /// Builds the index from the log.
    pub async fn load(store: &takt_store::Store) -> Result<RunIndex, takt_store::StoreError> {
        let index = RunIndex::default();
        let summaries = EventFilter {
            kinds: [
                takt_views::run::SUMMARY_KINDS,
                <takt_views::Commits as Projection>::KINDS,
            ]
            .concat(),
            ..Default::default()
        };
        store.scan(&summaries, |e| index.apply(&e)).await?;
        Ok(index)
    }
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<takt_api::RunList>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)? as usize;
    let all = state.runs.runs.lock();
    let status = |r: &RunView| q.status.as_ref().is_none_or(|s| r.status.name() == s);
    let runs: Vec<RunView> = match &q.project {
        // One project's runs are numbered in queue order: newest first is highest first, and
        // a page costs its length, not the project's history.
        Some(p) => {
            let end = q.before.unwrap_or(u64::MAX);
            all.runs
                .range((p.clone(), 0)..(p.clone(), end))
                .rev()
                .map(|(_, r)| r)
                .filter(|r| status(r))
                .take(limit)
                .map(RunView::summary)
                .collect()
        }
        None => {
            let mut picked: Vec<&RunView> = all
                .runs
                .iter()
                .filter(|((_, n), r)| q.before.is_none_or(|b| *n < b) && status(r))
                .map(|(_, r)| r)
                .collect();
            picked.sort_by_key(|r| std::cmp::Reverse((r.queued_at, r.run)));
            picked.into_iter().take(limit).map(RunView::summary).collect()
        }
    };
    drop(all);
    let commits = {
        let known = state.runs.commits.lock();
        runs.iter()
            .filter_map(|r| known.get(&r.commit).map(|c| (r.commit.clone(), c.clone())))
            .collect()
    };
    Ok(Json(takt_api::RunList { runs, commits }))
}

fn parse_run(run: &str) -> Result<u64, ApiError> {
    run.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("run `{run}` is not a run number")))
}

async fn load_run(state: &AppState, project: &str, run: u64) -> Result<(Vec<Event>, RunView), ApiError> {
    let events = state
        .store
        .events(&EventFilter {
            project: Some(project.to_string()),
            run: Some(run),
            ..Default::default()
        })
        .await?;
    let folded = takt_views::Runs::fold(&events)
        .runs
        .into_values()
        .next()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run #{run} of project `{project}`")))?;
    Ok((events, folded))
}

pub async fn show_run(
    State(state): State<Arc<AppState>>,
    Path((project, run)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    // The run is parsed here, not by a typed path: authorization (the route layer) comes first.
    let run = parse_run(&run)?;
    let (events, view) = load_run(&state, &project, run).await?;
    let mut v = json!(view);
    let Some(o) = v.as_object_mut() else {
        return Ok(Json(v));
    };
    if let Some(c) = state.runs.commit(&view.commit) {
        o.insert("commit_info".into(), json!(c));
    }
    // Its critical path through the job graph (takt-flow), once a job has finished, and how
    // long each job waited, ready, for a slot.
    let flow = <takt_flow::Flow as Projection>::fold(&events);
    if let Some(facts) = flow.runs.get(&(project, run)) {
        let waits: serde_json::Map<String, Value> = facts
            .jobs
            .iter()
            .filter(|(_, j)| j.started.is_some())
            .map(|(name, j)| (name.to_string(), json!(j.wait_ms)))
            .collect();
        o.insert("wait_ms".into(), Value::Object(waits));
        if let Some(path) = takt_flow::path::run_path(facts) {
            o.insert("critical_path".into(), json!(path));
        }
    }
    Ok(Json(v))
}

pub(crate) fn queue_error(e: crate::queue::QueueError) -> ApiError {
    use crate::queue::QueueError::*;
    match e {
        Full(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        NotActive(..) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        Store(s) => s.into(),
        Engine(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) fn submitted_response(s: Submitted, commit: &str) -> (StatusCode, Json<Triggered>) {
    let (status, run, queued) = match s {
        Submitted::Queued(run) => (StatusCode::ACCEPTED, run, true),
        Submitted::Duplicate(run) => (StatusCode::OK, run, false),
    };
    (
        status,
        Json(Triggered {
            queued,
            duplicate: !queued,
            run,
            commit: commit.to_string(),
        }),
    )
}

pub async fn trigger(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Result<Json<TriggerBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let req = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => TriggerBody::default(),
        Err(e) => return Err(body_error(e)),
    };
    state.project(&name)?;
    // A git hook reports pushes; anything else is a person or a script asking.
    let trigger = if req.hook {
        Trigger::Hook {
            token: who.name.clone(),
        }
    } else {
        Trigger::Api {
            token: who.name.clone(),
        }
    };
    let (s, commit) = takt_ci::trigger::report(
        &state.ci,
        &name,
        req.rev.as_deref(),
        req.git_ref.as_deref(),
        trigger,
        req.force,
    )
    .await?;
    Ok(submitted_response(s, &commit))
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, run)): Path<(String, String)>,
) -> Result<(StatusCode, Json<takt_api::Cancelled>), ApiError> {
    let run = parse_run(&run)?;
    let (_, view) = load_run(&state, &project, run).await?;
    // A child pipeline's run is its trigger job's: it ends with its parent.
    if let Trigger::Parent { run: parent, job } = &view.trigger
        && !view.status.is_finished()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run #{run} of `{project}` is the child pipeline of run #{parent} (its job `{job}`): cancel run #{parent}"
            ),
        ));
    }
    let outcome = state
        .queue()?
        .cancel(&project, run, &format!("token `{}`", who.name))
        .await
        .map_err(queue_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(takt_api::Cancelled {
            run,
            status: outcome.to_string(),
        }),
    ))
}

pub async fn retry(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, run)): Path<(String, String)>,
    body: Result<Json<RetryBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let run = parse_run(&run)?;
    let req = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => RetryBody::default(),
        Err(e) => return Err(body_error(e)),
    };
    let (_, folded) = load_run(&state, &project, run).await?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, m);
    if folded.finished_at.is_none() {
        return Err(conflict(format!(
            "run #{run} has not finished; cancel it first or wait"
        )));
    }
    let passed = passed_jobs(&folded);
    let carry = if req.failed {
        if passed.len() == folded.jobs.len() {
            return Err(conflict(format!(
                "every job of run #{run} passed; retry the whole run instead"
            )));
        }
        Some(Carry {
            from: run,
            jobs: passed,
            play: Vec::new(),
        })
    } else {
        None
    };
    let trigger = Trigger::Retry {
        of: run,
        token: who.name.clone(),
        failed_only: req.failed,
    };
    run_again(&state, &project, &folded, trigger, carry, "retry").await
}

/// Jobs of a finished run that passed (taken over by a retry of its failed jobs or a play).
fn passed_jobs(folded: &RunView) -> Vec<String> {
    folded
        .jobs
        .iter()
        .filter(|j| j.status == Some(takt_views::JobState::Done(takt_model::JobStatus::Success)))
        .map(|j| j.name.clone())
        .collect()
}

/// Queues a new run of a finished run's commit, on its branch or tag and for its merge request.
async fn run_again(
    state: &AppState,
    project: &str,
    folded: &RunView,
    trigger: Trigger,
    carry: Option<Carry>,
    what: &str,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let commit = folded.commit.clone();
    let (branch, tag) = (folded.branch.clone(), folded.tag.clone());
    // The run's branch must still contain its commit (a run recorded before this rule, or a
    // branch force-pushed since, does not get the branch's secrets again).
    let mirror = Repo::bare(&crate::projects::mirror_path(&state.data_dir, project));
    takt_ci::trigger::on_its_ref(&mirror, project, &commit, branch.as_deref(), tag.as_deref())
        .await
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, format!("cannot {what} run #{}: {m}", folded.run)))?;
    let s = state
        .queue()?
        .submit(Submission {
            project: project.to_string(),
            commit: commit.clone(),
            branch,
            tag,
            trigger,
            force: true,
            carry,
            merge_request: folded.merge_request.clone(),
        })
        .await
        .map_err(queue_error)?;
    Ok(submitted_response(s, &commit))
}

/// `POST /api/v1/runs/{project}/{run}/jobs/{job}/play`: starts a manual job of a finished
/// run, in a new run of its commit that takes over the jobs that passed (as GitLab's play
/// button, but a run's record never changes once it finished).
pub async fn play(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, run, job)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let run = parse_run(&run)?;
    let (_, folded) = load_run(&state, &project, run).await?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, m);
    let Some(j) = folded.jobs.iter().find(|j| j.name == job) else {
        let names: Vec<&str> = folded.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run #{run} has no job `{job}` (its jobs: {})", names.join(", ")),
        ));
    };
    if j.status != Some(takt_views::JobState::Done(takt_model::JobStatus::Manual)) {
        let status = j.status.map_or("waiting", |s| s.name());
        return Err(conflict(format!(
            "job `{job}` of run #{run} is not a manual job waiting for a person (it is {status})"
        )));
    }
    if folded.finished_at.is_none() {
        return Err(conflict(format!(
            "run #{run} has not finished; play `{job}` once it has"
        )));
    }
    // A job that names a protected environment is a deploy: a deploy token that the
    // environment names plays it. Any other manual job: a ci token.
    let target = match &j.environment {
        Some(e) => state.cd.environment(&project, &e.name).await.ok(),
        None => None,
    };
    use takt_model::auth::Permission;
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, m);
    match target.filter(|e| !e.protected.is_empty()) {
        Some(e) => {
            if !who.scope.allows(Permission::Deploy) {
                return Err(forbidden(format!(
                    "job `{job}` deploys to the protected environment `{}`: play it with a deploy token it names ({}), not the {} token `{}`",
                    e.name,
                    e.protected.join(", "),
                    who.scope,
                    who.name
                )));
            }
            crate::environments::guard(&e, &who, "play jobs for")?;
        }
        None if !who.scope.allows(Permission::Ci) => {
            return Err(forbidden(format!(
                "playing job `{job}` needs a ci token (a deploy token plays only jobs of protected environments); token `{}` has scope {}",
                who.name, who.scope
            )));
        }
        None => {}
    }
    let carry = Carry {
        from: run,
        jobs: passed_jobs(&folded),
        play: vec![job.clone()],
    };
    let trigger = Trigger::Play {
        of: run,
        job,
        token: who.name.clone(),
    };
    run_again(&state, &project, &folded, trigger, Some(carry), "play a job of").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    attempt: Option<u32>,
    /// Follow the log live (Server-Sent Events); the same as `Accept: text/event-stream`.
    #[serde(default)]
    follow: bool,
}

fn no_log(job: &str, run: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("job `{job}` of run #{run} has no log (it is not a job of this run, or it was skipped)"),
    )
}

/// A log's file; the location comes from our own events, and anything that would leave the
/// data directory is refused.
fn log_path(state: &AppState, location: &str) -> Result<std::path::PathBuf, ApiError> {
    if location.starts_with('/') || location.split('/').any(|c| c == "..") {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt log location"));
    }
    Ok(state.data_dir.join(location))
}

/// Whether `job` may still start in the run: not skipped, the run not finished, and either
/// queued or the plan not yet fully known (every `job_queued` precedes the first start).
fn job_pending(events: &[Event], job: &str) -> bool {
    let (mut queued, mut plan_known) = (false, false);
    for e in events {
        match &e.kind {
            EventKind::JobSkipped { job: j, .. } if j == job => return false,
            EventKind::RunFinished { .. } => return false,
            EventKind::JobQueued { job: j, .. } if j == job => queued = true,
            EventKind::JobStarted { .. } | EventKind::JobSkipped { .. } => plan_known = true,
            _ => {}
        }
    }
    queued || !plan_known
}

/// The log file of a job attempt (latest attempt unless one is named), and whether it is done.
fn find_log(events: &[Event], job: &str, attempt: Option<u32>) -> Option<(String, u32, bool)> {
    let mut found: Option<(String, u32, bool)> = None;
    for e in events {
        match &e.kind {
            EventKind::JobStarted {
                job: j,
                attempt: a,
                log: Some(l),
                ..
            } if j == job && attempt.is_none_or(|x| x == *a) => found = Some((l.clone(), *a, false)),
            EventKind::LogStored {
                job: j,
                attempt: a,
                location,
                ..
            } if j == job && attempt.is_none_or(|x| x == *a) => found = Some((location.clone(), *a, true)),
            _ => {}
        }
    }
    found
}

pub async fn logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, run, job)): Path<(String, String, String)>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let run = parse_run(&run)?;
    let q = query(q)?;
    let sse = q.follow
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    // Subscribed before the run is read, so a start appended in between is not missed.
    let follow = state.store.follow();
    let (events, _) = load_run(&state, &project, run).await?;
    let found = find_log(&events, &job, q.attempt);
    if sse {
        let from = match headers.get("last-event-id") {
            None => 0,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "`Last-Event-ID` must be a byte offset, as the events' ids are",
                    )
                })?,
        };
        let waiting = match &found {
            Some(_) => false,
            // A job of the run that has not started yet: the stream waits for its log.
            None if job_pending(&events, &job) => true,
            None => return Err(no_log(&job, run)),
        };
        let (path, attempt, done) = match found {
            Some((location, attempt, done)) => (Some(log_path(&state, &location)?), attempt, done),
            None => (None, q.attempt.unwrap_or(1), false),
        };
        // An offset past the log's end answers from the end (nothing is replayed).
        let size = match &path {
            Some(p) => tokio::fs::metadata(p).await.map(|m| m.len()).unwrap_or(0),
            None => 0,
        };
        return Ok(live(Follow {
            state: state.clone(),
            project,
            run,
            job,
            attempt,
            want_attempt: q.attempt,
            done,
            waiting,
            path,
            file: None,
            offset: from.min(size),
            pending: Vec::new(),
            follow,
            ended: false,
            idle: 0,
        })
        .into_response());
    }
    let Some((location, _, done)) = found else {
        return Err(no_log(&job, run));
    };
    let path = log_path(&state, &location)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("log of `{job}` is gone: {e}")))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match range {
        None => (0, size),
        Some(r) => match parse_range(r, size) {
            Some(x) => x,
            None => {
                let mut resp = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range `{r}` is not within the log's {size} bytes"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        },
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = file_body(file, end - start);
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(if done { "complete" } else { "running" }) {
        h.insert("x-takt-log", v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1))) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `len` bytes of a file from where it is positioned, streamed in pieces of 256 KiB.
pub(crate) fn file_body(file: tokio::fs::File, len: u64) -> Body {
    Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024))
}

/// `bytes=A-B`, `bytes=A-`, `bytes=-N` → [start, end) within `size`.
pub fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // one range only
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().ok()?, size),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.saturating_add(1).min(size)),
    };
    (start < end && start < size).then_some((start, end))
}

/// Follows a log as Server-Sent Events: each event carries the complete lines that arrived
/// (one `data:` line per log line) and has the byte offset after them as its id, so a client
/// that reconnects with `Last-Event-ID` continues where it was. An `end` event closes it.
struct Follow {
    state: Arc<AppState>,
    project: String,
    run: u64,
    job: String,
    attempt: u32,
    /// The attempt asked for, if any.
    want_attempt: Option<u32>,
    done: bool,
    /// The job has not started: wait for its log to appear first.
    waiting: bool,
    path: Option<std::path::PathBuf>,
    file: Option<tokio::fs::File>,
    offset: u64,
    pending: Vec<u8>,
    follow: tokio::sync::broadcast::Receiver<Event>,
    ended: bool,
    idle: u32,
}

fn live(f: Follow) -> impl IntoResponse {
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            if f.waiting {
                match wait_for_start(&mut f).await {
                    Some(()) => f.waiting = false,
                    None => {
                        f.ended = true;
                        let ev = SseEvent::default().event("end").data("0");
                        return Some((Ok(ev), f));
                    }
                }
            }
            // Read what is new.
            let mut chunk = Vec::new();
            // Opened once, positioned once; each poll reads on from where the last one ended.
            if f.file.is_none()
                && let Some(path) = &f.path
                && let Ok(mut file) = tokio::fs::File::open(path).await
                && file.seek(std::io::SeekFrom::Start(f.offset)).await.is_ok()
            {
                f.file = Some(file);
            }
            if let Some(file) = f.file.as_mut() {
                let _ = file.take(1 << 20).read_to_end(&mut chunk).await;
            }
            f.offset += chunk.len() as u64;
            f.pending.extend_from_slice(&chunk);
            let cut = if f.done && chunk.is_empty() {
                f.pending.len()
            } else {
                memchr::memrchr(b'\n', &f.pending).map_or(0, |p| p + 1)
            };
            if cut > 0 {
                let lines: Vec<u8> = f.pending.drain(..cut).collect();
                let text = String::from_utf8_lossy(&lines);
                let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
                let sent = f.offset - f.pending.len() as u64;
                let ev = SseEvent::default().id(sent.to_string()).data(text);
                return Some((Ok::<_, std::convert::Infallible>(ev), f));
            }
            if f.done && chunk.is_empty() {
                f.ended = true;
                let ev = SseEvent::default().event("end").data(format!("{}", f.offset));
                return Some((Ok(ev), f));
            }
            if !f.done {
                // The store is asked too, now and then: the job may have ended before we
                // started following the log.
                let ask = f.idle % 50 == 0;
                f.idle += 1;
                f.done = log_finished(&mut f.follow, &f.state, &f.project, f.run, &f.job, f.attempt, ask).await;
                if f.done {
                    continue; // read the rest at once
                }
            }
            if chunk.is_empty() {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Waits (on the log's appends, not a clock) until the followed job has a log; `None` when it
/// never will (skipped, or the run finished).
async fn wait_for_start(f: &mut Follow) -> Option<()> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let events = f
            .state
            .store
            .events(&EventFilter {
                project: Some(f.project.clone()),
                run: Some(f.run),
                ..Default::default()
            })
            .await
            .ok()?;
        if let Some((location, attempt, done)) = find_log(&events, &f.job, f.want_attempt) {
            f.path = Some(log_path(&f.state, &location).ok()?);
            f.attempt = attempt;
            f.done = done;
            return Some(());
        }
        if !job_pending(&events, &f.job) {
            return None;
        }
        // The next event of this run (or a lag, after which the store is read again).
        loop {
            match f.follow.recv().await {
                Ok(e) if e.project == f.project && e.run == Some(f.run) => break,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Whether the attempt's log is complete: a `log_stored` event for it was appended.
async fn log_finished(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    state: &AppState,
    project: &str,
    run: u64,
    job: &str,
    attempt: u32,
    ask_store: bool,
) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    let matches = |e: &Event| {
        e.project == project
            && e.run == Some(run)
            && matches!(&e.kind, EventKind::LogStored { job: j, attempt: a, .. } if j == job && *a == attempt)
    };
    loop {
        let lagged = match rx.try_recv() {
            Ok(e) if matches(&e) => return true,
            Ok(_) => continue,
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Lagged(_)) => true,
            Err(TryRecvError::Closed) => return true,
        };
        {
            if lagged || ask_store {
                // Fell behind the live log: ask the store.
                let stored = state
                    .store
                    .events(&EventFilter {
                        project: Some(project.to_string()),
                        run: Some(run),
                        kind: Some("log_stored".into()),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_default();
                if stored.iter().any(matches) {
                    return true;
                }
            }
            if !lagged {
                return false;
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadgeQuery {
    branch: Option<String>,
}

/// `GET /badge/{project}.svg?branch=B`: the status of the branch's last run (the project's
/// default branch when none is named) as a badge in shields.io's flat style. Runs a parent
/// pipeline made (child pipelines) do not count: their parent's status covers them.
pub async fn badge(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Path(file): Path<String>,
    q: Result<Query<BadgeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    // A token first unless the project's badge is public: an unknown name answers as a
    // private project does, so that badges do not tell which projects exist.
    let named = file.strip_suffix(".svg");
    let public = named.is_some_and(|n| state.project(n).is_ok_and(|p| p.options.public_badge == Some(true)));
    if !public {
        crate::auth::authorize(&state, &headers, takt_model::auth::Permission::Read)?;
    }
    let Some(project) = named else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no badge `{file}`: ask for /badge/PROJECT.svg"),
        ));
    };
    let p = state.project(project)?;
    let branch = q.branch.unwrap_or(p.branch);
    let status = {
        let all = state.runs.runs.lock();
        all.runs
            .iter()
            .filter(|((name, _), r)| {
                name == project
                    && r.branch.as_deref() == Some(branch.as_str())
                    && !matches!(r.trigger, takt_model::Trigger::Parent { .. })
            })
            .max_by_key(|((_, n), _)| *n)
            .map(|(_, r)| r.status)
    };
    use takt_model::RunStatus as S;
    use takt_views::run::{Pending, RunState};
    let (word, color) = match status {
        None => ("unknown", "#9f9f9f"),
        Some(RunState::Done(S::Success)) => ("passed", "#4c1"),
        Some(RunState::Done(S::Failed)) => ("failed", "#e05d44"),
        Some(RunState::Pending(Pending::Running) | RunState::Done(S::Running)) => ("running", "#dfb317"),
        Some(RunState::Pending(Pending::Queued)) => ("pending", "#dfb317"),
        Some(RunState::Done(S::Cancelled)) => ("canceled", "#9f9f9f"),
        Some(RunState::Done(S::Interrupted)) => ("interrupted", "#9f9f9f"),
        // GitLab's badge for a pipeline waiting for a manual job.
        Some(RunState::Done(S::Manual)) => ("manual", "#dfb317"),
    };
    let svg = badge_svg("pipeline", word, color);
    let mut r = svg.into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("image/svg+xml"),
    );
    // A README's badge must show the latest status, not one a cache kept.
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

/// A two-part badge in shields.io's flat style, its widths from a per-character estimate of
/// Verdana 11px (what shields.io lays out with), with a title for screen readers.
fn badge_svg(label: &str, message: &str, color: &str) -> String {
    let width = |s: &str| {
        10 + s
            .chars()
            .map(|c| if c.is_ascii_lowercase() { 7 } else { 8 })
            .sum::<usize>()
    };
    let (lw, mw) = (width(label), width(message));
    let total = lw + mw;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {message}"><title>{label}: {message}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{color}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{mx}" y="14">{message}</text></g></svg>"##,
        lx = lw / 2,
        mx = lw + mw / 2,
    )
}
