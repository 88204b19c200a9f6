//! `takt import`'s CSV files: a table per kind, told apart by their header (docs/metrics.md,
//! "Importing history"), read into the JSON import's body so that both travel the same way.

use crate::client::BadInput;
use serde::Deserialize;
use takt_model::{DeployOutcome, ImportedCommit, ImportedDeployment, ImportedIncident, OffsetDateTime};

/// Which table a CSV file is, by the columns its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Deployments,
    Incidents,
    Commits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentRow {
    id: String,
    environment: String,
    started_at: String,
    finished_at: String,
    outcome: DeployOutcome,
    artifact: Option<String>,
    rollback: Option<bool>,
    fixes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentRow {
    id: String,
    environment: String,
    opened_at: String,
    impact_started_at: Option<String>,
    resolved_at: Option<String>,
    cause: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRow {
    deployment: String,
    sha: String,
    committed_at: String,
}

/// What the CSV files add up to, with where each commit row came from (to name it when its
/// deployment is not there).
#[derive(Default)]
pub struct Tables {
    pub deployments: Vec<ImportedDeployment>,
    pub incidents: Vec<ImportedIncident>,
    commits: Vec<(String, u64, String, ImportedCommit)>,
}

impl Tables {
    /// Reads one CSV file's `text` (named `name` in errors) into the tables.
    pub fn read(&mut self, name: &str, text: &str) -> Result<(), BadInput> {
        let mut r = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = r.headers().map_err(|e| BadInput(format!("{name}:1: {e}")))?.clone();
        let has = |c: &str| headers.iter().any(|h| h == c);
        let table = if has("opened_at") {
            Table::Incidents
        } else if has("sha") {
            Table::Commits
        } else if has("started_at") {
            Table::Deployments
        } else {
            return Err(BadInput(format!(
                "{name}:1: the header names neither a deployments table (id, environment, started_at, \
                 finished_at, outcome, ...), an incidents table (id, environment, opened_at, ...) nor a \
                 commits table (deployment, sha, committed_at); docs/metrics.md has the columns"
            )));
        };
        let at = |line: u64, e: &csv::Error| {
            let what = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => match err.field() {
                    Some(i) => format!("column `{}`: {}", headers.get(i as usize).unwrap_or("?"), err.kind()),
                    None => err.kind().to_string(),
                },
                _ => e.to_string(),
            };
            BadInput(format!(
                "{name}:{line}: {what} (the columns are in docs/metrics.md, `takt import`)"
            ))
        };
        for record in r.records() {
            let record = record.map_err(|e| at(e.position().map_or(0, |p| p.line()), &e))?;
            let line = record.position().map_or(0, |p| p.line());
            let time_at = |t: &str, column: &str| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|_| {
                    BadInput(format!(
                        "{name}:{line}: column `{column}`: `{t}` is not an RFC 3339 time such as 2026-10-02T09:00:00Z"
                    ))
                })
            };
            match table {
                Table::Deployments => {
                    let d: DeploymentRow = record.deserialize(Some(&headers)).map_err(|e| at(line, &e))?;
                    self.deployments.push(ImportedDeployment {
                        id: d.id,
                        environment: d.environment,
                        started_at: time_at(&d.started_at, "started_at")?,
                        finished_at: time_at(&d.finished_at, "finished_at")?,
                        outcome: d.outcome,
                        artifact: d.artifact,
                        rollback: d.rollback.unwrap_or(false),
                        fixes: d.fixes,
                        commits: Vec::new(),
                    });
                }
                Table::Incidents => {
                    let i: IncidentRow = record.deserialize(Some(&headers)).map_err(|e| at(line, &e))?;
                    self.incidents.push(ImportedIncident {
                        id: i.id,
                        environment: i.environment,
                        opened_at: time_at(&i.opened_at, "opened_at")?,
                        impact_started_at: i
                            .impact_started_at
                            .map(|t| time_at(&t, "impact_started_at"))
                            .transpose()?,
                        resolved_at: i.resolved_at.map(|t| time_at(&t, "resolved_at")).transpose()?,
                        cause: i.cause,
                    });
                }
                Table::Commits => {
                    let c: CommitRow = record.deserialize(Some(&headers)).map_err(|e| at(line, &e))?;
                    let commit = ImportedCommit {
                        sha: c.sha,
                        committed_at: time_at(&c.committed_at, "committed_at")?,
                    };
                    self.commits.push((name.to_string(), line, c.deployment, commit));
                }
            }
        }
        Ok(())
    }

    /// Each commit row joined to its deployment (of any of the files).
    pub fn finish(mut self) -> Result<takt_api::ImportBody, BadInput> {
        for (file, line, deployment, commit) in std::mem::take(&mut self.commits) {
            let Some(d) = self.deployments.iter_mut().find(|d| d.id == deployment) else {
                return Err(BadInput(format!(
                    "{file}:{line}: commit `{}` names deployment `{deployment}`, which no deployments table of this import has",
                    commit.sha
                )));
            };
            d.commits.push(commit);
        }
        Ok(takt_api::ImportBody {
            deployments: self.deployments,
            incidents: self.incidents,
        })
    }
}
