//! Projects: a repository, its default branch, settings and secrets (sealed), folded from
//! `project_added`, `project_updated`, `secret_set` and `secret_removed`.

use crate::Projection;
use std::collections::BTreeMap;
use takt_model::{Event, EventKind, ProjectOptions, QueueMode};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// The projects, by name.
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
                if o.public_badge.is_some() {
                    mine.public_badge = o.public_badge;
                }
                if let Some(f) = &o.forge {
                    mine.forge = (f.forge != takt_model::ForgeKind::None).then(|| f.clone());
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

impl Projection for Projects {
    const KINDS: &'static [&'static str] = &["project_added", "project_updated", "secret_set", "secret_removed"];
    fn apply(&mut self, e: &Event) {
        Projects::apply(self, e)
    }
}
