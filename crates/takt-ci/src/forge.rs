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
    /// A pull request (GitHub, Gitea) or merge request (GitLab) changed.
    MergeRequest,
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
            "pull_request" | "Merge Request Hook" => Kind::MergeRequest,
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

/// What a merge request's change asks of CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrAction {
    /// Opened, reopened, or new commits: run its head.
    Run,
    /// Closed or merged: its waiting runs are cancelled.
    Close,
    /// Anything else (labels, reviews, a new title): nothing.
    Ignore,
}

/// What a pull request (GitHub, Gitea) or merge request (GitLab) payload says: GitLab's
/// `CI_MERGE_REQUEST_*` facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    pub action: MrAction,
    /// The request's number in its repository (`CI_MERGE_REQUEST_IID`).
    pub iid: u64,
    pub title: String,
    pub source_branch: String,
    pub target_branch: String,
    /// The request's head commit: 40 or 64 hex digits.
    pub head: String,
    /// From another repository (a fork): no secrets.
    pub fork: bool,
}

/// Reads a pull request or merge request payload; anything missing or malformed is an error
/// that names the field, never a panic.
pub fn parse_merge_request(forge: Forge, body: &[u8]) -> Result<MergeRequest, String> {
    let p: Value = serde_json::from_slice(body).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let text = |v: &Value, field: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the payload has no `{field}` string"))
    };
    let (action, iid, title, source, target, head, fork) = match forge {
        Forge::Github | Forge::Gitea => {
            let pr = &p["pull_request"];
            let action = match p["action"].as_str() {
                Some("opened" | "reopened" | "synchronize" | "synchronized") => MrAction::Run,
                Some("closed") => MrAction::Close,
                Some(_) => MrAction::Ignore,
                None => return Err("the payload has no `action` string".into()),
            };
            let iid = p["number"].as_u64().or_else(|| pr["number"].as_u64());
            let fork = pr["head"]["repo"]["full_name"].is_null()
                || pr["head"]["repo"]["full_name"] != pr["base"]["repo"]["full_name"];
            (
                action,
                iid.ok_or("the payload has no `number`")?,
                text(&pr["title"], "pull_request.title")?,
                text(&pr["head"]["ref"], "pull_request.head.ref")?,
                text(&pr["base"]["ref"], "pull_request.base.ref")?,
                text(&pr["head"]["sha"], "pull_request.head.sha")?,
                fork,
            )
        }
        Forge::Gitlab => {
            let mr = &p["object_attributes"];
            let action = match mr["action"].as_str() {
                Some("open" | "reopen") => MrAction::Run,
                // An update with `oldrev` brought new commits; others changed the description.
                Some("update") if mr["oldrev"].is_string() => MrAction::Run,
                Some("close" | "merge") => MrAction::Close,
                _ => MrAction::Ignore,
            };
            let fork = mr["source_project_id"] != mr["target_project_id"];
            (
                action,
                mr["iid"].as_u64().ok_or("the payload has no `object_attributes.iid`")?,
                text(&mr["title"], "object_attributes.title")?,
                text(&mr["source_branch"], "object_attributes.source_branch")?,
                text(&mr["target_branch"], "object_attributes.target_branch")?,
                text(&mr["last_commit"]["id"], "object_attributes.last_commit.id")?,
                fork,
            )
        }
    };
    for (what, b) in [("source", &source), ("target", &target)] {
        crate::projects::check_ref_name("branch", b).map_err(|e| format!("the {what} branch: {e}"))?;
    }
    if !takt_engine::git::is_object_id(&head) {
        return Err("the request's head is not a commit id (40 or 64 hex digits)".into());
    }
    Ok(MergeRequest {
        action,
        iid,
        title: title.chars().take(255).collect(),
        source_branch: source,
        target_branch: target,
        head,
        fork,
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

    /// GitHub's own examples (`@octokit/webhooks-examples`, installed by test.sh).
    fn github_examples() -> Vec<Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../takt/tests/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
        let all: Vec<Value> = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run ./test.sh", path.display())),
        )
        .unwrap();
        all.into_iter().find(|x| x["name"] == "pull_request").unwrap()["examples"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn github_pull_requests_are_read_from_its_own_examples() {
        let examples = github_examples();
        assert!(examples.len() > 20);
        let mut seen = std::collections::HashMap::new();
        for ex in &examples {
            let body = serde_json::to_vec(ex).unwrap();
            let mr = parse_merge_request(Forge::Github, &body).unwrap();
            assert_eq!(mr.iid, ex["number"].as_u64().unwrap());
            assert_eq!(mr.head, ex["pull_request"]["head"]["sha"].as_str().unwrap());
            assert_eq!(mr.source_branch, "changes");
            assert_eq!(mr.target_branch, "master");
            assert!(!mr.fork);
            seen.insert(ex["action"].as_str().unwrap().to_string(), mr.action);
        }
        assert_eq!(seen["opened"], MrAction::Run);
        assert_eq!(seen["synchronize"], MrAction::Run);
        assert_eq!(seen["reopened"], MrAction::Run);
        assert_eq!(seen["closed"], MrAction::Close);
        assert_eq!(seen["labeled"], MrAction::Ignore);
        // From a fork: the head's repository is another one.
        let mut fork = examples[0].clone();
        fork["pull_request"]["head"]["repo"]["full_name"] = "someone/Hello-World".into();
        let mr = parse_merge_request(Forge::Github, &serde_json::to_vec(&fork).unwrap()).unwrap();
        assert!(mr.fork);
        // Broken payloads name what is wrong.
        let mut bad = examples[0].clone();
        bad["pull_request"]["head"]["sha"] = "nope".into();
        let e = parse_merge_request(Forge::Github, &serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.contains("head is not a commit id"), "{e}");
        bad["pull_request"]["head"]["ref"] = "a..b".into();
        let e = parse_merge_request(Forge::Github, &serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.contains("source branch"), "{e}");
        assert!(parse_merge_request(Forge::Github, b"[1]").is_err());
    }

    #[test]
    fn gitlab_merge_request_hooks_are_read() {
        // GitLab's documented example, shortened to the fields takt reads.
        let body = serde_json::json!({
            "object_kind": "merge_request", "event_type": "merge_request",
            "object_attributes": {
                "iid": 1, "title": "MS-Viewport", "source_branch": "ms-viewport",
                "target_branch": "master", "source_project_id": 14, "target_project_id": 14,
                "action": "open",
                "last_commit": {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}
            }
        });
        let mr = parse_merge_request(Forge::Gitlab, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!((mr.iid, mr.action, mr.fork), (1, MrAction::Run, false));
        assert_eq!(
            (mr.source_branch.as_str(), mr.target_branch.as_str()),
            ("ms-viewport", "master")
        );
        let mut update = body.clone();
        update["object_attributes"]["action"] = "update".into();
        let b = serde_json::to_vec(&update).unwrap();
        assert_eq!(parse_merge_request(Forge::Gitlab, &b).unwrap().action, MrAction::Ignore);
        update["object_attributes"]["oldrev"] = "0123".into();
        update["object_attributes"]["source_project_id"] = 15.into();
        let mr = parse_merge_request(Forge::Gitlab, &serde_json::to_vec(&update).unwrap()).unwrap();
        assert_eq!((mr.action, mr.fork), (MrAction::Run, true));
        assert_eq!(Forge::Gitlab.kind("Merge Request Hook"), Kind::MergeRequest);
        assert_eq!(Forge::Github.kind("pull_request"), Kind::MergeRequest);
    }
}
