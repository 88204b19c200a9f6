//! API tokens and scopes. A scope is a set of permissions, not a level (docs/server.md):
//! `read`; `ci` = read + run pipelines and push artifacts; `deploy` = read + deploy;
//! `flags` = evaluate flags only; `admin` = everything. Tokens are kept as the SHA-256 of their
//! secret, projected from `token_created` / `token_revoked` events.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use takt_model::{Event, EventKind};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
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
        Scope::ALL.into_iter().find(|x| x.to_string() == s)
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

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Ci => "ci",
            Scope::Deploy => "deploy",
            Scope::Flags => "flags",
            Scope::Admin => "admin",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
    /// When it was last used (to the minute), if ever.
    pub last_used_at: Option<String>,
}

/// The live tokens, by the hash of their secret.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, TokenInfo>,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `takt_` and 40 hex digits.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b)?;
    Ok(format!("takt_{}", hex::encode(b)))
}

pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

impl Tokens {
    /// Applies a token event (others are ignored).
    pub fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::TokenCreated { id, name, scope, hash } => {
                if let Some(scope) = Scope::parse(scope) {
                    let created_at = takt_model::timefmt::rfc3339(e.at);
                    self.by_hash.insert(
                        hash.clone(),
                        TokenInfo {
                            id: id.clone(),
                            name: name.clone(),
                            scope,
                            created_at,
                            last_used_at: None,
                        },
                    );
                }
            }
            EventKind::TokenRevoked { id } => self.by_hash.retain(|_, t| t.id != *id),
            EventKind::TokenUsed { id } => {
                if let Some(t) = self.by_hash.values_mut().find(|t| t.id == *id) {
                    t.last_used_at = Some(takt_model::timefmt::rfc3339(e.at));
                }
            }
            _ => {}
        }
    }

    pub fn check(&self, secret: &str) -> Option<&TokenInfo> {
        self.by_hash.get(&hash_secret(secret))
    }

    pub fn has_hash(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut v: Vec<TokenInfo> = self.by_hash.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.by_hash.values().any(|t| t.id == id)
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
    fn tokens_project_from_events() {
        let mut t = Tokens::default();
        let secret = new_secret().unwrap();
        t.apply(&Event::now(
            "",
            None,
            EventKind::TokenCreated {
                id: "a1".into(),
                name: "ci".into(),
                scope: "ci".into(),
                hash: hash_secret(&secret),
            },
        ));
        assert_eq!(t.check(&secret).unwrap().scope, Scope::Ci);
        assert!(t.check("takt_wrong").is_none());
        t.apply(&Event::now("", None, EventKind::TokenRevoked { id: "a1".into() }));
        assert!(t.check(&secret).is_none());
    }
}
