//! Whole-store checks and clean-up: `fsck` re-hashes every blob and finds manifests whose blob
//! is gone; `sweep` lists or removes blobs that nothing names any more.

use crate::{BlobError, LocalBlobs, ManifestStore, SignedManifest, digest_hex, hash_reader, io_err};
use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// What `fsck` found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub checked: u64,
    pub bytes: u64,
    /// (digest, what its bytes hash to): moved to quarantine.
    pub corrupt: Vec<(String, String)>,
    /// (name@version, digest): the manifest's blob is in quarantine (corrupt, found by this
    /// check or an earlier one, or by a download): the version cannot be served until it is
    /// pushed again.
    pub quarantined: Vec<(String, String)>,
    /// (name@version, digest): the manifest's blob is nowhere, not even in quarantine.
    pub missing: Vec<(String, String)>,
}

impl ManifestStore {
    /// Every manifest in the store (unreadable ones are reported as errors).
    pub fn all(&self) -> Result<Vec<SignedManifest>, BlobError> {
        let mut out = Vec::new();
        let Ok(names) = fs::read_dir(self.root()) else {
            return Ok(out);
        };
        for n in names.flatten() {
            let Ok(versions) = fs::read_dir(n.path()) else { continue };
            for v in versions.flatten() {
                let p = v.path();
                let file = p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if file.starts_with('.') || !file.ends_with(".json") {
                    continue; // a write in progress
                }
                let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
                let m: SignedManifest = serde_json::from_slice(&bytes).map_err(|e| BlobError::BadManifest {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Removes a manifest (retention); its blob stays until nothing names it.
    pub fn remove(&self, name: &str, version: &str) -> Result<(), BlobError> {
        let p = self.path(name, version);
        fs::remove_file(&p).map_err(io_err("removing", &p))?;
        if let Some(dir) = p.parent() {
            let _ = fs::remove_dir(dir); // only when empty
        }
        Ok(())
    }
}

impl LocalBlobs {
    /// The digests of every stored blob.
    pub fn all(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(prefixes) = fs::read_dir(self.root.join("blobs/sha256")) else {
            return out;
        };
        for p in prefixes.flatten() {
            let Ok(files) = fs::read_dir(p.path()) else { continue };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if digest_hex(&name).is_ok() {
                    out.push(format!("sha256:{name}"));
                }
            }
        }
        out.sort();
        out
    }

    /// Removes a blob.
    pub fn remove(&self, digest: &str) -> Result<(), BlobError> {
        let p = self.path_of(digest)?;
        fs::remove_file(&p).map_err(io_err("removing", &p))
    }
}

/// Re-hashes every blob (corrupt ones are quarantined) and checks that every manifest's blob
/// exists.
pub fn fsck(blobs: &LocalBlobs, manifests: &ManifestStore) -> Result<FsckReport, BlobError> {
    let mut r = FsckReport::default();
    for d in blobs.all() {
        let p = blobs.path_of(&d)?;
        let Ok(f) = fs::File::open(&p) else { continue };
        r.bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
        let actual = hash_reader(f).map_err(io_err("reading", &p))?;
        r.checked += 1;
        if actual != d {
            blobs.quarantine(&d);
            r.corrupt.push((d, actual));
        }
    }
    let present: HashSet<String> = blobs.all().into_iter().collect();
    for m in manifests.all()? {
        let m = m.manifest;
        if present.contains(&m.digest) {
            continue;
        }
        let which = (format!("{}@{}", m.name, m.version), m.digest);
        if blobs.is_quarantined(&which.1) {
            r.quarantined.push(which);
        } else {
            r.missing.push(which);
        }
    }
    Ok(r)
}

/// Blobs that no manifest in `keep` and no cache entry (`<data>/cache/*.digest`) names.
pub fn unreferenced(blobs: &LocalBlobs, keep: &[SignedManifest], cache_dir: &Path) -> Vec<String> {
    let mut named: HashSet<String> = keep.iter().map(|m| m.manifest.digest.clone()).collect();
    if let Ok(entries) = fs::read_dir(cache_dir) {
        for e in entries.flatten() {
            if let Ok(text) = fs::read_to_string(e.path()) {
                named.insert(text.trim().to_string());
            }
        }
    }
    blobs.all().into_iter().filter(|d| !named.contains(d)).collect()
}
