//! The run queue: every trigger (API, webhook, poll, hook, schedule, retry) submits here.
//!
//! - One commit gets one run per project, branch and tag however many triggers report it
//!   (`force` makes another); a run is numbered and recorded `run_queued` when submitted.
//! - Runs wait in submission order and start when both the global limit and their project's
//!   limit allow; a project in `newest` mode cancels its waiting runs of a branch when a newer
//!   commit of that branch arrives.
//! - `cancel` removes a waiting run or stops a running one; on start after a crash, runs that
//!   were going on are marked `interrupted` (their orphaned processes killed) and queued again
//!   or failed, and runs that were waiting wait again.

use crate::projects::{self, Project, Projects};
use crate::secrets::SecretKey;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use takt_engine::git::Repo;
use takt_engine::{Carry, Engine, Live, Prepared, RunRequest};
use takt_exec::LocalExecutor;
use takt_model::{Event, EventKind, FailureReason, JobStatus, MergeRequestRun, QueueMode, RunStatus, Trigger};
use takt_store::EventFilter;
use tokio::sync::{Notify, mpsc, watch};

/// What happens to runs that were going on when the server died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRestart {
    /// Mark them interrupted and queue a new run of the same commit.
    #[default]
    Requeue,
    /// Mark them interrupted; nothing more.
    Fail,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Runs at once, over all projects.
    pub concurrency: usize,
    /// Jobs at once within one run.
    pub jobs_per_run: usize,
    /// Runs that may wait; more are refused (503) so that nothing is silently dropped.
    pub max_waiting: usize,
    pub on_restart: OnRestart,
}

/// A request for a run.
#[derive(Debug, Clone)]
pub struct Submission {
    pub project: String,
    pub commit: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub trigger: Trigger,
    pub force: bool,
    pub carry: Option<Carry>,
    /// A merge-request pipeline's request.
    pub merge_request: Option<MergeRequestRun>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued(u64),
    /// That commit already has this run.
    Duplicate(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0} runs are waiting already (the limit); try again later")]
    Full(usize),
    #[error(transparent)]
    Engine(#[from] takt_engine::EngineError),
    #[error(transparent)]
    Store(#[from] takt_store::StoreError),
    #[error("run #{1} of `{0}` is not waiting or running")]
    NotActive(String, u64),
}

/// GitLab's `conservative` auto-cancel, given whether each job a run started was
/// `interruptible: true`: the run may be cancelled for a newer commit when it started jobs and
/// every one of them is interruptible (a job started without `interruptible` — a deploy, say —
/// keeps it running to the end). A run with no job started yet is left to the queue's mode.
pub fn interruptible(started: impl IntoIterator<Item = bool>) -> bool {
    let mut any = false;
    for i in started {
        if !i {
            return false;
        }
        any = true;
    }
    any
}

/// Project, commit, branch, tag, and the merge request: a commit pushed to a branch and the
/// same commit as a merge request's head are two runs, as on GitLab.
type SeenKey = (String, String, Option<String>, Option<String>, Option<u64>);

#[derive(Default)]
struct Intake {
    /// (project, commit, branch, tag) → the run that commit got.
    seen: HashMap<SeenKey, u64>,
}

struct Waiting {
    project: String,
    run: u64,
    commit: String,
    branch: Option<String>,
    tag: Option<String>,
    trigger: Trigger,
    carry: Option<Carry>,
    merge_request: Option<MergeRequestRun>,
}

/// A run going on: how to cancel it, and what a newer run would supersede it for.
struct Running {
    cancel: watch::Sender<bool>,
    commit: String,
    branch: Option<String>,
    /// Its merge request's number.
    mr: Option<u64>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Waiting>,
    running: HashMap<(String, u64), Running>,
    per_project: HashMap<String, usize>,
}

/// Serializes fetches of one mirror; a fetch that started after a request covers it.
#[derive(Default)]
struct FetchGate {
    requested: AtomicU64,
    done: tokio::sync::Mutex<u64>,
    /// Successful fetches so far: the mirror's generation.
    fetched: AtomicU64,
}

pub struct Queue {
    pub engine: Arc<Engine<LocalExecutor>>,
    data: PathBuf,
    settings: QueueSettings,
    projects: Arc<RwLock<Projects>>,
    key: Arc<SecretKey>,
    intake: tokio::sync::Mutex<Intake>,
    state: Mutex<State>,
    wake: Notify,
    fetches: Mutex<HashMap<String, Arc<FetchGate>>>,
    /// Signalled after every fetch of any project's mirror (its refs may have moved).
    pub moved: Notify,
    /// Webhook deliveries already handled (provider/id).
    deliveries: Mutex<HashSet<String>>,
}

impl Queue {
    /// Builds the queue from the event log, recovers from a crash, and starts dispatching.
    pub async fn start(
        engine: Engine<LocalExecutor>,
        data: PathBuf,
        settings: QueueSettings,
        projects: Arc<RwLock<Projects>>,
        key: Arc<SecretKey>,
    ) -> Result<Arc<Queue>, QueueError> {
        let q = Arc::new(Queue {
            engine: Arc::new(engine),
            data,
            settings,
            projects,
            key,
            intake: tokio::sync::Mutex::new(Intake::default()),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            fetches: Mutex::new(HashMap::new()),
            moved: Notify::new(),
            deliveries: Mutex::new(HashSet::new()),
        });
        q.recover().await?;
        let q2 = q.clone();
        tokio::spawn(async move { q2.dispatch().await });
        Ok(q)
    }

    async fn recover(&self) -> Result<(), QueueError> {
        let store = &self.engine.store;
        struct Open {
            w: Waiting,
            started: bool,
            /// Its planning began (and neither a start nor an end followed).
            planning: bool,
            /// (job, attempt) → (started at, pid)
            jobs: HashMap<(String, u32), (takt_model::OffsetDateTime, Option<u32>, u64)>,
        }
        let mut open: std::collections::BTreeMap<(String, u64), Open> = Default::default();
        let mut intake = self.intake.lock().await;
        // One pass over every run's own events (not its jobs'), a page at a time; then the
        // job events of the runs still open, which are few: a big log costs one look at each
        // run, not at each job and step.
        let runs = EventFilter {
            kinds: vec![
                "run_queued",
                "run_planning",
                "run_started",
                "run_finished",
                "webhook_received",
            ],
            ..Default::default()
        };
        let mut fold = |e: Event, open: &mut std::collections::BTreeMap<(String, u64), Open>| {
            if let EventKind::WebhookReceived {
                provider,
                delivery,
                outcome,
                ..
            } = &e.kind
            {
                use takt_model::WebhookOutcome as W;
                if matches!(outcome, W::Queued | W::Duplicate | W::Ignored) {
                    self.remember_delivery(provider, delivery);
                }
                return;
            }
            let Some(run) = e.run else { return };
            let key = (e.project.clone(), run);
            match &e.kind {
                EventKind::RunQueued {
                    commit,
                    branch,
                    tag,
                    trigger,
                    dirty: false,
                    merge_request,
                } => {
                    let iid = merge_request.as_ref().map(|m| m.iid);
                    intake.seen.insert(
                        (e.project.clone(), commit.clone(), branch.clone(), tag.clone(), iid),
                        run,
                    );
                    open.insert(
                        key,
                        Open {
                            w: Waiting {
                                project: e.project.clone(),
                                run,
                                commit: commit.clone(),
                                branch: branch.clone(),
                                tag: tag.clone(),
                                trigger: trigger.clone(),
                                carry: None,
                                merge_request: merge_request.clone(),
                            },
                            started: false,
                            planning: false,
                            jobs: HashMap::new(),
                        },
                    );
                }
                EventKind::RunPlanning => {
                    if let Some(o) = open.get_mut(&key) {
                        o.planning = true;
                    }
                }
                EventKind::RunStarted => {
                    if let Some(o) = open.get_mut(&key) {
                        o.started = true;
                    }
                }
                EventKind::RunFinished { .. } => {
                    open.remove(&key);
                }
                EventKind::JobStarted {
                    job, attempt, wait_ms, ..
                } => {
                    if let Some(o) = open.get_mut(&key) {
                        o.jobs.insert((job.clone(), *attempt), (e.at, None, *wait_ms));
                    }
                }
                EventKind::JobProcess { job, attempt, pid } => {
                    if let Some(j) = open
                        .get_mut(&key)
                        .and_then(|o| o.jobs.get_mut(&(job.clone(), *attempt)))
                    {
                        j.1 = Some(*pid);
                    }
                }
                EventKind::JobFinished { job, attempt, .. } => {
                    if let Some(o) = open.get_mut(&key) {
                        o.jobs.remove(&(job.clone(), *attempt));
                    }
                }
                _ => {}
            }
        };
        store.scan(&runs, |e| fold(e, &mut open)).await?;
        let started: Vec<(String, u64)> = open.iter().filter(|(_, o)| o.started).map(|(k, _)| k.clone()).collect();
        for (project, run) in started {
            let jobs = EventFilter {
                project: Some(project),
                run: Some(run),
                kinds: vec!["job_started", "job_finished", "job_process"],
                ..Default::default()
            };
            store.scan(&jobs, |e| fold(e, &mut open)).await?;
        }
        drop(intake);
        let mut requeue = Vec::new();
        for ((project, run), o) in open {
            if !o.started && o.planning {
                // The server stopped while it planned this run: perhaps its takt.yml made it
                // crash. Planning it again could crash it again, at every start.
                tracing::warn!(%project, run, "run failed: the server stopped while planning it");
                store
                    .append(&Event::now(
                        &project,
                        Some(run),
                        EventKind::RunFinished {
                            status: RunStatus::Failed,
                            duration_ms: 0,
                            reason: Some(
                                "the server stopped while it was planning this run's takt.yml; the run is not planned again, in case the file is what stopped it (check it with `takt lint`, then push a fix or `takt trigger --force`)".into(),
                            ),
                            budget_ms: None,
                            slowest_job: None,
                        },
                    ))
                    .await?;
                continue;
            }
            // A child pipeline's run belongs to its trigger job: the parent run is interrupted
            // (and queued again) too, and its trigger job makes a new child.
            let child = matches!(o.w.trigger, Trigger::Parent { .. });
            if !o.started && !child {
                tracing::info!(%project, run, "run waits again after a restart");
                {
                    let mut s = self.state.lock();
                    s.waiting.push_back(o.w);
                }
                continue;
            }
            for ((job, attempt), (at, pid, wait_ms)) in o.jobs {
                if let Some(pid) = pid {
                    kill_orphan(pid);
                }
                let ran = (takt_model::OffsetDateTime::now_utc() - at).whole_milliseconds().max(0) as u64;
                store
                    .append(&Event::now(
                        &project,
                        Some(run),
                        EventKind::JobFinished {
                            job,
                            attempt,
                            status: JobStatus::Interrupted,
                            exit_code: None,
                            failure_reason: Some(FailureReason::RunnerSystemFailure),
                            allow_failure: false,
                            duration_ms: ran,
                            wait_ms,
                            flaky: false,
                        },
                    ))
                    .await?;
            }
            let again = self.settings.on_restart == OnRestart::Requeue && !child;
            store
                .append(&Event::now(
                    &project,
                    Some(run),
                    EventKind::RunFinished {
                        status: RunStatus::Interrupted,
                        duration_ms: 0,
                        reason: Some(format!(
                            "the server stopped while the run was going on; {}",
                            if again {
                                "a new run of the commit was queued"
                            } else if child {
                                "a child pipeline is run again by its parent's new run"
                            } else {
                                "not run again (on_restart = fail)"
                            }
                        )),
                        budget_ms: None,
                        slowest_job: None,
                    },
                ))
                .await?;
            tracing::warn!(%project, run, "run interrupted by a server stop");
            if again {
                requeue.push(Submission {
                    project: project.clone(),
                    commit: o.w.commit,
                    branch: o.w.branch,
                    tag: o.w.tag,
                    trigger: Trigger::Restart { of: run },
                    force: true,
                    carry: None,
                    merge_request: o.w.merge_request,
                });
            }
        }
        for s in requeue {
            self.submit(s).await?;
        }
        Ok(())
    }

    /// Whether a webhook delivery was handled before.
    pub fn delivery_seen(&self, provider: &str, delivery: &str) -> bool {
        self.deliveries.lock().contains(&format!("{provider}/{delivery}"))
    }

    /// Remembers a handled delivery (once it queued its run, or was found to need none).
    pub fn remember_delivery(&self, provider: &str, delivery: &str) {
        {
            let mut d = self.deliveries.lock();
            d.insert(format!("{provider}/{delivery}"));
        }
    }

    /// Fetches a project's mirror; concurrent requests share one fetch.
    pub async fn fetch(&self, project: &str) -> Result<(), takt_engine::EngineError> {
        let gate = {
            let mut f = self.fetches.lock();
            f.entry(project.to_string()).or_default().clone()
        };
        let mine = gate.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = gate.done.lock().await;
        if *done >= mine {
            return Ok(());
        }
        let upto = gate.requested.load(Ordering::SeqCst);
        Repo::bare(&projects::mirror_path(&self.data, project)).fetch().await?;
        *done = upto;
        gate.fetched.fetch_add(1, Ordering::SeqCst);
        drop(done);
        self.moved.notify_waiters();
        Ok(())
    }

    /// How many times `project`'s mirror was fetched since the start: what was read from it at
    /// one generation is still current while the generation stays.
    pub fn generation(&self, project: &str) -> u64 {
        self.fetches
            .lock()
            .get(project)
            .map(|g| g.fetched.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Queues a run (see the module documentation for duplicates).
    pub async fn submit(&self, s: Submission) -> Result<Submitted, QueueError> {
        let iid = s.merge_request.as_ref().map(|m| m.iid);
        let key = (
            s.project.clone(),
            s.commit.clone(),
            s.branch.clone(),
            s.tag.clone(),
            iid,
        );
        let run = {
            let mut intake = self.intake.lock().await;
            if !s.force
                && let Some(run) = intake.seen.get(&key)
            {
                return Ok(Submitted::Duplicate(*run));
            }
            let waiting = self.state.lock().waiting.len();
            if waiting >= self.settings.max_waiting {
                return Err(QueueError::Full(waiting));
            }
            let run = self.engine.allocate_run(&s.project).await?;
            self.engine
                .record_queued(
                    &s.project,
                    run,
                    &s.commit,
                    &s.branch,
                    &s.tag,
                    &s.trigger,
                    false,
                    &s.merge_request,
                )
                .await?;
            intake.seen.insert(key, run);
            run
        };
        let newest = self.project(&s.project).map(|p| p.queue_mode()) == Some(QueueMode::Newest);
        let reported = matches!(
            s.trigger,
            Trigger::Api { .. } | Trigger::Webhook { .. } | Trigger::Poll | Trigger::Hook { .. }
        );
        // GitLab's auto-cancel of redundant pipelines: the branch's (or merge request's)
        // running runs of other commits whose started jobs are all interruptible.
        let redundant: Vec<u64> = if reported && (s.branch.is_some() || iid.is_some()) && s.tag.is_none() {
            let st = self.state.lock();
            st.running
                .iter()
                .filter(|((p, _), r)| *p == s.project && r.branch == s.branch && r.mr == iid && r.commit != s.commit)
                .map(|((_, n), _)| *n)
                .collect()
        } else {
            Vec::new()
        };
        let superseded: Vec<u64> = {
            {
                let mut st = self.state.lock();
                let mut gone = Vec::new();
                if newest && s.carry.is_none() {
                    st.waiting.retain(|w| {
                        let old = w.project == s.project
                            && w.branch == s.branch
                            && w.tag.is_none()
                            && s.tag.is_none()
                            && w.merge_request.as_ref().map(|m| m.iid) == iid;
                        if old {
                            gone.push(w.run);
                        }
                        !old
                    });
                }
                st.waiting.push_back(Waiting {
                    project: s.project.clone(),
                    run,
                    commit: s.commit,
                    branch: s.branch,
                    tag: s.tag,
                    trigger: s.trigger,
                    carry: s.carry,
                    merge_request: s.merge_request,
                });
                gone
            }
        };
        self.wake.notify_one();
        for old in superseded {
            self.finish_unstarted(&s.project, old, format!("superseded by run #{run}, a newer commit"))
                .await?;
        }
        for old in redundant {
            let started = self
                .engine
                .store
                .events(&EventFilter {
                    project: Some(s.project.clone()),
                    run: Some(old),
                    kind: Some("job_started".into()),
                    ..Default::default()
                })
                .await?;
            let started = started.iter().filter_map(|e| match &e.kind {
                EventKind::JobStarted { interruptible, .. } => Some(*interruptible),
                _ => None,
            });
            if interruptible(started) {
                let by = format!("run #{run}, of a newer commit (its started jobs are interruptible)");
                tracing::info!(project = %s.project, run = old, by = %by, "redundant run cancelled");
                match self.cancel(&s.project, old, &by).await {
                    Ok(_) | Err(QueueError::NotActive(..)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Submitted::Queued(run))
    }

    async fn finish_unstarted(&self, project: &str, run: u64, reason: String) -> Result<(), QueueError> {
        self.engine
            .store
            .append(&Event::now(
                project,
                Some(run),
                EventKind::RunFinished {
                    status: RunStatus::Cancelled,
                    duration_ms: 0,
                    reason: Some(reason),
                    budget_ms: None,
                    slowest_job: None,
                },
            ))
            .await?;
        Ok(())
    }

    /// Cancels a waiting run (at once) or a running one (its processes are killed).
    pub async fn cancel(&self, project: &str, run: u64, by: &str) -> Result<&'static str, QueueError> {
        let found = {
            let mut st = self.state.lock();
            if let Some(i) = st.waiting.iter().position(|w| w.project == project && w.run == run) {
                st.waiting.remove(i);
                Some(false)
            } else if let Some(r) = st.running.get(&(project.to_string(), run)) {
                let _ = r.cancel.send(true);
                Some(true)
            } else {
                None
            }
        };
        match found {
            Some(false) => {
                self.finish_unstarted(project, run, format!("cancelled by {by} before it started"))
                    .await?;
                Ok("cancelled")
            }
            Some(true) => Ok("cancelling"),
            None => Err(QueueError::NotActive(project.into(), run)),
        }
    }

    /// Cancels every waiting and running run of merge request `iid` (it was closed or merged);
    /// returns their numbers.
    pub async fn cancel_merge_request(&self, project: &str, iid: u64, why: &str) -> Result<Vec<u64>, QueueError> {
        let runs: Vec<u64> = {
            let st = self.state.lock();
            let waiting = st
                .waiting
                .iter()
                .filter(|w| w.project == project && w.merge_request.as_ref().is_some_and(|m| m.iid == iid))
                .map(|w| w.run);
            let running = st
                .running
                .iter()
                .filter(|((p, _), r)| p == project && r.mr == Some(iid))
                .map(|((_, r), _)| *r);
            waiting.chain(running).collect()
        };
        let mut cancelled = Vec::new();
        for run in runs {
            // A run that finished meanwhile is no longer active: nothing to cancel.
            match self.cancel(project, run, why).await {
                Ok(_) => cancelled.push(run),
                Err(QueueError::NotActive(..)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// How many runs wait and how many run now.
    pub fn snapshot(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.waiting.len(), s.running.len())
    }

    fn project(&self, name: &str) -> Option<Project> {
        self.projects.read().get(name).cloned()
    }

    async fn dispatch(self: Arc<Self>) {
        loop {
            while let Some((w, cancel)) = self.pick() {
                let q = self.clone();
                tokio::spawn(async move {
                    let (project, run) = (w.project.clone(), w.run);
                    if let Err(e) = q.execute(w, cancel).await {
                        tracing::error!(%project, run, error = %e, "run could not be executed");
                    }
                    {
                        let mut st = q.state.lock();
                        st.running.remove(&(project.clone(), run));
                        if let Some(n) = st.per_project.get_mut(&project) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    q.wake.notify_one();
                });
            }
            self.wake.notified().await;
        }
    }

    /// The first waiting run that the limits let start now.
    fn pick(&self) -> Option<(Waiting, watch::Receiver<bool>)> {
        let mut st = self.state.lock();
        if st.running.len() >= self.settings.concurrency {
            return None;
        }
        let projects = self.projects.read();
        let i = st.waiting.iter().position(|w| {
            let limit = projects
                .get(&w.project)
                .and_then(|p| p.options.concurrency)
                .map_or(self.settings.concurrency, |c| c as usize);
            st.per_project.get(&w.project).copied().unwrap_or(0) < limit
        })?;
        drop(projects);
        let w = st.waiting.remove(i)?;
        let (tx, rx) = watch::channel(false);
        let running = Running {
            cancel: tx,
            commit: w.commit.clone(),
            branch: w.branch.clone(),
            mr: w.merge_request.as_ref().map(|m| m.iid),
        };
        st.running.insert((w.project.clone(), w.run), running);
        *st.per_project.entry(w.project.clone()).or_insert(0) += 1;
        Some((w, rx))
    }

    /// Secrets a run of `branch` may have: all of the project's, on its default or a protected
    /// branch; none otherwise. Names starting with `TAKT_` are takt's own and never given.
    fn secrets_for(&self, p: &Project, branch: Option<&str>) -> Vec<(String, String)> {
        if !p.is_protected(branch) {
            return Vec::new();
        }
        p.sealed
            .iter()
            .filter(|(n, _)| !n.starts_with("TAKT_"))
            .filter_map(|(n, s)| match self.key.open(&p.name, n, &s.nonce, &s.ciphertext) {
                Ok(v) => Some((n.clone(), String::from_utf8_lossy(&v).into_owned())),
                Err(e) => {
                    tracing::error!(project = %p.name, secret = %n, error = %e, "secret not given");
                    None
                }
            })
            .collect()
    }

    async fn execute(&self, w: Waiting, cancel: watch::Receiver<bool>) -> Result<(), QueueError> {
        let Some(project) = self.project(&w.project) else {
            return self.fail_start(&w, "the project no longer exists".into()).await;
        };
        let mirror = projects::mirror_path(&self.data, &w.project);
        let repo = Repo::bare(&mirror);
        let quarantine = default_quarantine(&repo, &project.branch).await;
        let req = RunRequest {
            path: mirror.clone(),
            rev: w.commit.clone(),
            dirty: false,
            only_jobs: Vec::new(),
            parallel: self.settings.jobs_per_run,
            log_limit: takt_engine::log::DEFAULT_LIMIT,
            project: Some(w.project.clone()),
            trigger: w.trigger.clone(),
            branch: w.branch.clone(),
            tag: w.tag.clone(),
            default_branch: Some(project.branch.clone()),
            queued: Some(w.run),
            carry: w.carry.clone(),
            secrets: self.secrets_for(&project, w.branch.as_deref()),
            quarantine: Some(quarantine),
            child: None,
            merge_request: w.merge_request.clone(),
        };
        // Recorded before the file is read: if planning brings the server down, its restart
        // fails this run instead of planning it again.
        self.engine
            .store
            .append(&Event::now(&w.project, Some(w.run), EventKind::RunPlanning))
            .await?;
        let prep = match Prepared::new(&req, repo, &self.data.join("tmp")).await {
            Ok(p) => p,
            Err(e) => return self.fail_start(&w, e.to_string()).await,
        };
        let (ptx, prx) = mpsc::channel(16);
        drop(prx); // nobody watches progress here; the events say everything
        let report = self
            .engine
            .run(prep, &req, Arc::new(Live::default()), ptx, cancel)
            .await?;
        tracing::info!(project = %report.project, run = report.run, status = %report.status, "run finished");
        Ok(())
    }

    /// A run that cannot start (invalid takt.yml, a plan that cannot run, a git failure) is
    /// still a run of that commit: recorded as failed, with the reason, so people see why.
    async fn fail_start(&self, w: &Waiting, reason: String) -> Result<(), QueueError> {
        tracing::warn!(project = %w.project, run = w.run, %reason, "run could not start");
        self.engine
            .store
            .append(&Event::now(
                &w.project,
                Some(w.run),
                EventKind::RunFinished {
                    status: RunStatus::Failed,
                    duration_ms: 0,
                    reason: Some(reason),
                    budget_ms: None,
                    slowest_job: None,
                },
            ))
            .await?;
        Ok(())
    }
}

/// Stops what a crashed server left of a job. The shim normally ends the job by itself when
/// the server dies (its stdin closes); if one is still alive, SIGTERM makes it stop every
/// process of the job (SIGKILL after a grace period). Only a pid that still is a takt shim
/// is signalled: a reused pid belongs to someone else.
fn kill_orphan(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.split(|b| *b == 0).any(|a| a == takt_exec::shim::ARG.as_bytes()) {
        return;
    }
    if nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .is_ok()
    {
        tracing::warn!(pid, "killed the processes of a job interrupted by a server stop");
    }
}

/// The tests the default branch's takt.yml quarantines: a branch cannot excuse its own
/// failures (none when the file is missing or invalid).
async fn default_quarantine(repo: &Repo, branch: &str) -> Vec<takt_pipeline::Quarantined> {
    let Ok(tip) = repo.resolve(&format!("refs/heads/{branch}")).await else {
        return Vec::new();
    };
    let Some(bytes) = repo.file_at(&tip, "takt.yml").await else {
        return Vec::new();
    };
    tokio::task::spawn_blocking(move || takt_pipeline::parse("takt.yml", &bytes).map(|p| p.quarantine))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_is_interruptible_when_every_started_job_is() {
        assert!(super::interruptible([true, true]));
        assert!(!super::interruptible([true, false, true]));
        // Nothing started yet: the queue's mode decides, not auto-cancel.
        assert!(!super::interruptible([]));
    }
}
