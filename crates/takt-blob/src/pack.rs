//! Reproducible tar archives: sorted entries, fixed mtime, owner and modes, so that the same
//! files give the same digest on every machine.

use crate::{BlobError, BlobRef, LocalBlobs, io_err};
use globset::{GlobBuilder, GlobSetBuilder};
use std::fs;
use std::path::{Path, PathBuf};

/// Files under `base` matching `patterns` (a directory pattern takes all under it), minus
/// `exclude`, as sorted relative paths: regular files and symlinks only (a FIFO or device is
/// left out, so reading one cannot hang or leak). No symlink is followed, `base` included: a
/// job may have put links to anywhere in its workspace.
pub fn matching_files(base: &Path, patterns: &[String], exclude: &[String]) -> Vec<PathBuf> {
    let build = |pats: &[String]| {
        let mut b = GlobSetBuilder::new();
        for p in pats {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            for pat in [p.to_string(), format!("{p}/**")] {
                if let Ok(g) = GlobBuilder::new(&pat).literal_separator(true).build() {
                    b.add(g);
                }
            }
        }
        b.build().ok()
    };
    let (Some(inc), ex) = (build(patterns), build(exclude)) else {
        return Vec::new();
    };
    if !fs::symlink_metadata(base).is_ok_and(|m| m.is_dir()) {
        return Vec::new();
    }
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(base)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() || e.file_type().is_symlink())
        .filter_map(|e| e.path().strip_prefix(base).ok().map(Path::to_path_buf))
        .filter(|rel| {
            let s = rel.to_string_lossy();
            inc.is_match(s.as_ref()) && !ex.as_ref().is_some_and(|x| x.is_match(s.as_ref()))
        })
        .collect();
    out.sort();
    out
}

/// Stores the files matching `patterns` under `base`: one file as it is, several as a
/// reproducible tar (always a tar with `force_tar`). Returns the blob, whether it is a tar, and the single file's path.
pub fn pack_paths(
    blobs: &LocalBlobs,
    base: &Path,
    patterns: &[String],
    exclude: &[String],
    force_tar: bool,
) -> Result<(BlobRef, bool, Option<String>), BlobError> {
    let files = matching_files(base, patterns, exclude);
    if files.is_empty() {
        return Err(BlobError::NothingToPack(patterns.to_vec()));
    }
    // Stored as it is only if it is a regular file: a symlink is archived as a link, never
    // followed to what it names (a job could point it at the server's secrets).
    let single_pattern_is_that_file = !force_tar
        && files.len() == 1
        && patterns.len() == 1
        && patterns[0].trim_start_matches("./") == files[0].to_string_lossy()
        && fs::symlink_metadata(base.join(&files[0])).is_ok_and(|m| m.is_file());
    if single_pattern_is_that_file {
        let p = base.join(&files[0]);
        let r = blobs.ingest_file(&p)?;
        return Ok((r, false, Some(files[0].to_string_lossy().into_owned())));
    }
    let w = blobs.writer()?;
    let tmp = w.path.clone();
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for rel in &files {
        let full = base.join(rel);
        let meta = fs::symlink_metadata(&full).map_err(io_err("reading", &full))?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(io_err("reading", &full))?;
            tar.append_link(&mut h, rel, target)
                .map_err(io_err("archiving", &full))?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            let f = fs::File::open(&full).map_err(io_err("opening", &full))?;
            tar.append_data(&mut h, rel, f).map_err(io_err("archiving", &full))?;
        }
    }
    let w = tar.into_inner().map_err(io_err("archiving", &tmp))?;
    Ok((blobs.commit(w)?, true, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_give_the_same_digest() {
        let d1 = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(store.path()).unwrap();
        let mk = |root: &Path| {
            fs::create_dir_all(root.join("out/sub")).unwrap();
            fs::write(root.join("out/a.txt"), "a").unwrap();
            fs::write(root.join("out/sub/b.txt"), "b").unwrap();
            fs::write(root.join("out/skip.log"), "x").unwrap();
        };
        mk(d1.path());
        let (a, tarred, _) = pack_paths(&blobs, d1.path(), &["out".into()], &["**/*.log".into()], false).unwrap();
        assert!(tarred);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let d2 = tempfile::tempdir().unwrap();
        mk(d2.path());
        let (b, _, _) = pack_paths(&blobs, d2.path(), &["out/".into()], &["**/*.log".into()], false).unwrap();
        assert_eq!(a.digest, b.digest);
        let (single, tarred, path) = pack_paths(&blobs, d1.path(), &["out/a.txt".into()], &[], false).unwrap();
        assert!(!tarred);
        assert_eq!(single.size, 1);
        assert_eq!(path.as_deref(), Some("out/a.txt"));
        assert!(matches!(
            pack_paths(&blobs, d1.path(), &["nope/*".into()], &[], false),
            Err(BlobError::NothingToPack(_))
        ));
    }
}
