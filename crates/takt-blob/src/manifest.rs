//! Artifact manifests: what an artifact is, where it came from, signed with the data
//! directory's ed25519 key. [`Manifest::in_toto`] gives the provenance as a strict in-toto
//! Statement v1 with a SLSA Provenance v1 predicate (URIs where the spec asks for URIs);
//! `tests/provenance.rs` checks it against the JSON schema in `tests/fixtures/`.

use crate::{BlobError, io_err};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where an artifact came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// SLSA `buildType`.
    pub build_type: String,
    /// `builder.id`: takt and its version.
    pub builder: String,
    pub project: String,
    pub repository: String,
    pub commit: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    pub run: u64,
    pub job: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Digests of artifacts this one was built from (SLSA `materials`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The working tree's uncommitted changes were built in (`takt run --dirty`).
    #[serde(default)]
    pub dirty: bool,
    /// Not built by takt: uploaded with `takt artifact push` by this token (its name). Absent
    /// from manifests signed before it existed, which therefore still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_by: Option<String>,
}

/// SLSA `runDetails.builder.id`: the build platform, takt (its version is `builder.version`).
pub const BUILDER_ID: &str = "https://takt.dev/builder/v1";

/// A repository location as a SLSA resource URI: `git+file:///abs/path`, `git+https://…`,
/// `git+ssh://…` (`user@host:path` becomes `git+ssh://user@host/path`); `None` if unknown.
pub fn git_uri(repository: &str) -> Option<String> {
    let r = repository.trim();
    if r.is_empty() {
        return None;
    }
    if r.starts_with("git+") {
        return Some(r.to_string());
    }
    if let Some(path) = r.strip_prefix("file://") {
        return Some(format!("git+file://{path}"));
    }
    if r.starts_with('/') {
        return Some(format!("git+file://{r}"));
    }
    if ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|s| r.starts_with(s))
    {
        return Some(format!("git+{r}"));
    }
    // scp-like `git@host:owner/name.git`
    if let Some((host, path)) = r.split_once(':')
        && !host.contains('/')
        && !path.starts_with("//")
    {
        return Some(format!("git+ssh://{host}/{}", path.trim_start_matches('/')));
    }
    None
}

/// An artifact: a named, versioned, immutable blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// For a single-file artifact, its path in the job's project directory.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// GitLab's `artifacts: public: false`: only tokens that may do more than read (ci,
    /// deploy, admin) download it. Left out of the JSON when false, so that manifests signed
    /// before it existed keep their canonical form.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted: bool,
    pub provenance: Provenance,
}

/// A manifest and its signature over the manifest's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// Hex of the ed25519 public key.
    pub key: String,
    /// Hex of the ed25519 signature.
    pub signature: String,
}

impl Manifest {
    /// The provenance as an in-toto Statement v1 with a SLSA Provenance v1 predicate, derived
    /// from the signed manifest (what SLSA tooling expects to read).
    pub fn in_toto(&self) -> serde_json::Value {
        let p = &self.provenance;
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        let mut deps = Vec::new();
        if !p.commit.is_empty() {
            let mut source = serde_json::json!({"digest": {"gitCommit": p.commit}});
            if let Some(uri) = git_uri(&p.repository) {
                source["uri"] = uri.into();
            }
            deps.push(source);
        }
        for i in &p.inputs {
            deps.push(serde_json::json!({"digest": {"sha256": i.strip_prefix("sha256:").unwrap_or(i)}}));
        }
        // `takt 0.1.0` as stored (older pushes add a note in parentheses).
        let version = p
            .builder
            .strip_prefix("takt ")
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or(&p.builder);
        let git_ref = match (&p.tag, &p.branch) {
            (Some(t), _) => Some(format!("refs/tags/{t}")),
            (None, Some(b)) => Some(format!("refs/heads/{b}")),
            _ => None,
        };
        let builder = serde_json::json!({"id": BUILDER_ID, "version": {"takt": version}});
        let (definition, metadata) = match &p.pushed_by {
            // Uploaded, not built: who pushed it, and what the pusher declared; no run.
            Some(token) => {
                let mut external = serde_json::json!({"pushedBy": token, "project": p.project});
                if !p.commit.is_empty() {
                    external["commit"] = p.commit.clone().into();
                }
                if let Some(r) = &git_ref {
                    external["ref"] = r.clone().into();
                }
                (
                    serde_json::json!({"buildType": p.build_type, "externalParameters": external, "resolvedDependencies": deps}),
                    serde_json::json!({"startedOn": p.started_at, "finishedOn": p.finished_at}),
                )
            }
            None => {
                let mut external = serde_json::json!({"project": p.project, "job": p.job, "dirty": p.dirty});
                if let Some(uri) = git_uri(&p.repository) {
                    external["repository"] = uri.into();
                }
                if let Some(r) = &git_ref {
                    external["ref"] = r.clone().into();
                }
                (
                    serde_json::json!({
                        "buildType": p.build_type,
                        "externalParameters": external,
                        "internalParameters": {"run": p.run},
                        "resolvedDependencies": deps,
                    }),
                    serde_json::json!({
                        "invocationId": format!("{}/{}/{}", p.project, p.run, p.job),
                        "startedOn": p.started_at,
                        "finishedOn": p.finished_at,
                    }),
                )
            }
        };
        serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": format!("{}@{}", self.name, self.version), "digest": {"sha256": hex}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": definition,
                "runDetails": {"builder": builder, "metadata": metadata},
            },
        })
    }
}

impl SignedManifest {
    /// Checks the signature against `public_key` (hex) — or the embedded key when `None`.
    pub fn verify(&self, public_key: Option<&str>) -> Result<(), BlobError> {
        let what = format!("{}@{}", self.manifest.name, self.manifest.version);
        let bad = |reason: String| BlobError::BadSignature {
            what: what.clone(),
            reason,
        };
        let key_hex = public_key.unwrap_or(&self.key);
        if public_key.is_some_and(|k| k != self.key) {
            return Err(bad("it was signed by a different key".into()));
        }
        let kb: [u8; 32] = hex::decode(key_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the public key is not 32 hex bytes".into()))?;
        let vk = VerifyingKey::from_bytes(&kb).map_err(|e| bad(e.to_string()))?;
        let sb: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the signature is not 64 hex bytes".into()))?;
        let sig = Signature::from_bytes(&sb);
        let msg = serde_json::to_vec(&self.manifest).map_err(|e| bad(e.to_string()))?;
        vk.verify_strict(&msg, &sig)
            .map_err(|_| bad("the manifest does not match its signature (was it edited?)".into()))
    }
}

/// The data directory's signing key.
pub struct Keyring {
    key: SigningKey,
}

impl Keyring {
    /// Loads `keys/signing.key` under `root`, creating it (mode 0600) on first use.
    pub fn load_or_create(root: &Path) -> Result<Keyring, BlobError> {
        let dir = root.join("keys");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let path = dir.join("signing.key");
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let raw: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| BlobError::BadManifest {
                    path: path.clone(),
                    reason: "the signing key is not 32 hex bytes; restore it from a backup or move it away to make a new one".into(),
                })?;
                Ok(Keyring {
                    key: SigningKey::from_bytes(&raw),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).map_err(|e| BlobError::Io {
                    doing: "getting randomness for",
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let key = SigningKey::from_bytes(&raw);
                let tmp = dir.join(format!("signing.key.{}", std::process::id()));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io_err("creating", &tmp))?;
                f.write_all(hex::encode(raw).as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(io_err("writing", &tmp))?;
                // If another process created the key meanwhile, keep theirs.
                if fs::hard_link(&tmp, &path).is_err() {
                    let _ = fs::remove_file(&tmp);
                    return Keyring::load_or_create(root);
                }
                let _ = fs::remove_file(&tmp);
                let pubp = dir.join("signing.pub");
                fs::write(&pubp, hex::encode(key.verifying_key().to_bytes())).map_err(io_err("writing", &pubp))?;
                Ok(Keyring { key })
            }
            Err(e) => Err(BlobError::Io {
                doing: "reading",
                path,
                source: e,
            }),
        }
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn sign(&self, manifest: Manifest) -> Result<SignedManifest, BlobError> {
        let msg = serde_json::to_vec(&manifest).map_err(|e| BlobError::BadSignature {
            what: manifest.name.clone(),
            reason: e.to_string(),
        })?;
        let sig = self.key.sign(&msg);
        Ok(SignedManifest {
            manifest,
            key: self.public_key_hex(),
            signature: hex::encode(sig.to_bytes()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// The same name, version and digest were already stored.
    Unchanged,
}

/// Manifests by name and version, immutable once written.
#[derive(Debug, Clone)]
pub struct ManifestStore {
    root: PathBuf,
}

impl ManifestStore {
    pub fn new(root: &Path) -> ManifestStore {
        ManifestStore {
            root: root.join("manifests"),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(format!("{version}.json"))
    }

    pub fn put(&self, m: &SignedManifest) -> Result<PutOutcome, BlobError> {
        let (name, version) = (&m.manifest.name, &m.manifest.version);
        for (what, v) in [("name", name), ("version", version)] {
            if v.is_empty() || v.len() > 200 || v.contains('/') || v.contains("..") || v.chars().any(char::is_control) {
                return Err(BlobError::BadManifest {
                    path: self.root.clone(),
                    reason: format!("artifact {what} `{v}` is not allowed"),
                });
            }
        }
        if let Some(existing) = self.get(name, version)? {
            if existing.manifest.digest == m.manifest.digest {
                return Ok(PutOutcome::Unchanged);
            }
            return Err(BlobError::Conflict {
                name: name.clone(),
                version: version.clone(),
                existing: existing.manifest.digest,
                new: m.manifest.digest.clone(),
            });
        }
        let path = self.path(name, version);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let tmp = dir.join(format!(".{version}.json.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(m).map_err(|e| BlobError::BadManifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(io_err("writing", &tmp))?;
        // hard_link fails if the target exists: a concurrent writer cannot be overwritten.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(_) => self.put(m),
        }
    }

    pub fn get(&self, name: &str, version: &str) -> Result<Option<SignedManifest>, BlobError> {
        let path = self.path(name, version);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| BlobError::BadManifest {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::Io {
                doing: "reading",
                path,
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(digest: &str) -> Manifest {
        Manifest {
            name: "app".into(),
            version: "1-abc1234".into(),
            digest: digest.into(),
            size: 3,
            media_type: "application/octet-stream".into(),
            path: None,
            expires_at: None,
            restricted: false,
            provenance: Provenance {
                build_type: "https://takt.dev/run/v1".into(),
                builder: "takt 0.1.0".into(),
                project: "p".into(),
                repository: "/r".into(),
                commit: "abc".into(),
                branch: Some("main".into()),
                tag: None,
                run: 1,
                job: "build".into(),
                started_at: "2026-11-23T00:00:00Z".into(),
                finished_at: "2026-11-23T00:00:01Z".into(),
                inputs: vec![],
                dirty: false,
                pushed_by: None,
            },
        }
    }

    #[test]
    fn signed_manifests_are_immutable_and_tamper_evident() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keyring::load_or_create(dir.path()).unwrap();
        let again = Keyring::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.public_key_hex(), again.public_key_hex(), "the key is created once");
        let store = ManifestStore::new(dir.path());
        let d1 = format!("sha256:{}", "a".repeat(64));
        let s = keys.sign(manifest(&d1)).unwrap();
        s.verify(Some(&keys.public_key_hex())).unwrap();
        assert_eq!(store.put(&s).unwrap(), PutOutcome::Stored);
        assert_eq!(store.put(&s).unwrap(), PutOutcome::Unchanged);
        let other = keys.sign(manifest(&format!("sha256:{}", "b".repeat(64)))).unwrap();
        assert!(matches!(store.put(&other), Err(BlobError::Conflict { .. })));
        let mut tampered = s.clone();
        tampered.manifest.provenance.commit = "evil".into();
        let e = tampered.verify(None).unwrap_err().to_string();
        assert!(e.contains("does not match its signature"), "{e}");
    }
}
