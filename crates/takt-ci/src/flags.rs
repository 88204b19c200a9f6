//! Feature flags at run time (docs/flags.md): what the default branch's `flags:` define, with
//! the changes made at run time (`takt flag set|kill`) written over them, kept compiled for
//! OFREP; every change from either source is a `flag_changed` event. A run-time change wins
//! until the file changes that flag in that environment again.
//!
//! The flags follow the event log: the view of `flag_changed` events is read from the store on
//! first use, and each change is appended before it takes effect. One lock serialises file
//! changes and run-time changes, so neither is lost to the other.

use crate::Ci;
use crate::schedule::BranchConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use takt_flags::{Change, FlagSet};
use takt_model::{Event, EventKind, FlagSetting, FlagSource};
use takt_views::{Flags, Projection};

/// A project's flags as OFREP answers them: the file's, with run-time changes written over.
#[derive(Debug)]
pub struct ProjectFlags {
    /// The file's documents (the base and each environment's own).
    pub config: takt_pipeline::FlagsConfig,
    /// The base, as the file gives it.
    pub base: FlagSet,
    /// Each environment the file or a run-time change gives settings of its own.
    pub environments: HashMap<String, FlagSet>,
    /// Those environments' flagd documents, run-time changes written in (for in-process
    /// clients, which evaluate them themselves).
    pub documents: HashMap<String, serde_json::Value>,
}

impl ProjectFlags {
    /// The flags as environment `env` sees them.
    pub fn of(&self, env: &str) -> &FlagSet {
        self.environments.get(env).unwrap_or(&self.base)
    }

    /// The flagd document environment `env` sees.
    pub fn document(&self, env: &str) -> &serde_json::Value {
        self.documents.get(env).unwrap_or(&self.config.document)
    }

    /// The file's flags in `env` (no run-time change).
    fn file_documents(f: &takt_pipeline::FlagsConfig) -> Option<(FlagSet, HashMap<String, FlagSet>)> {
        let base = takt_flags::parse(&f.document).ok()?;
        let mut environments = HashMap::new();
        for (env, doc) in &f.environments {
            environments.insert(env.clone(), takt_flags::parse(doc).ok()?);
        }
        Some((base, environments))
    }
}

/// The run-time side of the flags: the view of their changes, and who to tell when they move.
pub struct FlagsLive {
    view: tokio::sync::Mutex<Option<Flags>>,
    /// The name of each project whose flags changed (OFREP's event streams listen).
    pub moved: tokio::sync::broadcast::Sender<String>,
}

impl Default for FlagsLive {
    fn default() -> Self {
        FlagsLive {
            view: tokio::sync::Mutex::new(None),
            moved: tokio::sync::broadcast::channel(256).0,
        }
    }
}

/// Why a flag change was not made.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] takt_store::StoreError),
}

/// The view, read from the log the first time.
async fn view<'a>(ci: &'a Ci) -> Result<tokio::sync::MappedMutexGuard<'a, Flags>, takt_store::StoreError> {
    let mut g = ci.flags_live.view.lock().await;
    if g.is_none() {
        let events = ci
            .queue
            .engine
            .store
            .events(&takt_store::EventFilter {
                kinds: Flags::KINDS.to_vec(),
                ..Default::default()
            })
            .await?;
        *g = Some(Flags::fold(&events));
    }
    Ok(tokio::sync::MutexGuard::map(g, |v| {
        v.get_or_insert_with(Flags::default)
    }))
}

/// The environments a project's flags are kept for: those it declares, those its flags give
/// settings of their own, and those a change was ever recorded for.
fn environments(
    project: &str,
    cfg: &BranchConfig,
    flags: Option<&takt_pipeline::FlagsConfig>,
    view: &Flags,
) -> BTreeSet<String> {
    let mut envs: BTreeSet<String> = cfg.environments.iter().map(|e| e.name.clone()).collect();
    if let Some(f) = flags {
        envs.extend(f.environments.keys().cloned());
    }
    envs.extend(view.of(project).map(|((e, _), _)| e.to_string()));
    envs
}

/// A project's flags: the file's, already compiled (`file`), with the run-time settings in
/// force written over them.
fn compile(
    project: &str,
    config: &takt_pipeline::FlagsConfig,
    file: (FlagSet, HashMap<String, FlagSet>),
    view: &Flags,
) -> ProjectFlags {
    let (base, mut environments) = file;
    let mut runtime: BTreeMap<&str, Vec<(&str, &FlagSetting)>> = BTreeMap::new();
    for ((env, key), v) in view.of(project) {
        if let (Some(r), Some(_)) = (&v.runtime, &v.file) {
            runtime.entry(env).or_default().push((key, &r.setting));
        }
    }
    let mut documents: HashMap<String, serde_json::Value> = config.environments.clone().into_iter().collect();
    for (env, settings) in runtime {
        let doc = config.environments.get(env).unwrap_or(&config.document);
        let patched = takt_flags::patch(doc, settings);
        match takt_flags::parse(&patched) {
            Ok(set) => {
                environments.insert(env.to_string(), set);
                documents.insert(env.to_string(), patched);
            }
            Err(problems) => {
                let p: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::warn!(%project, %env, problems = %p.join("; "), "run-time flag changes no longer fit the file; the file's flags answer");
            }
        }
    }
    ProjectFlags {
        config: config.clone(),
        base,
        environments,
        documents,
    }
}

/// Holds the flags still while the default branch's new config is put in place (see
/// [`crate::schedule::refresh`]).
pub(crate) type Reconciling<'a> = tokio::sync::MappedMutexGuard<'a, Flags>;

/// The default branch moved to `commit` whose takt.yml is valid: records a `source: file`
/// change for each flag and environment the file now defines differently, and sets
/// `cfg.flags`. The returned guard keeps run-time changes out until `cfg` is in place; `None`
/// (the log could not be read or written): nothing of `cfg` may be put in place, so that the
/// next refresh reads this commit again.
pub(crate) async fn reconcile<'a>(
    ci: &'a Ci,
    project: &str,
    commit: &str,
    cfg: &mut BranchConfig,
    config: Option<&takt_pipeline::FlagsConfig>,
) -> Option<Reconciling<'a>> {
    let mut view = match view(ci).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%project, error = %e, "the flag changes cannot be read; flags stay as they were");
            return None;
        }
    };
    let file = config.and_then(ProjectFlags::file_documents);
    if config.is_some() && file.is_none() {
        // The parser checked the documents; one that does not compile is a bug, not a removal.
        tracing::error!(%project, %commit, "the default branch's flags do not compile; flags stay as they were");
        return None;
    }
    let mut changes = Vec::new();
    for env in environments(project, cfg, config, &view) {
        let set = file.as_ref().map(|(base, envs)| envs.get(&env).unwrap_or(base));
        let mut keys: BTreeSet<String> = set
            .map(|s| s.flags().map(|f| f.key.clone()).collect())
            .unwrap_or_default();
        keys.extend(
            view.of(project)
                .filter(|((e, _), v)| *e == env && v.file.is_some())
                .map(|((_, k), _)| k.to_string()),
        );
        for key in keys {
            let now = set.and_then(|s| s.get(&key)).map(takt_flags::Flag::setting);
            let recorded = view.get(project, &env, &key);
            if recorded.and_then(|v| v.file.as_ref()) == now.as_ref() {
                continue;
            }
            let before = recorded.and_then(|v| v.in_force()).map(|(s, _)| s.clone());
            changes.push(EventKind::FlagChanged {
                environment: env.clone(),
                flag: key,
                source: FlagSource::File,
                by: None,
                commit: Some(commit.to_string()),
                before,
                after: now,
            });
        }
    }
    let moved = !changes.is_empty();
    for kind in changes {
        let e = Event::now(project, None, kind);
        if let Err(err) = ci.queue.engine.store.append(&e).await {
            tracing::error!(%project, error = %err, "a flag change from the file could not be recorded; the next refresh tries again");
            let _ = ci.flags_live.moved.send(project.to_string());
            return None;
        }
        view.apply(&e);
    }
    cfg.flags = config.zip(file).map(|(c, f)| Arc::new(compile(project, c, f, &view)));
    if moved {
        let _ = ci.flags_live.moved.send(project.to_string());
    }
    Some(view)
}

/// What a run-time change did.
#[derive(Debug, Clone)]
pub struct Changed {
    /// `None`: the flag was already so; nothing was recorded.
    pub seq: Option<i64>,
    pub before: FlagSetting,
    pub after: FlagSetting,
}

/// `takt flag set|kill`: changes `key` in `env` of `project` at run time, by token `by`.
pub async fn change(
    ci: &Ci,
    project: &str,
    env: &str,
    key: &str,
    ask: &Change,
    replace_targeting: bool,
    by: &str,
) -> Result<Changed, FlagError> {
    let p = ci.project(project).map_err(|e| FlagError::NotFound(e.to_string()))?;
    crate::schedule::refresh(ci, &p).await;
    let mut view = view(ci).await?;
    let (flags, commit) = {
        let cfgs = ci.branch_configs.read();
        let Some(cfg) = cfgs.get(project) else {
            return Err(FlagError::NotFound(format!(
                "`{project}`'s default branch has not been read yet (no takt.yml?)"
            )));
        };
        let Some(flags) = cfg.flags.clone() else {
            return Err(FlagError::NotFound(format!(
                "`{project}`'s default branch defines no flags (add `flags:` to its takt.yml; docs/flags.md)"
            )));
        };
        let declared: Vec<String> = cfg.environments.iter().map(|e| e.name.clone()).collect();
        let known = environments(project, cfg, Some(&flags.config), &view);
        if !declared.is_empty() && !known.contains(env) {
            return Err(FlagError::NotFound(format!(
                "`{project}` has no environment `{env}` (its environments: {})",
                declared.join(", ")
            )));
        }
        (flags, cfg.commit.clone())
    };
    let set = flags.of(env);
    let Some(flag) = set.get(key) else {
        let keys: Vec<&str> = set.flags().map(|f| f.key.as_str()).collect();
        return Err(FlagError::NotFound(format!(
            "`{project}` has no flag `{key}` (its flags: {})",
            keys.join(", ")
        )));
    };
    let before = flag.setting();
    let after = takt_flags::apply(flag, ask, replace_targeting).map_err(|r| FlagError::BadRequest(r.0))?;
    if after == before {
        return Ok(Changed {
            seq: None,
            before,
            after,
        });
    }
    let doc = flags.config.environments.get(env).unwrap_or(&flags.config.document);
    if let Err(problems) = takt_flags::parse(&takt_flags::patch(doc, [(key, &after)])) {
        let p: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(FlagError::BadRequest(format!(
            "that change makes flag `{key}` invalid: {}",
            p.join("; ")
        )));
    }
    let change = |source, by: Option<&str>, commit, before, after| {
        Event::now(
            project,
            None,
            EventKind::FlagChanged {
                environment: env.to_string(),
                flag: key.to_string(),
                source,
                by: by.map(str::to_string),
                commit,
                before,
                after,
            },
        )
    };
    // The view's lock is held from here to the new flags' compile: a refresh of the default
    // branch waits for it (and recompiles with this change).
    if view.get(project, env, key).and_then(|v| v.file.as_ref()).is_none() {
        // An environment the file's changes were not kept for (one the project does not
        // declare): what the file defines there is recorded first, so that only a later change
        // of the file ends this run-time change.
        let e = change(FlagSource::File, None, Some(commit), None, Some(before.clone()));
        ci.queue.engine.store.append(&e).await?;
        view.apply(&e);
    }
    let e = change(
        FlagSource::Api,
        Some(by),
        None,
        Some(before.clone()),
        Some(after.clone()),
    );
    let seq = ci.queue.engine.store.append(&e).await?;
    view.apply(&e);
    // Compiled outside the configs' lock (OFREP reads them on every evaluation); the view's
    // lock keeps a refresh from putting other flags in place meanwhile.
    if let Some(file) = ProjectFlags::file_documents(&flags.config) {
        let compiled = Arc::new(compile(project, &flags.config, file, &view));
        if let Some(cfg) = ci.branch_configs.write().get_mut(project) {
            cfg.flags = Some(compiled);
        }
    }
    let _ = ci.flags_live.moved.send(project.to_string());
    Ok(Changed {
        seq: Some(seq),
        before,
        after,
    })
}

/// `project`'s flag views (for `takt flag ls|show`).
pub async fn views(ci: &Ci, project: &str) -> Result<Vec<((String, String), takt_views::FlagView)>, FlagError> {
    let view = view(ci).await?;
    Ok(view
        .of(project)
        .map(|((e, k), v)| ((e.to_string(), k.to_string()), v.clone()))
        .collect())
}
