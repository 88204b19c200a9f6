//! Scopes and permissions. A scope is a set of permissions, not a level (docs/server.md):
//! `read`; `ci` = read + run pipelines and push artifacts; `deploy` = read + deploy;
//! `flags` = evaluate flags only; `admin` = everything.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Permission {
    /// List, show, logs, download.
    Read,
    /// Push artifacts, trigger and cancel runs.
    Ci,
    /// Deploy, promote, rollback, halt, resume, approve.
    Deploy,
    /// Play a manual job: a ci token, or a deploy token (the route asks for `deploy` itself
    /// when the job names a protected environment).
    Play,
    /// Evaluate feature flags.
    Flags,
    /// Projects, tokens, secrets.
    Admin,
}

impl Permission {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A token's scope. Parsed from its name; an unknown one is an error that lists the known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase", try_from = "String")]
#[strum(serialize_all = "lowercase")]
pub enum Scope {
    Read,
    Ci,
    Deploy,
    Flags,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Ci, Scope::Deploy, Scope::Flags, Scope::Admin];

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Scope::Admin => true,
            Scope::Read => p == P::Read,
            Scope::Ci => matches!(p, P::Read | P::Ci | P::Play),
            Scope::Deploy => matches!(p, P::Read | P::Deploy | P::Play),
            Scope::Flags => p == P::Flags,
        }
    }
}

/// The error for a scope nobody knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScope(pub String);

impl fmt::Display for UnknownScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scope `{}`; use read, ci, deploy, flags or admin", self.0)
    }
}

impl std::error::Error for UnknownScope {}

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Scope, UnknownScope> {
        Scope::parse(s).ok_or_else(|| UnknownScope(s.to_string()))
    }
}

impl TryFrom<String> for Scope {
    type Error = UnknownScope;
    fn try_from(s: String) -> Result<Scope, UnknownScope> {
        s.parse()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_permission_sets() {
        use Permission as P;
        assert!(Scope::Ci.allows(P::Read) && Scope::Ci.allows(P::Ci) && !Scope::Ci.allows(P::Deploy));
        assert!(Scope::Deploy.allows(P::Deploy) && !Scope::Deploy.allows(P::Ci));
        assert!(!Scope::Flags.allows(P::Read) && Scope::Flags.allows(P::Flags));
        assert!(!Scope::Read.allows(P::Admin));
        assert!(
            Scope::ALL
                .iter()
                .all(|s| Scope::Admin.allows(P::Admin) && Scope::parse(&s.to_string()) == Some(*s))
        );
    }

    #[test]
    fn a_scope_reads_from_its_name_and_an_unknown_one_says_which() {
        let s: Scope = serde_json::from_str("\"deploy\"").unwrap();
        assert_eq!(s, Scope::Deploy);
        assert_eq!(serde_json::to_string(&Scope::Ci).unwrap(), "\"ci\"");
        let e = serde_json::from_str::<Scope>("\"root\"").unwrap_err().to_string();
        assert!(e.contains("unknown scope `root`; use read"), "{e}");
    }
}

/// What a token may reach beyond its scope: the projects and the environments it is limited
/// to (`takt token create --project P --env E`); an empty list limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

/// Why a request is outside a token's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// The route names no project, and the token is limited to some.
    NoProject,
    /// The route names this project, not one of the token's.
    Project(String),
    /// The route names this environment, not one of the token's.
    Environment(String),
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty() && self.environments.is_empty()
    }

    /// Whether a request naming `project` and `environment` (when its route names them) is
    /// within the limits. A route that names no environment is not limited by environments.
    pub fn admits(&self, project: Option<&str>, environment: Option<&str>) -> Result<(), Outside> {
        if !self.projects.is_empty() {
            match project {
                None => return Err(Outside::NoProject),
                Some(p) if !self.projects.iter().any(|x| x == p) => return Err(Outside::Project(p.to_string())),
                Some(_) => {}
            }
        }
        match environment {
            Some(e) if !self.environments.is_empty() && !self.environments.iter().any(|x| x == e) => {
                Err(Outside::Environment(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// `projects web, api; environments staging` (empty when unlimited), for lists and errors.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.projects.is_empty() {
            parts.push(format!("projects {}", self.projects.join(", ")));
        }
        if !self.environments.is_empty() {
            parts.push(format!("environments {}", self.environments.join(", ")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn limits_admit_their_projects_and_environments_only() {
        let none = Limits::default();
        assert_eq!(none.admits(None, None), Ok(()));
        assert_eq!(none.admits(Some("web"), Some("production")), Ok(()));
        let l = Limits {
            projects: vec!["web".into()],
            environments: vec!["staging".into()],
        };
        assert_eq!(l.admits(Some("web"), Some("staging")), Ok(()));
        assert_eq!(l.admits(Some("web"), None), Ok(()));
        assert_eq!(l.admits(None, None), Err(Outside::NoProject));
        assert_eq!(
            l.admits(Some("api"), Some("staging")),
            Err(Outside::Project("api".into()))
        );
        assert_eq!(
            l.admits(Some("web"), Some("production")),
            Err(Outside::Environment("production".into()))
        );
        let envs = Limits {
            projects: vec![],
            environments: vec!["staging".into()],
        };
        assert_eq!(envs.admits(None, None), Ok(()));
        assert_eq!(envs.describe(), "environments staging");
        assert_eq!(l.describe(), "projects web; environments staging");
    }
}
