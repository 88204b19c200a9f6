//! API tokens: the live ones, by the hash of their secret (a token is kept as the SHA-256 of
//! its secret), folded from `token_created`, `token_revoked` and `token_used`.

use crate::Projection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use takt_model::auth::{Limits, Scope};
use takt_model::{Event, EventKind};

/// A live token (never its secret or its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// The projects and environments it is limited to, beyond its scope.
    #[serde(flatten)]
    pub limits: Limits,
    /// RFC 3339.
    pub created_at: String,
    /// When it was last used (to the minute), if ever.
    pub last_used_at: Option<String>,
}

/// The live tokens, by the hash of their secret.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, TokenInfo>,
}

/// How a secret is kept: hex of its SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Projection for Tokens {
    const KINDS: &'static [&'static str] = &["token_created", "token_revoked", "token_used"];
    fn apply(&mut self, e: &Event) {
        Tokens::apply(self, e)
    }
}

impl Tokens {
    /// Applies a token event (others are ignored).
    pub fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::TokenCreated {
                id,
                name,
                scope,
                hash,
                projects,
                environments,
            } => {
                if let Some(scope) = Scope::parse(scope) {
                    let created_at = takt_model::timefmt::rfc3339(e.at);
                    self.by_hash.insert(
                        hash.clone(),
                        TokenInfo {
                            id: id.clone(),
                            name: name.clone(),
                            scope,
                            limits: Limits {
                                projects: projects.clone(),
                                environments: environments.clone(),
                            },
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

    /// The live token with this id.
    pub fn by_id(&self, id: &str) -> Option<&TokenInfo> {
        self.by_hash.values().find(|t| t.id == id)
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.by_hash.values().any(|t| t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_project_from_events() {
        let mut t = Tokens::default();
        let secret = "takt_0123456789abcdef0123456789abcdef01234567";
        t.apply(&Event::now(
            "",
            None,
            EventKind::TokenCreated {
                id: "a1".into(),
                name: "ci".into(),
                scope: "ci".into(),
                hash: hash_secret(secret),
                projects: vec!["web".into()],
                environments: vec![],
            },
        ));
        assert_eq!(t.check(secret).unwrap().scope, Scope::Ci);
        assert_eq!(t.check(secret).unwrap().limits.projects, ["web"]);
        assert!(t.check("takt_wrong").is_none());
        t.apply(&Event::now("", None, EventKind::TokenRevoked { id: "a1".into() }));
        assert!(t.check(secret).is_none());
    }
}
