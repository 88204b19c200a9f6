//! A job's clean workspace on local disk: the commit's files, the artifacts it is given, its
//! cache, its environment and its scripts. Blocking file work; callers run it off the runtime.

use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use takt_blob::{BlobError, LocalBlobs, pack_paths};
use takt_pipeline::{Cache, CacheKey};

/// An artifact a job produced, to be placed into later jobs' workspaces.
#[derive(Debug, Clone)]
pub struct Stored {
    pub digest: String,
    pub tar: bool,
    pub path: Option<String>,
}

pub fn extract_tar(tar_path: &Path, dst: &Path) -> io::Result<()> {
    let f = fs::File::open(tar_path)?;
    let mut a = tar::Archive::new(io::BufReader::with_capacity(256 * 1024, f));
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    a.unpack(dst)
}

/// Places a stored artifact into a project directory, verifying its digest first.
pub fn place(blobs: &LocalBlobs, art: &Stored, project_dir: &Path) -> Result<(), BlobError> {
    blobs.verify(&art.digest)?;
    let src = blobs.path_of(&art.digest)?;
    if art.tar {
        extract_tar(&src, project_dir).map_err(|source| BlobError::Io {
            doing: "unpacking an artifact into",
            path: project_dir.to_path_buf(),
            source,
        })?;
    } else if let Some(rel) = &art.path {
        let dst = project_dir.join(rel);
        if let Some(p) = dst.parent() {
            fs::create_dir_all(p).map_err(|source| BlobError::Io {
                doing: "creating",
                path: p.to_path_buf(),
                source,
            })?;
        }
        blobs.copy_verified(&art.digest, &dst)?;
        let mode = fs::metadata(&src)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap_or(0o644);
        let _ = fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(mode | 0o644));
    }
    Ok(())
}

/// The cache key as stored: literal keys with `$VAR`s expanded (e.g. `$CI_COMMIT_REF_SLUG`),
/// `files:` keys from the files' contents.
pub fn cache_key(cache: &Cache, project_dir: &Path, env: &[(String, String)]) -> String {
    match &cache.key {
        CacheKey::Literal(k) => sanitize(&expand(k, env)),
        CacheKey::Files { files, prefix } => {
            let mut h = Sha256::new();
            let mut any = false;
            for f in files {
                if let Ok(bytes) = fs::read(project_dir.join(f)) {
                    h.update(f.as_bytes());
                    h.update([0]);
                    h.update(&bytes);
                    any = true;
                }
            }
            // As in GitLab: missing files give the key `default`.
            let k = if any {
                hex::encode(&h.finalize()[..12])
            } else {
                "default".into()
            };
            match prefix {
                Some(p) => sanitize(&format!("{}-{k}", expand(p, env))),
                None => k,
            }
        }
    }
}

/// A name safe as one path component: ASCII letters, digits, `-`, `_`, `.`; anything else `_`.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn index_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("{key}.digest"))
}

/// Restores a cache into the project directory; `Ok(true)` on a hit.
pub fn restore_cache(blobs: &LocalBlobs, cache_dir: &Path, key: &str, project_dir: &Path) -> Result<bool, BlobError> {
    let Ok(digest) = fs::read_to_string(index_path(cache_dir, key)) else {
        return Ok(false);
    };
    let art = Stored {
        digest: digest.trim().to_string(),
        tar: true,
        path: None,
    };
    match place(blobs, &art, project_dir) {
        Ok(()) => Ok(true),
        // A damaged or missing cache is a miss, never a failure.
        Err(BlobError::Corrupt { .. } | BlobError::Missing { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Saves the cache paths (content-addressed blob) and points the key at it.
pub fn save_cache(
    blobs: &LocalBlobs,
    cache_dir: &Path,
    key: &str,
    project_dir: &Path,
    paths: &[String],
) -> Result<bool, BlobError> {
    // Always a tar, even for one file, so restore can unpack it in place.
    let blob = match pack_paths(blobs, project_dir, paths, &[], true) {
        Ok((b, _, _)) => b,
        Err(BlobError::NothingToPack(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let idx = index_path(cache_dir, key);
    let tmp = idx.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, &blob.digest)
        .and_then(|_| fs::rename(&tmp, &idx))
        .map_err(|source| BlobError::Io {
            doing: "writing",
            path: idx,
            source,
        })?;
    Ok(true)
}

/// Quotes a string for `sh` inside single quotes.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Makes `dir` and everything in it belong to `uid`:`gid` (symlinks themselves, not their
/// targets), so that a job running as that user can write its workspace.
pub fn give_to(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        if fs::symlink_metadata(&p)?.is_dir() {
            for e in fs::read_dir(&p)? {
                todo.push(e?.path());
            }
        }
    }
    Ok(())
}

/// The shell script for a list of commands: each is echoed (`$ cmd`) then run under `set -e`.
pub fn script(lines: &[String]) -> String {
    let mut s = String::from("# written by takt\nset -e\n");
    for l in lines {
        let first = l.lines().next().unwrap_or("");
        let shown = if l.trim_end().contains('\n') {
            format!("$ {first} # collapsed multi-line command")
        } else {
            format!("$ {first}")
        };
        s.push_str(&format!("printf '%s\\n' {}\n{l}\n", sh_quote(&shown)));
    }
    s
}

/// Expands `$VAR` and `${VAR}` from `vars` (unknown variables stay as written, like GitLab).
pub fn expand(value: &str, vars: &[(String, String)]) -> String {
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && i + 1 < chars.len() {
            if chars[i + 1] == '$' {
                out.push('$');
                i += 2;
                continue;
            }
            let braced = chars[i + 1] == '{';
            let start = if braced { i + 2 } else { i + 1 };
            let mut j = start;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let name: String = chars[start..j].iter().collect();
            let end = if braced && chars.get(j) == Some(&'}') { j + 1 } else { j };
            if !name.is_empty()
                && (!braced || end == j + 1)
                && let Some(v) = lookup(&name)
            {
                out.push_str(&v);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The variables of a job's `reports: dotenv` files (`globs` under `project_dir`), later files
/// winning, and what was wrong with them. Regular files only, and no more of each than GitLab
/// reads.
pub fn read_dotenv(project_dir: &Path, globs: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    use std::io::Read;
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    let files = takt_blob::matching_files(project_dir, globs, &[]);
    if files.is_empty() {
        problems.push(format!("no dotenv report matched {globs:?}"));
    }
    for f in files {
        let path = project_dir.join(&f);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            problems.push(format!("{}: not a regular file (a symlink?)", f.display()));
            continue;
        }
        let limit = takt_pipeline::reports::MAX_DOTENV_BYTES as u64 + 1;
        let mut text = String::new();
        if let Err(e) = fs::File::open(&path).and_then(|file| file.take(limit).read_to_string(&mut text)) {
            problems.push(format!("{}: {e}", f.display()));
            continue;
        }
        let (v, p) = takt_pipeline::reports::parse_dotenv(&text);
        problems.extend(p.into_iter().map(|p| format!("{}: {p}", f.display())));
        for (k, val) in v {
            vars.retain(|(o, _)| *o != k);
            vars.push((k, val));
        }
    }
    (vars, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_cache_keys_expand_variables() {
        let c = Cache {
            key: CacheKey::Literal("deps-$CI_COMMIT_REF_SLUG".into()),
            paths: vec!["x".into()],
            policy: takt_pipeline::CachePolicy::PullPush,
        };
        let env = vec![("CI_COMMIT_REF_SLUG".to_string(), "feature-x".to_string())];
        assert_eq!(cache_key(&c, Path::new("/nonexistent"), &env), "deps-feature-x");
    }

    #[test]
    fn expands_like_gitlab() {
        let v = vec![("A".to_string(), "x".to_string()), ("B".to_string(), "y".to_string())];
        assert_eq!(expand("$A-${B}-$C-$$A", &v), "x-y-$C-$A");
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let s = script(&["echo 'hi'".into()]);
        assert!(s.contains("printf '%s\\n' '$ echo '\\''hi'\\'''\necho 'hi'\n"), "{s}");
    }
}
