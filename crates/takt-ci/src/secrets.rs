//! Project secrets at rest: XChaCha20-Poly1305 with a random 24-byte nonce per value and
//! `project/name` as associated data (a ciphertext moved to another secret does not decrypt).
//!
//! The key is `TAKT_SECRET_KEY` (64 hex digits) or `<data-dir>/secret.key` (created on first
//! start, mode 0600). Values are kept only as ciphertext in `secret_set` events and decrypted
//! when a run that may have them starts.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    /// For tags (HMAC-SHA256): a key of its own, derived from the secret key, so that a tag
    /// never reveals anything about the key that seals secrets.
    tags: [u8; 32],
}

/// Shortest value that can be masked in logs without masking ordinary text (GitLab: 8).
pub const MIN_SECRET_LEN: usize = 4;
/// Longest value accepted.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("TAKT_SECRET_KEY must be 64 hex digits (32 bytes)")]
    BadEnvKey,
    #[error("{path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("secret `{0}` cannot be decrypted: the secret key changed or the log was altered")]
    Decrypt(String),
    #[error("no randomness: {0}")]
    Random(String),
}

impl SecretKey {
    pub fn load(data_dir: &Path, from_env: Option<&str>) -> Result<SecretKey, SecretError> {
        let bytes = match from_env {
            Some(hexkey) => hex::decode(hexkey.trim()).map_err(|_| SecretError::BadEnvKey)?,
            None => {
                let path = data_dir.join("secret.key");
                let err = |reason: String| SecretError::KeyFile {
                    path: path.display().to_string(),
                    reason,
                };
                if path.exists() {
                    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
                    hex::decode(text.trim()).map_err(|_| err("not 64 hex digits; restore it from a backup".into()))?
                } else {
                    let mut key = [0u8; 32];
                    getrandom::fill(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
                    crate::write_private(&path, &hex::encode(key)).map_err(|e| err(e.to_string()))?;
                    key.to_vec()
                }
            }
        };
        if bytes.len() != 32 {
            return Err(SecretError::BadEnvKey);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadEnvKey)?;
        let tags = Sha256::new()
            .chain_update(b"takt tag key v1\0")
            .chain_update(&bytes)
            .finalize()
            .into();
        Ok(SecretKey { cipher, tags })
    }

    /// A token that proves knowledge of the secret key for `purpose` and `parts` (e.g. a
    /// heartbeat check's: `heartbeat`, project, check): HMAC-SHA256, hex. Stable while the key
    /// is; it changes when the key does.
    pub fn tag(&self, purpose: &str, parts: &[&str]) -> String {
        hex::encode(self.mac(purpose, parts).finalize().into_bytes())
    }

    /// Whether `token` is the tag of `purpose` and `parts` (compared in constant time).
    pub fn verify_tag(&self, purpose: &str, parts: &[&str], token: &str) -> bool {
        match hex::decode(token.trim()) {
            Ok(bytes) => self.mac(purpose, parts).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.tags).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        for p in parts {
            // Lengths first: ("a", "bc") and ("ab", "c") never share a tag.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p.as_bytes());
        }
        mac
    }

    /// (nonce, ciphertext), both hex.
    pub fn seal(&self, project: &str, name: &str, value: &[u8]) -> Result<(String, String), SecretError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
        let aad = format!("{project}/{name}");
        let ct = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: value,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt(name.to_string()))?;
        Ok((hex::encode(nonce), hex::encode(ct)))
    }

    pub fn open(&self, project: &str, name: &str, nonce: &str, ciphertext: &str) -> Result<Vec<u8>, SecretError> {
        let bad = || SecretError::Decrypt(name.to_string());
        let nonce: [u8; 24] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(bad)?;
        let ct = hex::decode(ciphertext).map_err(|_| bad())?;
        let aad = format!("{project}/{name}");
        self.cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| bad())
    }
}

/// Secret names: like environment variables, `[A-Za-z_][A-Za-z0-9_]*`, at most 100 bytes.
/// Names starting with `TAKT_` are takt's own (e.g. `TAKT_WEBHOOK_SECRET`) and never reach a job.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name `{name}` is not allowed: use letters, digits and _ (not first a digit), like an environment variable"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_project_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::load(dir.path(), None).unwrap();
        let (n, c) = k.seal("p", "TOKEN", b"value-1").unwrap();
        assert!(!c.contains(&hex::encode(b"value-1")));
        assert_eq!(k.open("p", "TOKEN", &n, &c).unwrap(), b"value-1");
        assert!(k.open("p", "OTHER", &n, &c).is_err());
        assert!(k.open("q", "TOKEN", &n, &c).is_err());
        // The key file is reused, and is private.
        let k2 = SecretKey::load(dir.path(), None).unwrap();
        assert_eq!(k2.open("p", "TOKEN", &n, &c).unwrap(), b"value-1");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(SecretKey::load(dir.path(), Some("abc")).is_err());
        assert!(check_name("API_TOKEN").is_ok());
        assert!(check_name("1X").is_err() && check_name("a-b").is_err());
    }

    #[test]
    fn tags_are_stable_per_key_and_bound_to_every_part() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::load(dir.path(), None).unwrap();
        let t = k.tag("heartbeat", &["p", "backup"]);
        assert_eq!(t.len(), 64);
        assert!(k.verify_tag("heartbeat", &["p", "backup"], &t));
        assert_eq!(
            SecretKey::load(dir.path(), None)
                .unwrap()
                .tag("heartbeat", &["p", "backup"]),
            t
        );
        for (purpose, parts) in [
            ("heartbeat", &["p", "backups"][..]),
            ("heartbeat", &["pb", "ackup"]),
            ("other", &["p", "backup"]),
        ] {
            assert!(!k.verify_tag(purpose, parts, &t), "{purpose} {parts:?}");
        }
        assert!(!k.verify_tag("heartbeat", &["p", "backup"], "not hex"));
        assert!(!k.verify_tag("heartbeat", &["p", "backup"], &t[..62]));
        let other = SecretKey::load(tempfile::tempdir().unwrap().path(), None).unwrap();
        assert!(
            !other.verify_tag("heartbeat", &["p", "backup"], &t),
            "another key, another tag"
        );
    }
}
