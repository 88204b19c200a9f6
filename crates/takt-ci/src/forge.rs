//! Forges' push webhooks, without HTTP: which forge, whether a delivery is signed with the
//! project's secret, its event and delivery id, and what its push payload says.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, `X-GitHub-Event`,
//!   `X-GitHub-Delivery`.
//! - Gitea: `X-Gitea-Signature: <hex HMAC>` (or GitHub's header), `X-Gitea-Event`,
//!   `X-Gitea-Delivery`.
//! - GitLab: `X-Gitlab-Token: <secret>` (compared in constant time), `X-Gitlab-Event`,
//!   `X-Gitlab-Event-UUID` (or `Idempotency-Key`).
//!
//! A project's webhook secret is its secret [`WEBHOOK_SECRET`]; names starting with `TAKT_`
//! never reach jobs.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The project secret that signs its webhooks.
pub const WEBHOOK_SECRET: &str = "TAKT_WEBHOOK_SECRET";

/// The longest delivery id taken.
pub const MAX_DELIVERY: usize = 200;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A forge that sends push webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Forge {
    Github,
    Gitea,
    Gitlab,
}

/// Whether a delivery carries a valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    Missing,
    Mismatch,
    Valid,
}

/// What a delivery's headers say is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The forge's test delivery.
    Ping,
    /// A push of a branch or tag.
    Push,
    /// Anything else: no run.
    Other,
}

impl Forge {
    pub const ALL: [Forge; 3] = [Forge::Github, Forge::Gitea, Forge::Gitlab];

    /// The forge a webhook path names (`/api/v1/hooks/{forge}/{project}`).
    pub fn parse(name: &str) -> Option<Forge> {
        Forge::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Checks the delivery's signature against the project's secret; `header` looks a
    /// request header up by its lowercase name.
    pub fn verify<'a>(self, header: impl Fn(&str) -> Option<&'a str>, secret: &[u8], body: &[u8]) -> Signature {
        let ok = match self {
            Forge::Github => header("x-hub-signature-256")
                .and_then(|s| s.strip_prefix("sha256="))
                .map(|s| hmac_ok(secret, body, s)),
            Forge::Gitea => header("x-gitea-signature")
                .or_else(|| header("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")))
                .map(|s| hmac_ok(secret, body, s)),
            Forge::Gitlab => header("x-gitlab-token").map(|t| same_secret(t.as_bytes(), secret)),
        };
        match ok {
            None => Signature::Missing,
            Some(false) => Signature::Mismatch,
            Some(true) => Signature::Valid,
        }
    }

    /// The event name the forge sent (`push`, `Push Hook`, `ping`, ...), or "".
    pub fn event<'a>(self, header: impl Fn(&str) -> Option<&'a str>) -> &'a str {
        match self {
            Forge::Github => header("x-github-event"),
            Forge::Gitea => header("x-gitea-event"),
            Forge::Gitlab => header("x-gitlab-event"),
        }
        .unwrap_or("")
    }

    /// What an event name means.
    pub fn kind(self, event: &str) -> Kind {
        match event {
            "ping" => Kind::Ping,
            "push" | "Push Hook" | "Tag Push Hook" => Kind::Push,
            _ => Kind::Other,
        }
    }

    /// The delivery's id; without one, identical bodies are the same delivery (their hash).
    pub fn delivery<'a>(self, header: impl Fn(&str) -> Option<&'a str>, body: &[u8]) -> String {
        match self {
            Forge::Github => header("x-github-delivery"),
            Forge::Gitea => header("x-gitea-delivery"),
            Forge::Gitlab => header("x-gitlab-event-uuid").or_else(|| header("idempotency-key")),
        }
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(Sha256::digest(body)))
    }
}

fn hmac_ok(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time equality (GitLab sends the secret itself), hashed first so that the length
/// does not show either.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// What a push payload (GitHub, Gitea and GitLab share these fields) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `refs/heads/…` or `refs/tags/…`, valid by git's rules.
    pub git_ref: String,
    /// The pushed commit: 40 or 64 hex digits.
    pub after: String,
    /// The ref was deleted (nothing to build).
    pub deleted: bool,
}

/// Reads a push payload: its `ref` (a branch or tag, by git's ref rules) and `after` (an object
/// id). Anything else is an error that says what is wrong, never a panic.
pub fn parse_push(body: &[u8]) -> Result<Push, String> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| format!("the push payload is not JSON: {e}"))?;
    let (Some(git_ref), Some(after)) = (payload["ref"].as_str(), payload["after"].as_str()) else {
        return Err("the push payload has no `ref` and `after` strings".into());
    };
    crate::trigger::parse_ref(git_ref).map_err(|e| format!("the push payload's `ref`: {e}"))?;
    if !takt_engine::git::is_object_id(after) {
        return Err("the push payload's `after` is not a commit id (40 or 64 hex digits)".into());
    }
    let deleted = payload["deleted"].as_bool() == Some(true) || after.bytes().all(|b| b == b'0');
    Ok(Push {
        git_ref: git_ref.to_string(),
        after: after.to_string(),
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_per_forge() {
        let secret = b"s3cret-value";
        let body = b"{\"ref\": \"refs/heads/main\"}";
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let github = format!("sha256={sig}");
        let headers = |name: &str| match name {
            "x-hub-signature-256" => Some(github.as_str()),
            "x-gitea-signature" => Some(sig.as_str()),
            "x-gitlab-token" => Some("s3cret-value"),
            _ => None,
        };
        for f in Forge::ALL {
            assert_eq!(f.verify(headers, secret, body), Signature::Valid, "{f:?}");
            assert_eq!(f.verify(headers, b"other", body), Signature::Mismatch, "{f:?}");
            assert_eq!(f.verify(|_| None, secret, body), Signature::Missing, "{f:?}");
            assert_eq!(Forge::parse(f.name()), Some(f));
        }
        assert_eq!(Forge::parse("bitbucket"), None);
        assert_eq!(Forge::Gitlab.kind("Tag Push Hook"), Kind::Push);
        assert_eq!(Forge::Github.kind("ping"), Kind::Ping);
        assert_eq!(Forge::Github.kind("issues"), Kind::Other);
        // Without a delivery id, the body's hash stands in.
        assert_eq!(
            Forge::Github.delivery(|_| None, b"x"),
            hex::encode(Sha256::digest(b"x"))
        );
    }
}
