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
            Scope::Ci => matches!(p, P::Read | P::Ci),
            Scope::Deploy => matches!(p, P::Read | P::Deploy),
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
