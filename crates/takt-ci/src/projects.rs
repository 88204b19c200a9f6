//! Projects: a repository, its default branch, settings and secrets, projected from the event
//! log; each has a bare mirror under `<data-dir>/mirrors/NAME.git`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use takt_model::{Event, EventKind, ProjectOptions, QueueMode};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Project {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub added_at: String,
    /// Settings as `takt project set` left them (unset ones take the server's defaults).
    pub options: ProjectOptions,
    /// Secret names (values never leave the server).
    pub secrets: Vec<String>,
    #[serde(skip)]
    pub sealed: BTreeMap<String, Sealed>,
}

/// A secret as stored: nonce and ciphertext (hex).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
    pub set_at: String,
}

impl Project {
    pub fn queue_mode(&self) -> QueueMode {
        self.options.queue.unwrap_or_default()
    }
    /// Runs of this branch get secrets: the default branch and the protected ones.
    pub fn is_protected(&self, branch: Option<&str>) -> bool {
        branch.is_some_and(|b| {
            b == self.branch
                || self
                    .options
                    .protected
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|x| x == b))
        })
    }
}

/// The projects, projected from `project_added` events.
#[derive(Debug, Default)]
pub struct Projects {
    by_name: BTreeMap<String, Project>,
}

impl Projects {
    pub fn apply(&mut self, e: &Event) {
        if let EventKind::ProjectAdded { name, repo, branch } = &e.kind {
            let p = Project {
                name: name.clone(),
                repo: repo.clone(),
                branch: branch.clone(),
                added_at: takt_model::timefmt::rfc3339(e.at),
                options: ProjectOptions::default(),
                secrets: Vec::new(),
                sealed: BTreeMap::new(),
            };
            self.by_name.insert(name.clone(), p);
            return;
        }
        let Some(p) = self.by_name.get_mut(&e.project) else {
            return;
        };
        match &e.kind {
            EventKind::ProjectUpdated { options: o, .. } => {
                let mine = &mut p.options;
                if o.queue.is_some() {
                    mine.queue = o.queue;
                }
                if o.concurrency.is_some() {
                    mine.concurrency = o.concurrency;
                }
                if o.protected.is_some() {
                    mine.protected = o.protected.clone();
                }
                if o.poll_seconds.is_some() {
                    mine.poll_seconds = o.poll_seconds;
                }
            }
            EventKind::SecretSet {
                name,
                nonce,
                ciphertext,
            } => {
                p.sealed.insert(
                    name.clone(),
                    Sealed {
                        nonce: nonce.clone(),
                        ciphertext: ciphertext.clone(),
                        set_at: takt_model::timefmt::rfc3339(e.at),
                    },
                );
                p.secrets = p.sealed.keys().cloned().collect();
            }
            EventKind::SecretRemoved { name } => {
                p.sealed.remove(name);
                p.secrets = p.sealed.keys().cloned().collect();
            }
            _ => {}
        }
    }
    pub fn get(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name)
    }
    pub fn list(&self) -> Vec<Project> {
        self.by_name.values().cloned().collect()
    }
}

/// Project names: 1–100 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 100
        && !n.starts_with(['.', '-'])
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "project name `{n}` is not allowed: use 1 to 100 of A-Z a-z 0-9 . _ - (not first . or -)"
        ))
    }
}

/// The longest branch or tag name takt accepts (git itself has no limit; file systems stop
/// a path component at 255 bytes).
pub const MAX_REF_NAME: usize = 255;

/// Branch and tag names by git's ref-format rules (`git check-ref-format`), plus a length
/// limit: components not starting with `.` nor ending in `.lock`, no `..`, no control
/// characters, space, `~ ^ : ? * [ \`, no `@{`, not `@`, no empty component, not ending in `.`.
pub fn check_ref_name(what: &str, b: &str) -> Result<(), String> {
    let shown: String = b.chars().take(60).flat_map(char::escape_debug).collect();
    let refuse = |why: &str| Err(format!("`{shown}` is not a valid {what} name: {why}"));
    if b.is_empty() {
        return refuse("it is empty");
    }
    if b.len() > MAX_REF_NAME {
        return refuse(&format!(
            "it is {} bytes long; at most {MAX_REF_NAME} are allowed",
            b.len()
        ));
    }
    if b.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if b == "@" || b.contains("@{") {
        return refuse("`@` alone and `@{` are reserved by git");
    }
    if b.contains("..") {
        return refuse("it contains `..`");
    }
    if b.ends_with('.') {
        return refuse("it ends with `.`");
    }
    if let Some(c) = b.chars().find(|c| c.is_control() || " ~^:?*[\\".contains(*c)) {
        return refuse(&format!("it contains {c:?}"));
    }
    for part in b.split('/') {
        if part.is_empty() {
            return refuse("it has an empty component (`//`, or `/` at either end)");
        }
        if part.starts_with('.') || part.ends_with(".lock") {
            return refuse("a component starts with `.` or ends with `.lock`");
        }
    }
    Ok(())
}

/// Branch names as git allows them.
pub fn check_branch(b: &str) -> Result<(), String> {
    check_ref_name("branch", b)
}

pub fn mirror_path(data: &Path, name: &str) -> PathBuf {
    data.join("mirrors").join(format!("{name}.git"))
}
