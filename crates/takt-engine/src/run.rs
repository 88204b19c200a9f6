//! One run of a pipeline for one commit: prepare (git facts, parse, plan), then drive the
//! stop-the-line [`Schedule`] with up to N jobs at once, recording everything as events.

use crate::git::Repo;
use crate::log::FileLog;
use crate::report::*;
use crate::workspace::{self, Stored, sanitize};
use crate::{DataDir, EngineError, junit};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use takt_blob::{Keyring, LocalBlobs, Manifest, ManifestStore, Provenance, matching_files};
use takt_exec::{Executor, SharedLog, StepEnd, StepSpec};
use takt_model::{
    Event, EventKind, FailureReason, JobStatus, MergeRequestRun, OffsetDateTime, RunStatus, Trigger, timefmt,
};
use takt_pipeline::{ArtifactWhen, CachePolicy, Pipeline, Plan, PlanContext, PlannedJob, RetryWhen, Schedule};
use takt_store::Store;
use tokio::sync::{mpsc, watch};

/// Default job timeout, as in GitLab.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Timeout of `after_script`, as in GitLab.
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub path: PathBuf,
    pub rev: String,
    pub dirty: bool,
    pub only_jobs: Vec<String>,
    pub parallel: usize,
    pub log_limit: u64,
    pub project: Option<String>,
    pub trigger: Trigger,
    /// The branch the run is for, when `rev` is a commit id that the caller resolved from a
    /// branch (the server does: the branch may move on while the run waits in the queue).
    pub branch: Option<String>,
    /// The tag the run is for, when `rev` is a commit id resolved from a tag.
    pub tag: Option<String>,
    /// The project's default branch (`CI_DEFAULT_BRANCH`); `None`: the repository's
    /// ([`Repo::default_branch`]).
    pub default_branch: Option<String>,
    /// The run's number when it was already queued (the server records `run_queued` when a
    /// trigger arrives); `None` numbers it now and records it as queued.
    pub queued: Option<u64>,
    /// A retry of only the failed jobs of run `from`, or a manual job of it played: these
    /// jobs passed there and are not run again; their artifacts are reused.
    pub carry: Option<Carry>,
    /// Secret values this run may give to jobs that declare them (`secrets: [NAME]`).
    pub secrets: Vec<(String, String)>,
    /// The quarantined tests (the server gives its default branch's); `None`: those of the
    /// run's own takt.yml (`takt run`).
    pub quarantine: Option<Vec<takt_pipeline::Quarantined>>,
    /// A child pipeline's run (a trigger job's): which file it reads instead of the project's.
    pub child: Option<ChildOf>,
    /// The merge request the run is for (a merge-request pipeline).
    pub merge_request: Option<MergeRequestRun>,
}

impl RunRequest {
    /// `CI_PIPELINE_SOURCE`: `merge_request_event` for a merge request's run (and its retries),
    /// else what the trigger says.
    pub fn source(&self) -> &'static str {
        match (&self.trigger, &self.merge_request) {
            (Trigger::Parent { .. }, _) | (_, None) => self.trigger.pipeline_source(),
            (_, Some(_)) => "merge_request_event",
        }
    }
}

/// What a child pipeline's run reads: its file and the parent's layout, the variables its
/// trigger job forwards, and how deep it is nested.
#[derive(Debug, Clone)]
pub struct ChildOf {
    /// Path from the repository root.
    pub file: String,
    pub layout: takt_pipeline::Layout,
    pub variables: Vec<(String, String)>,
    /// 1 for a child, 2 for a grandchild.
    pub depth: u32,
}

/// How deep child pipelines may nest (GitLab's limit: a child and its child).
pub const MAX_CHILD_DEPTH: u32 = 2;

/// Jobs of an earlier run of the same commit that passed and are taken over, not re-run.
#[derive(Debug, Clone)]
pub struct Carry {
    pub from: u64,
    pub jobs: Vec<String>,
    /// Manual jobs to start (`takt runs play`): they run as if they were not manual.
    pub play: Vec<String>,
}

/// Everything known before the first job starts. Building it validates the pipeline.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub repo: Repo,
    pub project: String,
    /// The project directory inside the repository (`""`: the root), where takt.yml is and where
    /// jobs run. Lets one repository hold several projects, like takt's own `examples/`.
    pub subdir: String,
    pub commit: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub default_branch: String,
    /// The tree to check out when `--dirty` (the working directory as it is).
    pub dirty_tree: Option<String>,
    pub pipeline: Pipeline,
    pub plan: Plan,
}

impl Prepared {
    pub async fn new(req: &RunRequest, repo: Repo, scratch: &Path) -> Result<Prepared, EngineError> {
        // A run the queue numbered names the commit it resolved in this mirror moments ago:
        // no git process to resolve it again.
        let commit = if req.queued.is_some() && crate::git::is_object_id(&req.rev) {
            req.rev.clone()
        } else {
            repo.resolve(&req.rev).await?
        };
        let (branch, tag) = match (&req.branch, &req.tag) {
            (None, None) => repo.ref_of(&req.rev).await,
            (b, t) => (b.clone(), t.clone()),
        };
        let default_branch = match &req.default_branch {
            Some(b) => b.clone(),
            None => repo.default_branch().await,
        };
        let subdir = project_subdir(&repo, &req.path, &commit, req.dirty).await;
        let (dirty_tree, dirty_changes) = if req.dirty {
            let (tree, changes) = repo.dirty_tree(scratch).await?;
            (Some(tree), changes)
        } else {
            (None, Vec::new())
        };
        let source = Source {
            repo: &repo,
            commit: &commit,
            dirty: req.dirty,
        };
        let pipeline_file = async {
            match &req.child {
                Some(c) => match source.read(&c.file).await {
                    Some(b) => Ok((c.file.clone(), b)),
                    None => Err(EngineError::NoChildPipeline {
                        file: c.file.clone(),
                        commit: commit.clone(),
                    }),
                },
                None => source.pipeline_file(&subdir).await,
            }
        };
        // Three git processes, at once: what changed, the pipeline file, the tree's files.
        let (changed, file, files) = tokio::join!(
            repo.changed_files(&commit),
            pipeline_file,
            repo.files(dirty_tree.as_deref().unwrap_or(&commit))
        );
        let mut changed = changed?;
        changed.extend(dirty_changes);
        let (file, bytes) = file?;
        let mut files = files?;
        let includes = source.includes(&bytes, &files).await;
        // Parsing and planning are pure CPU work over input: off the async runtime.
        let mut pipeline = {
            let file = file.clone();
            let opts = takt_pipeline::ParseOptions {
                layout: req.child.as_ref().map(|c| c.layout),
                strict: false,
            };
            tokio::task::spawn_blocking(move || takt_pipeline::parse_with(&file, &bytes, &opts, &includes))
                .await
                .map_err(blocking_err)?
                .map_err(EngineError::InvalidPipeline)?
        };
        if let Some(c) = &req.child {
            // What the trigger job forwards wins over the child file's own variables.
            pipeline.variables.extend(c.variables.iter().cloned());
        }
        if !subdir.is_empty() {
            // Rules see paths relative to the project directory.
            let prefix = format!("{subdir}/");
            let strip = |v: Vec<String>| {
                v.into_iter()
                    .filter_map(|f| f.strip_prefix(&prefix).map(str::to_string))
                    .collect()
            };
            files = strip(files);
            changed = strip(changed);
        }
        let project = req.project.clone().unwrap_or_else(|| {
            let dir = if subdir.is_empty() {
                repo.root.clone()
            } else {
                repo.root.join(&subdir)
            };
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "project".into())
        });
        let mut variables: HashMap<String, String> = facts(&Facts {
            project: &project,
            run: 0,
            commit: &commit,
            branch: &branch,
            tag: &tag,
            default_branch: &default_branch,
            source: req.source(),
            merge_request: req.merge_request.as_ref(),
        })
        .into_iter()
        .collect();
        for (k, v) in &pipeline.variables {
            variables.insert(k.clone(), v.clone());
        }
        let cx = PlanContext {
            variables,
            changed_files: Some(changed),
            files,
            only_jobs: req.only_jobs.clone(),
        };
        let (pipeline, plan) = tokio::task::spawn_blocking(move || {
            let plan = takt_pipeline::plan(&pipeline, &cx);
            (pipeline, plan)
        })
        .await
        .map_err(blocking_err)?;
        let plan = plan?;
        Ok(Prepared {
            repo,
            project,
            subdir,
            commit,
            branch,
            tag,
            default_branch,
            dirty_tree,
            pipeline,
            plan,
        })
    }
}

/// Where a run's pipeline file and what it includes are read: a commit, or the working tree.
struct Source<'a> {
    repo: &'a Repo,
    commit: &'a str,
    dirty: bool,
}

impl Source<'_> {
    async fn read(&self, path: &str) -> Option<Vec<u8>> {
        if self.dirty {
            std::fs::read(self.repo.root.join(path)).ok()
        } else {
            self.repo.file_at(self.commit, path).await
        }
    }

    /// `takt.yml` of the project directory, or else its `.gitlab-ci.yml` (GitLab's layout).
    async fn pipeline_file(&self, subdir: &str) -> Result<(String, Vec<u8>), EngineError> {
        let at = |name: &str| {
            if subdir.is_empty() {
                name.to_string()
            } else {
                format!("{subdir}/{name}")
            }
        };
        for name in PIPELINE_FILES {
            if let Some(bytes) = self.read(&at(name)).await {
                return Ok((at(name), bytes));
            }
        }
        Err(EngineError::NoPipelineFile {
            root: self.repo.root.clone(),
            file: at("takt.yml"),
            commit: if self.dirty {
                "working tree".into()
            } else {
                self.commit.to_string()
            },
        })
    }

    /// Every file `include: local` reaches from `bytes` (paths from the repository root; globs
    /// matched against `files`), at most GitLab's 150. A missing one is left out: the parser
    /// says which.
    async fn includes(&self, bytes: &[u8], files: &[String]) -> BTreeMap<String, Vec<u8>> {
        let mut walk = takt_pipeline::gitlab::IncludeWalk::new(bytes, files);
        while let Some(p) = walk.wanted() {
            let content = self.read(&p).await;
            walk.give(p, content);
        }
        walk.finish()
    }
}

/// The pipeline files a project directory may hold, the first found is read.
pub const PIPELINE_FILES: [&str; 2] = ["takt.yml", ".gitlab-ci.yml"];

/// The directory of `path` relative to the repository root if it holds its own takt.yml in
/// the commit (or the working tree, with `--dirty`); otherwise the root (`""`).
async fn project_subdir(repo: &Repo, path: &Path, commit: &str, dirty: bool) -> String {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return String::new();
    };
    let root = std::fs::canonicalize(&repo.root).unwrap_or_else(|_| repo.root.clone());
    let Ok(rel) = abs.strip_prefix(&root) else {
        return String::new();
    };
    let rel = rel.to_string_lossy().into_owned();
    if rel.is_empty() {
        return rel;
    }
    let mut found = false;
    for name in PIPELINE_FILES {
        found = found
            || if dirty {
                abs.join(name).is_file()
            } else {
                repo.file_at(commit, &format!("{rel}/{name}")).await.is_some()
            };
    }
    if found { rel } else { String::new() }
}

/// The predefined variables of a run, GitLab-compatible (`CI_*`) and takt's own (`TAKT_*`).
/// What a run's predefined variables are made from.
struct Facts<'a> {
    project: &'a str,
    run: u64,
    commit: &'a str,
    branch: &'a Option<String>,
    tag: &'a Option<String>,
    default_branch: &'a str,
    source: &'a str,
    merge_request: Option<&'a MergeRequestRun>,
}

fn facts(f: &Facts<'_>) -> Vec<(String, String)> {
    let Facts {
        project,
        run,
        commit,
        branch,
        tag,
        default_branch,
        source,
        merge_request,
    } = *f;
    let short = &commit[..commit.len().min(8)];
    let mut v = vec![
        ("CI".to_string(), "true".to_string()),
        ("CI_DEFAULT_BRANCH".into(), default_branch.into()),
        ("CI_PIPELINE_SOURCE".into(), source.into()),
        ("CI_COMMIT_SHA".into(), commit.into()),
        ("CI_COMMIT_SHORT_SHA".into(), short.into()),
        ("CI_PIPELINE_ID".into(), run.to_string()),
        ("CI_PIPELINE_IID".into(), run.to_string()),
        ("CI_PROJECT_NAME".into(), project.into()),
        ("TAKT".into(), "true".into()),
        ("TAKT_COMMIT_SHA".into(), commit.into()),
        ("TAKT_COMMIT_SHORT_SHA".into(), short.into()),
        ("TAKT_RUN_NUMBER".into(), run.to_string()),
        ("TAKT_PROJECT".into(), project.into()),
    ];
    if let Some(mr) = merge_request {
        // As GitLab's merge-request pipelines: no `CI_COMMIT_BRANCH`, the ref is the source
        // branch (so `rules: - if: $CI_COMMIT_BRANCH` jobs stay out of them).
        v.push(("CI_COMMIT_REF_NAME".into(), mr.source_branch.clone()));
        v.push(("CI_COMMIT_REF_SLUG".into(), ref_slug(&mr.source_branch)));
        v.extend(mr.variables().map(|(k, v)| (k.to_string(), v)));
        return v;
    }
    if let Some(b) = branch {
        v.push(("CI_COMMIT_BRANCH".into(), b.clone()));
        v.push(("CI_COMMIT_REF_NAME".into(), b.clone()));
        v.push(("TAKT_BRANCH".into(), b.clone()));
    }
    if let Some(t) = tag {
        v.push(("CI_COMMIT_TAG".into(), t.clone()));
        v.push(("CI_COMMIT_REF_NAME".into(), t.clone()));
        v.push(("TAKT_TAG".into(), t.clone()));
    }
    if let Some(r) = tag.as_ref().or(branch.as_ref()) {
        v.push(("CI_COMMIT_REF_SLUG".into(), ref_slug(r)));
    }
    v
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lowercased, every run of other characters than `a-z0-9`
/// replaced by `-`, at most 63 bytes, no `-` at either end.
pub fn ref_slug(r: &str) -> String {
    let mut out = String::new();
    for c in r.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.chars().take(63).collect();
    out.trim_matches('-').to_string()
}

/// What a live display shows: the jobs running now.
#[derive(Default)]
pub struct Live {
    pub jobs: Mutex<Vec<LiveJob>>,
}

pub struct LiveJob {
    pub name: String,
    pub started: Instant,
    pub last_line: Arc<Mutex<String>>,
}

/// Progress reported while a run goes on (for line-oriented output).
#[derive(Debug, Clone)]
pub enum Progress {
    Started { job: String, attempt: u32 },
    Retrying { job: String, attempt: u32, reason: String },
    Finished(Box<JobReport>),
}

pub struct Engine<E> {
    pub executor: Arc<E>,
    pub store: Store,
    pub blobs: LocalBlobs,
    pub manifests: ManifestStore,
    pub keys: Arc<Keyring>,
    pub data: PathBuf,
    /// Where job workspaces are created.
    pub work: PathBuf,
    /// Program and arguments that start a step's shell script.
    pub shell: Vec<String>,
    /// Record each step's pid (`job_process`) so that a restarted server can stop what a
    /// crash left; `takt run` has nobody to recover and skips it.
    pub record_pids: bool,
    /// The largest artifact a job may store (`takt serve`'s `max_artifact_bytes`); a job whose
    /// artifact is larger fails, naming the limit. `None`: no limit (`takt run`).
    pub max_artifact_bytes: Option<u64>,
    /// `commit_info` for every commit a run names (and, through the server, a deploy).
    pub commits: Arc<crate::commits::CommitInfos>,
    /// The next run number of each project numbered so far ([`Engine::allocate_run`]), shared
    /// by every clone of the engine.
    numbers: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
    /// GitLab's `resource_group`s: (project, group) → its one permit, shared by every run the
    /// engine makes.
    groups: ResourceGroups,
}

/// At most one job of a `resource_group` runs at a time, across the runs of a project.
type ResourceGroups = Arc<Mutex<HashMap<(String, String), Arc<tokio::sync::Semaphore>>>>;

impl<E> Clone for Engine<E> {
    fn clone(&self) -> Engine<E> {
        Engine {
            executor: self.executor.clone(),
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            manifests: self.manifests.clone(),
            keys: self.keys.clone(),
            data: self.data.clone(),
            work: self.work.clone(),
            shell: self.shell.clone(),
            record_pids: self.record_pids,
            max_artifact_bytes: self.max_artifact_bytes,
            commits: self.commits.clone(),
            numbers: self.numbers.clone(),
            groups: self.groups.clone(),
        }
    }
}

impl<E: Executor + 'static> Engine<E> {
    pub fn new(executor: E, store: Store, data: &DataDir) -> Result<Engine<E>, EngineError> {
        let blobs = LocalBlobs::open(&data.root)?;
        let keys = Keyring::load_or_create(&data.root)?;
        Ok(Engine {
            executor: Arc::new(executor),
            commits: Arc::new(crate::commits::CommitInfos::new(store.clone())),
            store,
            manifests: ManifestStore::new(&data.root),
            blobs,
            keys: Arc::new(keys),
            data: data.root.clone(),
            work: data.work_dir(),
            shell: vec!["sh".into(), "-e".into()],
            record_pids: false,
            max_artifact_bytes: None,
            numbers: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
            groups: Arc::default(),
        })
    }

    /// A new run number for `project`: one more than any run of the log, or than any number
    /// given out before. Everything that numbers runs (the server's queue, `takt run`, child
    /// pipelines) takes its numbers here, so that none is given twice.
    pub async fn allocate_run(&self, project: &str) -> Result<u64, EngineError> {
        let mut next = self.numbers.lock().await;
        let n = match next.get(project) {
            Some(n) => *n,
            None => self.store.next_run_number(project).await?,
        };
        next.insert(project.to_string(), n + 1);
        Ok(n)
    }

    async fn emit(&self, project: &str, run: u64, kind: EventKind) -> Result<(), EngineError> {
        self.store.append(&Event::now(project, Some(run), kind)).await?;
        Ok(())
    }

    /// Records that a commit was seen and its run `run` queued.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_queued(
        &self,
        project: &str,
        run: u64,
        commit: &str,
        branch: &Option<String>,
        tag: &Option<String>,
        trigger: &Trigger,
        dirty: bool,
        merge_request: &Option<MergeRequestRun>,
    ) -> Result<(), EngineError> {
        // One transaction: a commit seen is never recorded without its run.
        let seen = EventKind::CommitSeen {
            commit: commit.to_string(),
            branch: branch.clone(),
            tag: tag.clone(),
        };
        let queued = EventKind::RunQueued {
            commit: commit.to_string(),
            branch: branch.clone(),
            tag: tag.clone(),
            trigger: trigger.clone(),
            dirty,
            merge_request: merge_request.clone(),
        };
        self.store
            .append_all(&[
                Event::now(project, Some(run), seen),
                Event::now(project, Some(run), queued),
            ])
            .await?;
        Ok(())
    }

    /// What the carried-over jobs of an earlier run left: their artifacts and the variables
    /// of their `reports: dotenv` (the last attempt's), by job — one read of that run's events.
    async fn carried(&self, project: &str, carry: &Carry) -> Result<Carried, EngineError> {
        let events = self
            .store
            .events(&takt_store::EventFilter {
                project: Some(project.to_string()),
                run: Some(carry.from),
                kinds: vec!["artifact_stored", "job_outputs"],
                ..Default::default()
            })
            .await?;
        let mut out = Carried::default();
        for e in events {
            match e.kind {
                EventKind::ArtifactStored { job, name, version, .. } => {
                    if let Ok(Some(m)) = self.manifests.get(&name, &version) {
                        let m = m.manifest;
                        out.artifacts.insert(
                            job,
                            Stored {
                                digest: m.digest,
                                tar: m.media_type == "application/x-tar",
                                path: m.path,
                            },
                        );
                    }
                }
                EventKind::JobOutputs { job, dotenv, .. } => {
                    out.dotenv.insert(job, dotenv);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Runs a prepared pipeline to its end (or until `cancel` becomes true). Boxed: a trigger
    /// job's child pipeline is a run too, made from within its parent's.
    pub fn run<'a>(
        &'a self,
        prep: Prepared,
        req: &'a RunRequest,
        live: Arc<Live>,
        progress: mpsc::Sender<Progress>,
        cancel: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunReport, EngineError>> + Send + 'a>> {
        Box::pin(self.run_to_end(prep, req, live, progress, cancel))
    }

    async fn run_to_end(
        &self,
        prep: Prepared,
        req: &RunRequest,
        live: Arc<Live>,
        progress: mpsc::Sender<Progress>,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let started_at = OffsetDateTime::now_utc();
        let project = prep.project.clone();
        let (commit, branch, tag) = (prep.commit.clone(), prep.branch.clone(), prep.tag.clone());
        let run = match req.queued {
            Some(n) => n,
            None => {
                let run = self.allocate_run(&project).await?;
                self.record_queued(
                    &project,
                    run,
                    &commit,
                    &branch,
                    &tag,
                    &req.trigger,
                    req.dirty,
                    &req.merge_request,
                )
                .await?;
                run
            }
        };
        // The commit's author, date and subject, read beside the jobs (a git process).
        let described = {
            let (commits, repo, project, commit) =
                (self.commits.clone(), prep.repo.clone(), project.clone(), commit.clone());
            tokio::spawn(async move { commits.record(&project, Some(run), &repo, &[commit]).await })
        };
        // The run's start and every job of its plan, in one transaction.
        let mut queued = vec![Event::now(&project, Some(run), EventKind::RunStarted)];
        queued.extend(prep.plan.jobs.iter().map(|j| {
            let needs = j.by_needs.then(|| {
                j.deps
                    .iter()
                    .filter_map(|d| prep.plan.jobs.get(*d))
                    .map(|d| d.job.name.clone())
                    .collect()
            });
            Event::now(
                &project,
                Some(run),
                EventKind::JobQueued {
                    job: j.job.name.clone(),
                    stage: j.job.stage.clone(),
                    needs,
                    environment: j.job.environment.as_ref().map(|e| takt_model::JobEnvironmentRef {
                        name: e.name.clone(),
                        action: e.action.clone(),
                        url: e.url.clone(),
                    }),
                },
            )
        }));
        // One source archive per run (every job unpacks its own fresh copy), made while the
        // run's start is recorded and its origin read.
        let src_tar = self
            .data
            .join("tmp")
            .join(format!("source-{}-{run}.tar", sanitize(&project)));
        let (appended, archived, origin) = tokio::join!(
            self.store.append_all(&queued),
            prep.repo
                .archive(prep.dirty_tree.as_deref().unwrap_or(&commit), &src_tar),
            prep.repo.origin()
        );
        appended?;
        archived?;
        let short = commit[..commit.len().min(8)].to_string();
        let version = match &tag {
            Some(t) => t.clone(),
            None if req.dirty => format!("{run}-{short}-dirty"),
            None => format!("{run}-{short}"),
        };
        let ctx = Arc::new(RunCtx {
            project: project.clone(),
            run,
            commit: commit.clone(),
            branch: branch.clone(),
            tag: tag.clone(),
            default_branch: prep.default_branch.clone(),
            dirty: req.dirty,
            version,
            origin,
            src_tar: src_tar.clone(),
            log_limit: req.log_limit,
            secrets: req.secrets.clone(),
            variables: prep.pipeline.variables.clone(),
            workflow_variables: prep.plan.variables.clone(),
            subdir: prep.subdir.clone(),
            source: req.source(),
            merge_request: req.merge_request.clone(),
            quarantine: req
                .quarantine
                .clone()
                .unwrap_or_else(|| prep.pipeline.quarantine.clone()),
            cleanup: Mutex::default(),
        });
        let mut plan = prep.plan.clone();
        // Manual jobs played by a person (`takt runs play`) run as any other job.
        for pj in &mut plan.jobs {
            if pj.when == takt_pipeline::When::Manual
                && req.carry.as_ref().is_some_and(|c| c.play.contains(&pj.job.name))
            {
                pj.when = takt_pipeline::When::OnSuccess;
            }
        }
        let plan = Arc::new(plan);
        let n = plan.jobs.len();
        let mut schedule = Schedule::new(&plan);
        let mut reports: Vec<Option<JobReport>> = vec![None; n];
        let mut produced: Vec<Option<Stored>> = vec![None; n];
        let mut exported: Vec<Vec<(String, String)>> = vec![Vec::new(); n];
        let mut ready_since: Vec<Option<Instant>> = vec![None; n];
        let mut running = tokio::task::JoinSet::new();
        let mut cancelled = *cancel.borrow();
        let parallel = req.parallel.max(1);
        if let Some(carry) = &req.carry {
            let Carried {
                artifacts: arts,
                mut dotenv,
            } = self.carried(&project, carry).await?;
            for (i, pj) in plan.jobs.iter().enumerate() {
                if !carry.jobs.contains(&pj.job.name) {
                    continue;
                }
                schedule.start(i);
                schedule.finish(i, JobStatus::Success, false);
                produced[i] = arts.get(&pj.job.name).cloned();
                exported[i] = dotenv.remove(&pj.job.name).unwrap_or_default();
                let reason = format!("passed in run #{}; taken over, not run again", carry.from);
                self.emit(
                    &project,
                    run,
                    EventKind::JobSkipped {
                        job: pj.job.name.clone(),
                        status: JobStatus::Success,
                        reason: reason.clone(),
                    },
                )
                .await?;
                let mut r = not_run(pj, JobStatus::Success, &reason);
                r.allow_failure = false;
                reports[i] = Some(r);
            }
        }

        loop {
            if cancelled {
                for i in schedule.cancel_waiting() {
                    let r = not_run(&plan.jobs[i], JobStatus::Cancelled, "the run was cancelled");
                    self.emit(
                        &project,
                        run,
                        EventKind::JobSkipped {
                            job: r.name.clone(),
                            status: JobStatus::Cancelled,
                            reason: "the run was cancelled".into(),
                        },
                    )
                    .await?;
                    reports[i] = Some(r);
                }
            }
            let (skips, ready) = schedule.poll();
            for s in skips {
                let r = not_run(&plan.jobs[s.job], s.status, &s.reason);
                self.emit(
                    &project,
                    run,
                    EventKind::JobSkipped {
                        job: r.name.clone(),
                        status: s.status,
                        reason: s.reason.clone(),
                    },
                )
                .await?;
                let _ = progress.send(Progress::Finished(Box::new(r.clone()))).await;
                reports[s.job] = Some(r);
            }
            let now = Instant::now();
            for &i in &ready {
                ready_since[i].get_or_insert(now);
            }
            for i in ready {
                if cancelled || running.len() >= parallel {
                    break;
                }
                schedule.start(i);
                if let Some(child) = plan.jobs[i].job.trigger.clone() {
                    let wait = ready_since[i].map_or(Duration::ZERO, |t| t.elapsed());
                    // A task of its own, like every job: the run's loop must not be what
                    // drives it (an append it began would wait for the loop, and the loop for
                    // the store).
                    let engine = self.clone();
                    let start = ChildStart {
                        pj: plan.jobs[i].clone(),
                        child,
                        ctx: ctx.clone(),
                        repo: prep.repo.clone(),
                        req: req.clone(),
                        layout: prep.pipeline.layout,
                        wait,
                        live: live.clone(),
                        progress: progress.clone(),
                        cancel: cancel.clone(),
                    };
                    let child: ChildFuture = Box::pin(async move { engine.trigger_job(start).await });
                    running.spawn(async move { (i, child.await) });
                    continue;
                }
                let inputs: Vec<Stored> = plan.jobs[i]
                    .artifacts_from
                    .iter()
                    .filter_map(|d| produced[*d].clone())
                    .collect();
                let dotenv: Vec<(String, String)> = plan.jobs[i]
                    .artifacts_from
                    .iter()
                    .flat_map(|d| exported[*d].iter().cloned())
                    .collect();
                let wait = ready_since[i].map_or(Duration::ZERO, |t| t.elapsed());
                let job = JobRun {
                    engine: self.handle(),
                    ctx: ctx.clone(),
                    plan: plan.clone(),
                    index: i,
                    inputs,
                    dotenv,
                    wait,
                    live: live.clone(),
                    progress: progress.clone(),
                    cancel: cancel.clone(),
                };
                running.spawn(async move { (i, job.run().await) });
            }
            if running.is_empty() {
                if schedule.all_done() {
                    break;
                }
                // Nothing runs and nothing can start: only possible when cancelled.
                cancelled = true;
                continue;
            }
            tokio::select! {
                joined = running.join_next() => {
                    let Some(joined) = joined else { continue };
                    let (i, outcome) = match joined {
                        Ok(x) => x,
                        Err(e) => return Err(EngineError::Io { doing: "running a job task for", path: self.data.clone(), source: std::io::Error::other(e.to_string()) }),
                    };
                    let outcome = outcome?;
                    schedule.finish(i, outcome.report.status, outcome.report.allow_failure);
                    produced[i] = outcome.artifact;
                    exported[i] = outcome.dotenv;
                    let _ = progress.send(Progress::Finished(Box::new(outcome.report.clone()))).await;
                    reports[i] = Some(outcome.report);
                }
                _ = cancel.changed(), if !cancelled => {
                    cancelled = *cancel.borrow();
                }
            }
        }
        let _ = std::fs::remove_file(&src_tar);
        let removing = std::mem::take(&mut *ctx.cleanup.lock());
        for r in removing {
            let _ = r.await;
        }

        let jobs: Vec<JobReport> = reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|| not_run(&plan.jobs[i], JobStatus::Cancelled, "never started")))
            .collect();
        let status = if cancelled {
            RunStatus::Cancelled
        } else if jobs.iter().any(|j| j.status == JobStatus::Failed && !j.allow_failure) {
            RunStatus::Failed
        } else if schedule.blocked_by().is_some() {
            RunStatus::Manual
        } else {
            RunStatus::Success
        };
        let reason = (status == RunStatus::Manual)
            .then(|| schedule.blocked_by().and_then(|b| plan.jobs.get(b)))
            .flatten()
            .map(|pj| format!("waits for the manual job `{}`", pj.job.name));
        let wall = started.elapsed();
        let budget = prep.pipeline.budget;
        let over_budget = (wall > budget).then(|| {
            let durs: Vec<Duration> = jobs.iter().map(|j| Duration::from_millis(j.duration_ms)).collect();
            let path = takt_pipeline::critical_path(&plan, &durs);
            let slowest = path.iter().copied().max_by_key(|i| durs[*i]).unwrap_or(0);
            BudgetWarning {
                budget_ms: budget.as_millis() as u64,
                wall_ms: wall.as_millis() as u64,
                critical_path: path.iter().map(|i| jobs[*i].name.clone()).collect(),
                slowest_job: jobs.get(slowest).map(|j| j.name.clone()).unwrap_or_default(),
                slowest_ms: durs.get(slowest).map_or(0, |d| d.as_millis() as u64),
            }
        });
        self.emit(
            &project,
            run,
            EventKind::RunFinished {
                status,
                duration_ms: wall.as_millis() as u64,
                reason,
                budget_ms: Some(budget.as_millis() as u64),
                slowest_job: over_budget.as_ref().map(|o| o.slowest_job.clone()),
            },
        )
        .await?;
        match described.await {
            Ok(Err(e)) => tracing::warn!(%project, run, error = %e, "cannot record the commit's info"),
            Err(e) => tracing::warn!(%project, run, error = %e, "cannot record the commit's info"),
            Ok(Ok(())) => {}
        }
        let coverage = {
            let figures: Vec<f64> = jobs.iter().filter_map(|j| j.coverage).collect();
            (!figures.is_empty()).then(|| figures.iter().sum::<f64>() / figures.len() as f64)
        };
        Ok(RunReport {
            project,
            run,
            status,
            commit,
            branch,
            tag,
            dirty: req.dirty,
            started_at: timefmt::rfc3339(started_at),
            finished_at: timefmt::rfc3339(OffsetDateTime::now_utc()),
            duration_ms: wall.as_millis() as u64,
            budget_ms: budget.as_millis() as u64,
            over_budget,
            data_dir: self.data.display().to_string(),
            jobs,
            excluded: prep.plan.excluded.clone(),
            not_supported_yet: prep.pipeline.reserved.iter().map(|(k, _)| k.clone()).collect(),
            coverage,
        })
    }

    /// A trigger job: its child pipeline run as a run of its own (numbered in the same
    /// project, `CI_PIPELINE_SOURCE=parent_pipeline`), which the job waits for.
    async fn trigger_job(&self, s: ChildStart) -> Result<JobOutcome, EngineError> {
        let ChildStart {
            pj,
            child,
            ctx,
            repo,
            req,
            layout,
            wait,
            live,
            progress,
            cancel,
            ..
        } = s;
        let name = pj.job.name.clone();
        let wait_ms = wait.as_millis() as u64;
        self.emit(
            &ctx.project,
            ctx.run,
            EventKind::JobStarted {
                job: name.clone(),
                attempt: 1,
                wait_ms,
                log: None,
                interruptible: pj.job.interruptible,
            },
        )
        .await?;
        let _ = progress
            .send(Progress::Started {
                job: name.clone(),
                attempt: 1,
            })
            .await;
        let started_at = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let depth = req.child.as_ref().map_or(0, |c| c.depth) + 1;
        // The variables the trigger job has, forwarded (GitLab's `forward: yaml_variables`).
        let forwarded: Vec<(String, String)> = if child.forward_variables {
            declared_variables(&ctx, &pj).cloned().collect()
        } else {
            Vec::new()
        };
        let (status, note, child_run) = if depth > MAX_CHILD_DEPTH {
            (
                JobStatus::Failed,
                format!(
                    "child pipelines nest at most {MAX_CHILD_DEPTH} deep; {} is not run",
                    child.file
                ),
                None,
            )
        } else {
            let child_req = RunRequest {
                rev: ctx.commit.clone(),
                only_jobs: Vec::new(),
                project: Some(ctx.project.clone()),
                trigger: Trigger::Parent {
                    run: ctx.run,
                    job: name.clone(),
                },
                branch: ctx.branch.clone(),
                tag: ctx.tag.clone(),
                default_branch: Some(ctx.default_branch.clone()),
                queued: None,
                carry: None,
                // The child is read in the layout of the file that triggers it.
                child: Some(ChildOf {
                    file: child.file.clone(),
                    layout,
                    variables: forwarded,
                    depth,
                }),
                ..req
            };
            match Prepared::new(&child_req, repo, &self.data.join("tmp")).await {
                Err(e) => (
                    JobStatus::Failed,
                    format!("the child pipeline {} cannot run: {e}", child.file),
                    None,
                ),
                Ok(p) => {
                    // The child's jobs report to its own run, not to this run's display.
                    let (tx, mut rx) = mpsc::channel(16);
                    tokio::spawn(async move { while rx.recv().await.is_some() {} });
                    let report = self.run(p, &child_req, live, tx, cancel).await?;
                    let word = match report.status {
                        RunStatus::Success => "passed",
                        RunStatus::Cancelled => "was cancelled",
                        _ => "failed",
                    };
                    // Cancelled is cancelled, depend or not (the parent's cancel reached it).
                    let status = match (child.depend, report.status) {
                        (_, RunStatus::Cancelled) => JobStatus::Cancelled,
                        (false, _) | (true, RunStatus::Success) => JobStatus::Success,
                        (true, _) => JobStatus::Failed,
                    };
                    (
                        status,
                        format!("child pipeline {}: run #{} {word}", child.file, report.run),
                        Some(report.run),
                    )
                }
            }
        };
        let duration = t0.elapsed();
        self.emit(
            &ctx.project,
            ctx.run,
            EventKind::JobOutputs {
                job: name.clone(),
                attempt: 1,
                coverage: None,
                dotenv: Vec::new(),
                reports: Vec::new(),
                environment: None,
                child_run,
            },
        )
        .await?;
        self.emit(
            &ctx.project,
            ctx.run,
            EventKind::JobFinished {
                job: name.clone(),
                attempt: 1,
                status,
                exit_code: None,
                failure_reason: None,
                allow_failure: pj.allow_failure,
                duration_ms: duration.as_millis() as u64,
                wait_ms,
                flaky: false,
            },
        )
        .await?;
        let mut report = not_run(&pj, status, &note);
        report.allow_failure = pj.allow_failure;
        report.attempts = 1;
        report.started_at = Some(timefmt::rfc3339(started_at));
        report.finished_at = Some(timefmt::rfc3339(started_at + duration));
        report.duration_ms = duration.as_millis() as u64;
        report.wait_ms = wait_ms;
        report.child_run = child_run;
        Ok(JobOutcome {
            report,
            artifact: None,
            dotenv: Vec::new(),
        })
    }

    fn handle(&self) -> Arc<Engine<E>> {
        Arc::new(self.clone())
    }
}

fn not_run(j: &PlannedJob, status: JobStatus, reason: &str) -> JobReport {
    JobReport {
        name: j.job.name.clone(),
        stage: j.job.stage.clone(),
        status,
        exit_code: None,
        failure_reason: None,
        allow_failure: true,
        attempts: 0,
        flaky: false,
        started_at: None,
        finished_at: None,
        duration_ms: 0,
        wait_ms: 0,
        log: None,
        log_truncated: false,
        artifact: None,
        tests: None,
        cache: None,
        caches: Vec::new(),
        reason: Some(reason.to_string()),
        quarantined: Vec::new(),
        coverage: None,
        environment: None,
        child_run: None,
    }
}

/// The variables a job's file gives it, in GitLab's order (later ones win): the top-level ones
/// its `inherit: variables` lets through, the `workflow: rules` entry's, its own, its rule's.
fn declared_variables<'a>(c: &'a RunCtx, pj: &'a PlannedJob) -> impl Iterator<Item = &'a (String, String)> {
    let inherited = |k: &String| pj.job.inherit_variables.as_ref().is_none_or(|names| names.contains(k));
    c.variables
        .iter()
        .filter(move |(k, _)| inherited(k))
        .chain(&c.workflow_variables)
        .chain(&pj.job.variables)
        .chain(&pj.rule_variables)
}

/// What the jobs a retry takes over left in their run, by job.
#[derive(Default)]
struct Carried {
    artifacts: HashMap<String, Stored>,
    dotenv: HashMap<String, Vec<(String, String)>>,
}

/// What a trigger job's child run starts from.
struct ChildStart {
    pj: PlannedJob,
    child: takt_pipeline::ChildPipeline,
    ctx: Arc<RunCtx>,
    repo: Repo,
    req: RunRequest,
    layout: takt_pipeline::Layout,
    wait: Duration,
    live: Arc<Live>,
    progress: mpsc::Sender<Progress>,
    cancel: watch::Receiver<bool>,
}

/// A trigger job's child run, a task beside the run's other jobs (boxed: the run it makes is
/// itself a run, with trigger jobs of its own).
type ChildFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<JobOutcome, EngineError>> + Send>>;

struct RunCtx {
    project: String,
    run: u64,
    commit: String,
    branch: Option<String>,
    tag: Option<String>,
    default_branch: String,
    dirty: bool,
    version: String,
    origin: String,
    src_tar: PathBuf,
    log_limit: u64,
    secrets: Vec<(String, String)>,
    /// The pipeline's top-level variables.
    variables: Vec<(String, String)>,
    /// The variables of the `workflow: rules` entry that made the run.
    workflow_variables: Vec<(String, String)>,
    subdir: String,
    quarantine: Vec<takt_pipeline::Quarantined>,
    /// `CI_PIPELINE_SOURCE`.
    source: &'static str,
    merge_request: Option<MergeRequestRun>,
    /// Workspaces being removed: off each job's path (the next job need not wait), and all
    /// gone before the run ends.
    cleanup: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct JobRun<E> {
    engine: Arc<Engine<E>>,
    ctx: Arc<RunCtx>,
    plan: Arc<Plan>,
    index: usize,
    inputs: Vec<Stored>,
    /// Variables from the `reports: dotenv` of the jobs it takes artifacts from.
    dotenv: Vec<(String, String)>,
    wait: Duration,
    live: Arc<Live>,
    progress: mpsc::Sender<Progress>,
    cancel: watch::Receiver<bool>,
}

struct JobOutcome {
    report: JobReport,
    artifact: Option<Stored>,
    /// The variables of its `reports: dotenv`, for the jobs that take its artifacts.
    dotenv: Vec<(String, String)>,
}

struct Attempt {
    status: JobStatus,
    exit_code: Option<i32>,
    reason: Option<FailureReason>,
    allowed: bool,
    log: String,
    log_bytes: u64,
    truncated: bool,
    artifact: Option<(ArtifactReport, Stored)>,
    tests: Option<takt_model::TestCounts>,
    caches: Vec<CacheReport>,
    started_at: OffsetDateTime,
    duration: Duration,
    note: Option<String>,
    /// Failed test cases that quarantine let pass (`suite name`).
    quarantined: Vec<String>,
    dotenv: Vec<(String, String)>,
    coverage: Option<f64>,
}

fn blocking_err(e: tokio::task::JoinError) -> EngineError {
    EngineError::Io {
        doing: "running blocking work for",
        path: PathBuf::from("a job"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl<E: Executor + 'static> JobRun<E> {
    fn pj(&self) -> &PlannedJob {
        &self.plan.jobs[self.index]
    }

    async fn emit(&self, kind: EventKind) -> Result<(), EngineError> {
        self.engine
            .store
            .append(&Event::now(&self.ctx.project, Some(self.ctx.run), kind))
            .await?;
        Ok(())
    }

    async fn run(self) -> Result<JobOutcome, EngineError> {
        let name = self.pj().job.name.clone();
        let retry = self.pj().job.retry.clone();
        let mut failed_before = false;
        let mut attempt = 0u32;
        let wait_ms = self.wait.as_millis() as u64;
        // `when: delayed`: the job waits `start_in` once it may start (a cancel ends the wait).
        if let Some(delay) = self.pj().job.start_in {
            let mut cancel = self.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.wait_for(|c| *c) => {}
            }
        }
        // What the file's keywords name with `$VAR`s (the resource group, the environment),
        // expanded once with the job's variables.
        let vars = self.env(Path::new(""));
        let environment = self.environment(&vars);
        let reports = self.report_files();
        // `resource_group`: one job of the group at a time in the project, in the order they
        // asked (tokio's semaphore is fair), held for every attempt.
        let _permit = match &self.pj().job.resource_group {
            None => None,
            Some(g) => {
                let key = (self.ctx.project.clone(), workspace::expand(g, &vars));
                let sem = self
                    .engine
                    .groups
                    .lock()
                    .entry(key)
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
                    .clone();
                let mut cancel = self.cancel.clone();
                tokio::select! {
                    p = sem.acquire_owned() => p.ok(),
                    _ = cancel.wait_for(|c| *c) => None,
                }
            }
        };
        loop {
            attempt += 1;
            // Recorded while the workspace is prepared; the job's process starts after both.
            let started = self.emit(EventKind::JobStarted {
                job: name.clone(),
                attempt,
                wait_ms,
                log: Some(self.log_rel(attempt)),
                interruptible: self.pj().job.interruptible,
            });
            let _ = self
                .progress
                .send(Progress::Started {
                    job: name.clone(),
                    attempt,
                })
                .await;
            let a = self.attempt(attempt, started).await?;
            // The attempt's log, outputs and end are known at once: one transaction.
            let mut end = vec![EventKind::LogStored {
                job: name.clone(),
                attempt,
                location: a.log.clone(),
                bytes: a.log_bytes,
                truncated: a.truncated,
            }];
            if a.coverage.is_some() || !a.dotenv.is_empty() || !reports.is_empty() || environment.is_some() {
                end.push(EventKind::JobOutputs {
                    job: name.clone(),
                    attempt,
                    coverage: a.coverage,
                    dotenv: a.dotenv.clone(),
                    reports: reports.clone(),
                    environment: environment.clone(),
                    child_run: None,
                });
            }
            let retryable = a.status == JobStatus::Failed
                && attempt <= retry.max
                && a.reason.is_some_and(|r| {
                    retry.when.is_empty()
                        || retry.when.iter().any(|w| {
                            matches!(
                                (w, r),
                                (RetryWhen::Always, _)
                                    | (RetryWhen::ScriptFailure, FailureReason::ScriptFailure)
                                    | (RetryWhen::JobExecutionTimeout, FailureReason::JobExecutionTimeout)
                                    | (RetryWhen::RunnerSystemFailure, FailureReason::RunnerSystemFailure)
                            )
                        })
                });
            let flaky = a.status == JobStatus::Success && failed_before;
            end.push(EventKind::JobFinished {
                job: name.clone(),
                attempt,
                status: a.status,
                exit_code: a.exit_code,
                failure_reason: a.reason,
                allow_failure: a.allowed,
                duration_ms: a.duration.as_millis() as u64,
                wait_ms,
                flaky,
            });
            let (project, run) = (&self.ctx.project, self.ctx.run);
            let end: Vec<Event> = end.into_iter().map(|k| Event::now(project, Some(run), k)).collect();
            self.engine.store.append_all(&end).await?;
            if retryable && !*self.cancel.borrow() {
                failed_before = true;
                let why = a.note.clone().unwrap_or_else(|| "it failed".into());
                let _ = self
                    .progress
                    .send(Progress::Retrying {
                        job: name.clone(),
                        attempt: attempt + 1,
                        reason: why,
                    })
                    .await;
                continue;
            }
            let pj = self.pj();
            let report = JobReport {
                name: name.clone(),
                stage: pj.job.stage.clone(),
                status: a.status,
                exit_code: a.exit_code,
                failure_reason: a.reason,
                allow_failure: a.allowed,
                attempts: attempt,
                flaky,
                started_at: Some(timefmt::rfc3339(a.started_at)),
                finished_at: Some(timefmt::rfc3339(a.started_at + a.duration)),
                duration_ms: a.duration.as_millis() as u64,
                wait_ms,
                log: Some(a.log),
                log_truncated: a.truncated,
                artifact: a.artifact.as_ref().map(|(r, _)| r.clone()),
                tests: a.tests,
                cache: a.caches.first().cloned(),
                caches: if a.caches.len() > 1 { a.caches } else { Vec::new() },
                reason: a.note,
                quarantined: a.quarantined,
                coverage: a.coverage,
                environment,
                child_run: None,
            };
            return Ok(JobOutcome {
                report,
                artifact: a.artifact.map(|(_, s)| s),
                dotenv: a.dotenv,
            });
        }
    }

    /// The job's `artifacts: reports:` files as declared (type and path or glob).
    fn report_files(&self) -> Vec<takt_model::ReportFile> {
        let Some(a) = &self.pj().job.artifacts else {
            return Vec::new();
        };
        let file = |kind: &str, path: &String| takt_model::ReportFile {
            kind: kind.to_string(),
            path: path.clone(),
        };
        a.junit
            .iter()
            .map(|p| file("junit", p))
            .chain(a.reports.iter().flat_map(|(k, ps)| ps.iter().map(move |p| file(k, p))))
            .collect()
    }

    /// The job's `environment:`, its name and url expanded with the job's variables.
    fn environment(&self, vars: &[(String, String)]) -> Option<takt_model::JobEnvironmentRef> {
        let e = self.pj().job.environment.as_ref()?;
        Some(takt_model::JobEnvironmentRef {
            name: workspace::expand(&e.name, vars),
            action: e.action.clone(),
            url: e.url.as_ref().map(|u| workspace::expand(u, vars)),
        })
    }

    /// Where an attempt's log goes, relative to the data directory.
    fn log_rel(&self, attempt: u32) -> String {
        format!(
            "logs/{}/{}/{}-{}.{attempt}.log",
            sanitize(&self.ctx.project),
            self.ctx.run,
            self.index,
            sanitize(&self.pj().job.name)
        )
    }

    /// The declared secrets this run may have: (name, value); names it may not have are noted.
    fn secrets(&self) -> (Vec<(String, String)>, Vec<String>) {
        let mut given = Vec::new();
        let mut missing = Vec::new();
        for name in &self.pj().job.secrets {
            match self.ctx.secrets.iter().find(|(n, _)| n == name) {
                Some(kv) => given.push(kv.clone()),
                None => missing.push(name.clone()),
            }
        }
        (given, missing)
    }

    fn env(&self, project_dir: &Path) -> Vec<(String, String)> {
        let pj = self.pj();
        let c = &self.ctx;
        let host = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), host("PATH", "/usr/local/bin:/usr/bin:/bin")),
            ("HOME".into(), host("HOME", "/")),
            ("LANG".into(), host("LANG", "C.UTF-8")),
        ];
        env.extend(facts(&Facts {
            project: &c.project,
            run: c.run,
            commit: &c.commit,
            branch: &c.branch,
            tag: &c.tag,
            default_branch: &c.default_branch,
            source: c.source,
            merge_request: c.merge_request.as_ref(),
        }));
        let dir = project_dir.display().to_string();
        env.extend([
            ("CI_JOB_NAME".into(), pj.job.name.clone()),
            ("CI_JOB_STAGE".into(), pj.job.stage.clone()),
            ("CI_PROJECT_DIR".into(), dir.clone()),
            ("CI_BUILDS_DIR".into(), dir.clone()),
            ("TAKT_JOB_NAME".into(), pj.job.name.clone()),
            ("TAKT_PROJECT_DIR".into(), dir),
        ]);
        // GitLab's order: dotenv reports of the jobs whose artifacts it takes win over the
        // file's variables.
        for (k, v) in declared_variables(c, pj).chain(self.dotenv.iter()) {
            let value = workspace::expand(v, &env);
            env.push((k.clone(), value));
        }
        env.extend(self.secrets().0);
        // Last one wins, like a shell: keep only the final value of each name.
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<(String, String)> = env.into_iter().rev().filter(|(k, _)| seen.insert(k.clone())).collect();
        out.reverse();
        out
    }

    async fn attempt(
        &self,
        attempt: u32,
        started: impl std::future::Future<Output = Result<(), EngineError>>,
    ) -> Result<Attempt, EngineError> {
        let pj = self.pj().clone();
        let started_at = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let slug = format!("{}-{}", self.index, sanitize(&pj.job.name));
        let log_dir = self
            .engine
            .data
            .join("logs")
            .join(sanitize(&self.ctx.project))
            .join(self.ctx.run.to_string());
        tokio::fs::create_dir_all(&log_dir)
            .await
            .map_err(|source| EngineError::Io {
                doing: "creating",
                path: log_dir.clone(),
                source,
            })?;
        let log_rel = self.log_rel(attempt);
        let log_path = self.engine.data.join(&log_rel);
        let last_line = Arc::new(Mutex::new(String::new()));
        let file_log =
            FileLog::create(&log_path, self.ctx.log_limit, last_line.clone()).map_err(|source| EngineError::Io {
                doing: "creating",
                path: log_path.clone(),
                source,
            })?;
        let (secrets, missing) = self.secrets();
        let mut file_log = file_log;
        file_log.mask(&secrets.iter().map(|(_, v)| v.as_bytes().to_vec()).collect::<Vec<_>>());
        let log_arc: Arc<Mutex<FileLog>> = Arc::new(Mutex::new(file_log));
        let log: SharedLog = log_arc.clone();
        let note = |text: String| {
            let mut l = log_arc.lock();
            takt_exec::LogSink::note(&mut *l, &text);
        };
        note(format!(
            "job `{}` attempt {attempt} of run #{} at {} ({})",
            pj.job.name,
            self.ctx.run,
            &self.ctx.commit[..self.ctx.commit.len().min(8)],
            self.ctx.project
        ));
        if let Some(image) = &pj.job.image {
            note(format!(
                "image `{image}` is not used: the local executor runs jobs on this machine"
            ));
        }
        if !missing.is_empty() {
            note(format!(
                "secrets {} are not given to this run: not set for the project, or the branch is neither the default branch nor protected",
                missing.join(", ")
            ));
        }

        let ws = self.engine.work.join(format!(
            "{}-r{}-{slug}-a{attempt}",
            sanitize(&self.ctx.project),
            self.ctx.run
        ));
        let checkout = ws.join("src");
        let src = if self.ctx.subdir.is_empty() {
            checkout.clone()
        } else {
            checkout.join(&self.ctx.subdir)
        };
        {
            let mut l = self.live.jobs.lock();
            l.push(LiveJob {
                name: pj.job.name.clone(),
                started: Instant::now(),
                last_line: last_line.clone(),
            });
        }

        // The job's environment, built once: cache key, scripts and artifact name all use it.
        let env = self.env(&src);
        // Prepare the workspace off the runtime: checkout, inputs, cache.
        let prep = {
            let (checkout, src, tar, blobs, inputs) = (
                checkout.clone(),
                src.clone(),
                self.ctx.src_tar.clone(),
                self.engine.blobs.clone(),
                self.inputs.clone(),
            );
            let caches = pj.job.caches.clone();
            let cache_dir = self.engine.data.join("cache");
            let env = env.clone();
            let (ws, owner) = (ws.clone(), self.engine.executor.workspace_owner());
            let prepared = tokio::task::spawn_blocking(move || -> Result<Vec<(String, bool)>, String> {
                std::fs::create_dir_all(&checkout)
                    .map_err(|e| format!("cannot create the workspace {}: {e}", checkout.display()))?;
                workspace::extract_tar(&tar, &checkout)
                    .map_err(|e| format!("cannot check out the commit into {}: {e}", checkout.display()))?;
                std::fs::create_dir_all(&src)
                    .map_err(|e| format!("cannot create the project directory {}: {e}", src.display()))?;
                for i in &inputs {
                    workspace::place(&blobs, i, &src)
                        .map_err(|e| format!("cannot place artifact {}: {e}", i.digest))?;
                }
                let mut cached = Vec::with_capacity(caches.len());
                for c in &caches {
                    let key = workspace::cache_key(c, &src, &env);
                    let hit = if c.policy == CachePolicy::Push {
                        false
                    } else {
                        workspace::restore_cache(&blobs, &cache_dir, &key, &src)
                            .map_err(|e| format!("cannot restore cache {key}: {e}"))?
                    };
                    cached.push((key, hit));
                }
                // The job runs as another user: the workspace must be theirs to write.
                if let Some((uid, gid)) = owner {
                    workspace::give_to(&ws, uid, gid)
                        .map_err(|e| format!("cannot give the workspace {} to the job's user: {e}", ws.display()))?;
                }
                Ok(cached)
            });
            let (recorded, prepared) = tokio::join!(started, prepared);
            recorded?;
            prepared.map_err(blocking_err)?
        };
        let mut result = Attempt {
            status: JobStatus::Failed,
            exit_code: None,
            reason: None,
            allowed: pj.allow_failure,
            log: log_rel.clone(),
            log_bytes: 0,
            truncated: false,
            artifact: None,
            tests: None,
            caches: Vec::new(),
            started_at,
            duration: Duration::ZERO,
            note: None,
            quarantined: Vec::new(),
            dotenv: Vec::new(),
            coverage: None,
        };
        let cache_key = match prep {
            Err(msg) => {
                note(msg.clone());
                result.reason = Some(FailureReason::RunnerSystemFailure);
                result.note = Some(msg);
                None
            }
            Ok(c) => {
                for (k, hit) in &c {
                    note(format!("cache `{k}`: {}", if *hit { "restored" } else { "miss" }));
                    result.caches.push(CacheReport {
                        key: k.clone(),
                        hit: *hit,
                        saved: false,
                    });
                }
                Some(c)
            }
        };

        if let Some(cache_key) = cache_key {
            let timeout = pj.job.timeout.unwrap_or(DEFAULT_TIMEOUT);
            let main: Vec<String> = pj
                .job
                .before_script
                .iter()
                .chain(pj.job.script.iter())
                .cloned()
                .collect();
            let end = self
                .step(&ws, attempt, "script.sh", &main, &env, &src, timeout, log.clone())
                .await?;
            match end {
                StepEnd::Exited(0) => result.status = JobStatus::Success,
                StepEnd::Exited(code) => {
                    result.exit_code = Some(code);
                    result.reason = Some(FailureReason::ScriptFailure);
                    result.allowed = pj.allow_failure || pj.job.allow_exit_codes.contains(&code);
                    result.note = Some(format!("exit code {code}"));
                    note(format!("the script failed with exit code {code}"));
                }
                StepEnd::TimedOut => {
                    result.reason = Some(FailureReason::JobExecutionTimeout);
                    let msg = format!(
                        "timed out after {}; every process of the job was killed",
                        timefmt::human(timeout)
                    );
                    note(msg.clone());
                    result.note = Some(msg);
                }
                StepEnd::Cancelled => {
                    result.status = JobStatus::Cancelled;
                    note("cancelled; every process of the job was killed".into());
                    result.note = Some("cancelled".into());
                }
            }
            if result.status == JobStatus::Success {
                result.exit_code = Some(0);
            }
            if !pj.job.after_script.is_empty() && result.status != JobStatus::Cancelled {
                note("running after_script".into());
                let end = self
                    .step(
                        &ws,
                        attempt,
                        "after_script.sh",
                        &pj.job.after_script,
                        &env,
                        &src,
                        AFTER_SCRIPT_TIMEOUT,
                        log.clone(),
                    )
                    .await?;
                if end != StepEnd::Exited(0) {
                    note(format!(
                        "after_script ended with {end:?}; this does not change the job's status"
                    ));
                }
            }
            self.collect(&pj, attempt, &src, &env, cache_key, &mut result, &note, started_at)
                .await?;
        }

        let (bytes, truncated) = log_arc.lock().finish();
        result.log_bytes = bytes;
        result.truncated = truncated;
        if let Some(re) = pj.job.coverage.clone() {
            let path = log_path.clone();
            result.coverage = tokio::task::spawn_blocking(move || {
                let log = std::fs::read(&path).ok()?;
                takt_pipeline::reports::coverage_in(&re, &String::from_utf8_lossy(&log))
            })
            .await
            .map_err(blocking_err)?;
        }
        result.duration = t0.elapsed();
        {
            let mut l = self.live.jobs.lock();
            l.retain(|j| !Arc::ptr_eq(&j.last_line, &last_line));
        }
        let removing = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&ws);
        });
        self.ctx.cleanup.lock().push(removing);
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        ws: &Path,
        attempt: u32,
        file: &str,
        lines: &[String],
        env: &[(String, String)],
        cwd: &Path,
        timeout: Duration,
        log: SharedLog,
    ) -> Result<StepEnd, EngineError> {
        let path = ws.join(file);
        // The workspace is the job's: an earlier step may have left a symlink at this name.
        // Remove whatever is there (a link itself, never its target) and create the file anew,
        // refusing to follow anything (O_EXCL), so takt never writes outside the workspace.
        let text = workspace::script(lines);
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)?
                .write_all(text.as_bytes())
        })
        .await
        .map_err(blocking_err)?
        .map_err(|source| EngineError::Io {
            doing: "writing",
            path: path.clone(),
            source,
        })?;
        if let Some((uid, gid)) = self.engine.executor.workspace_owner() {
            let p = path.clone();
            tokio::task::spawn_blocking(move || std::os::unix::fs::lchown(&p, Some(uid), Some(gid)))
                .await
                .map_err(blocking_err)?
                .map_err(|source| EngineError::Io {
                    doing: "giving the job's user",
                    path: path.clone(),
                    source,
                })?;
        }
        let mut program = self.engine.shell.clone();
        program.push(path.display().to_string());
        // The step's pid is recorded (before the step can end) so that a restarted server can
        // find and stop what a crash left behind.
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel::<u32>();
        let pid_tx = Mutex::new(Some(pid_tx));
        let on_start = self.engine.record_pids.then(|| {
            takt_exec::OnStart(Arc::new(move |pid| {
                if let Some(tx) = pid_tx.lock().take() {
                    let _ = tx.send(pid);
                }
            }))
        });
        let record = async {
            if let Ok(pid) = pid_rx.await {
                let job = self.pj().job.name.clone();
                if let Err(e) = self.emit(EventKind::JobProcess { job, attempt, pid }).await {
                    tracing::warn!(error = %e, "cannot record a job's process");
                }
            }
        };
        let spec = StepSpec {
            program,
            env: env.to_vec(),
            cwd: cwd.to_path_buf(),
            workspace: Some(ws.to_path_buf()),
            network: self.pj().job.network,
            timeout,
            on_start,
        };
        let (end, ()) = tokio::join!(self.engine.executor.run_step(spec, log, self.cancel.clone()), record);
        end.map_err(|e| EngineError::Io {
            doing: "starting a job step in",
            path: cwd.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Artifacts, test reports and cache after the script.
    #[allow(clippy::too_many_arguments)]
    async fn collect(
        &self,
        pj: &PlannedJob,
        attempt: u32,
        src: &Path,
        env: &[(String, String)],
        cache_keys: Vec<(String, bool)>,
        result: &mut Attempt,
        note: &(dyn Fn(String) + Sync),
        started_at: OffsetDateTime,
    ) -> Result<(), EngineError> {
        if let Some(a) = &pj.job.artifacts {
            if !a.junit.is_empty() {
                let (src2, globs) = (src.to_path_buf(), a.junit.clone());
                let parsed = tokio::task::spawn_blocking(move || {
                    let mut cases = Vec::new();
                    let mut errors = Vec::new();
                    for f in matching_files(&src2, &globs, &[]) {
                        // Regular files only: a report that is a symlink is not followed.
                        if !std::fs::symlink_metadata(src2.join(&f)).is_ok_and(|m| m.is_file()) {
                            errors.push(format!("{}: not a regular file (a symlink?)", f.display()));
                            continue;
                        }
                        match std::fs::read(src2.join(&f))
                            .map_err(|e| e.to_string())
                            .and_then(|b| junit::parse(&b))
                        {
                            Ok(c) => cases.extend(c),
                            Err(e) => errors.push(format!("{}: {e}", f.display())),
                        }
                    }
                    (cases, errors)
                })
                .await
                .map_err(blocking_err)?;
                for e in &parsed.1 {
                    note(format!("JUnit report ignored: {e}"));
                }
                if parsed.0.is_empty() && parsed.1.is_empty() {
                    note(format!("no JUnit report matched {:?}", a.junit));
                } else {
                    // Its script failed, and only by test cases under quarantine: it passes, and
                    // says which.
                    let today = timefmt::ymd(started_at.date());
                    let failed: Vec<&takt_model::TestCase> = parsed
                        .0
                        .iter()
                        .filter(|c| {
                            matches!(
                                c.outcome,
                                takt_model::TestOutcome::Failed | takt_model::TestOutcome::Error
                            )
                        })
                        .collect();
                    let excused = |c: &takt_model::TestCase| {
                        self.ctx
                            .quarantine
                            .iter()
                            .any(|q| !q.expired(&today) && q.covers(&pj.job.name, &c.suite, &c.name))
                    };
                    if result.status == JobStatus::Failed
                        && result.reason == Some(FailureReason::ScriptFailure)
                        && !failed.is_empty()
                        && failed.iter().all(|c| excused(c))
                        // A report that could not be read may hold other failures.
                        && parsed.1.is_empty()
                    {
                        result.quarantined = failed.iter().map(|c| format!("{} {}", c.suite, c.name)).collect();
                        note(format!(
                            "failed only by quarantined tests, so it passes: {}",
                            result.quarantined.join(", ")
                        ));
                        result.status = JobStatus::Success;
                        result.reason = None;
                    }
                    let counts = junit::counts(&parsed.0);
                    note(format!(
                        "tests: {} run, {} failed, {} errors, {} skipped",
                        counts.tests, counts.failures, counts.errors, counts.skipped
                    ));
                    self.emit(EventKind::TestReport {
                        job: pj.job.name.clone(),
                        attempt,
                        counts: counts.clone(),
                        cases: parsed.0,
                    })
                    .await?;
                    result.tests = Some(counts);
                }
            }
            // `reports: dotenv`: variables for the jobs that take this job's artifacts, read when
            // its artifacts are (GitLab: `artifacts: when`, on success by default).
            let dotenv: Vec<String> = a
                .reports
                .iter()
                .filter(|(k, _)| k == "dotenv")
                .flat_map(|(_, p)| p.iter().cloned())
                .collect();
            // After the JUnit reports: quarantine may have made the job pass.
            let collect_now = match a.when {
                ArtifactWhen::Always => true,
                ArtifactWhen::OnSuccess => result.status == JobStatus::Success,
                ArtifactWhen::OnFailure => result.status == JobStatus::Failed,
            };
            if !dotenv.is_empty() && collect_now {
                let src2 = src.to_path_buf();
                let (vars, problems) = tokio::task::spawn_blocking(move || workspace::read_dotenv(&src2, &dotenv))
                    .await
                    .map_err(blocking_err)?;
                for p in problems {
                    note(format!("dotenv report: {p}"));
                }
                if !vars.is_empty() {
                    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
                    note(format!(
                        "dotenv report: passing {} to the jobs after this one",
                        names.join(", ")
                    ));
                }
                result.dotenv = vars;
            }
            if collect_now && !a.paths.is_empty() {
                let name = match &a.name {
                    // Variables may bring characters outside the safe set (a branch's `/`).
                    Some(n) if n.contains('$') => takt_pipeline::artifact_name_for_job(&workspace::expand(n, env)),
                    Some(n) => n.clone(),
                    // A job name like `test/unit` makes the artifact `test-unit`.
                    None => takt_pipeline::artifact_name_for_job(&pj.job.name),
                };
                match self.store_artifact(pj, src, &name, a, started_at).await {
                    Ok(Some(x)) => {
                        note(format!(
                            "artifact {}@{} stored: {} ({} bytes)",
                            x.0.name, x.0.version, x.0.digest, x.0.size
                        ));
                        self.emit(EventKind::ArtifactStored {
                            job: pj.job.name.clone(),
                            name: x.0.name.clone(),
                            version: x.0.version.clone(),
                            digest: x.0.digest.clone(),
                            size: x.0.size,
                        })
                        .await?;
                        result.artifact = Some(x);
                    }
                    Ok(None) => note(format!("WARNING: no file matches the artifact paths {:?}", a.paths)),
                    Err(msg) => {
                        note(msg.clone());
                        result.status = JobStatus::Failed;
                        result.reason = Some(FailureReason::RunnerSystemFailure);
                        result.note = Some(msg);
                    }
                }
            }
        }
        result.caches.clear();
        for (c, (key, hit)) in pj.job.caches.iter().zip(cache_keys) {
            let mut saved = false;
            if result.status == JobStatus::Success && c.policy != CachePolicy::Pull {
                let (blobs, dir, src2, paths, k) = (
                    self.engine.blobs.clone(),
                    self.engine.data.join("cache"),
                    src.to_path_buf(),
                    c.paths.clone(),
                    key.clone(),
                );
                saved = tokio::task::spawn_blocking(move || workspace::save_cache(&blobs, &dir, &k, &src2, &paths))
                    .await
                    .map_err(blocking_err)?
                    .unwrap_or(false);
                if saved {
                    note(format!("cache `{key}` saved"));
                }
            }
            self.emit(EventKind::CacheUsed {
                job: pj.job.name.clone(),
                key: key.clone(),
                hit,
                saved,
            })
            .await?;
            result.caches.push(CacheReport { key, hit, saved });
        }
        Ok(())
    }

    async fn store_artifact(
        &self,
        pj: &PlannedJob,
        src: &Path,
        name: &str,
        a: &takt_pipeline::Artifacts,
        started_at: OffsetDateTime,
    ) -> Result<Option<(ArtifactReport, Stored)>, String> {
        takt_pipeline::check_artifact_name(name).map_err(|e| format!("artifact name {e}"))?;
        let (blobs, src2, paths, exclude) = (
            self.engine.blobs.clone(),
            src.to_path_buf(),
            a.paths.clone(),
            a.exclude.clone(),
        );
        let max = self.engine.max_artifact_bytes;
        let too_large = |size: u64, max: u64| {
            format!(
                "artifact {name} is {size} bytes, over the server's limit of {max} bytes (max_artifact_bytes); it was not stored"
            )
        };
        let packed = tokio::task::spawn_blocking(move || {
            // The files' sizes first: an artifact over the limit is refused before it is copied.
            if let Some(max) = max {
                let files = takt_blob::matching_files(&src2, &paths, &exclude);
                let size: u64 = files
                    .iter()
                    .filter_map(|f| std::fs::symlink_metadata(src2.join(f)).ok())
                    .map(|m| m.len())
                    .sum();
                if size > max {
                    return Ok(Err(size));
                }
            }
            takt_blob::pack_paths(&blobs, &src2, &paths, &exclude, false).map(Ok)
        })
        .await
        .map_err(|e| e.to_string())?;
        let (blob, tar, path) = match packed {
            Ok(Ok(x)) => x,
            Ok(Err(size)) => return Err(too_large(size, max.unwrap_or(0))),
            Err(takt_blob::BlobError::NothingToPack(_)) => return Ok(None),
            Err(e) => return Err(format!("cannot store the artifact: {e}")),
        };
        // A tar's headers can take it over the limit; the unreferenced blob is swept by `gc`.
        if let Some(max) = max
            && blob.size > max
        {
            return Err(too_large(blob.size, max));
        }
        let now = OffsetDateTime::now_utc();
        let manifest = Manifest {
            name: name.to_string(),
            version: self.ctx.version.clone(),
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: if tar {
                "application/x-tar".into()
            } else {
                "application/octet-stream".into()
            },
            path: path.clone(),
            expires_at: a.expire_in.map(|d| timefmt::rfc3339(now + d)),
            restricted: !a.public,
            provenance: Provenance {
                build_type: "https://takt.dev/provenance/run/v1".into(),
                builder: format!("takt {}", env!("CARGO_PKG_VERSION")),
                project: self.ctx.project.clone(),
                repository: self.ctx.origin.clone(),
                commit: self.ctx.commit.clone(),
                branch: self.ctx.branch.clone(),
                tag: self.ctx.tag.clone(),
                run: self.ctx.run,
                job: pj.job.name.clone(),
                started_at: timefmt::rfc3339(started_at),
                finished_at: timefmt::rfc3339(now),
                inputs: self.inputs.iter().map(|i| i.digest.clone()).collect(),
                dirty: self.ctx.dirty,
                pushed_by: None,
            },
        };
        let signed = self.engine.keys.sign(manifest).map_err(|e| e.to_string())?;
        self.engine.manifests.put(&signed).map_err(|e| e.to_string())?;
        Ok(Some((
            ArtifactReport {
                name: name.to_string(),
                version: self.ctx.version.clone(),
                digest: blob.digest.clone(),
                size: blob.size,
            },
            Stored {
                digest: blob.digest,
                tar,
                path,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_slugs_like_gitlab() {
        assert_eq!(ref_slug("Feature/ABC_1"), "feature-abc-1");
        assert_eq!(ref_slug("--main--"), "main");
        assert_eq!(ref_slug(&"x".repeat(80)).len(), 63);
    }
}
