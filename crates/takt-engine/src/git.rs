//! The git adapter: the `git` CLI, as CI runners use it (credentials, LFS, hooks just work).

use crate::EngineError;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Repo {
    /// The working tree's top directory.
    pub root: PathBuf,
    /// The common git directory (shared by worktrees): `takt run` keeps its data under it.
    pub common_dir: PathBuf,
}

/// How long one git command may take: network commands (clone, fetch) and local ones. A git
/// process (and everything it started: `git-remote-http`, `ssh`) still running then is
/// killed, so a remote that accepts a connection and never answers cannot hang takt.
static NETWORK_TIMEOUT_MS: AtomicU64 = AtomicU64::new(600_000);
static LOCAL_TIMEOUT_MS: AtomicU64 = AtomicU64::new(600_000);
/// HTTP transfers slower than 1 byte/s for this long are abandoned by git itself.
static IDLE_SECS: AtomicU64 = AtomicU64::new(30);

/// Sets the time limits of every git command this process runs (`takt serve`'s `git_timeout`).
/// `network` bounds clone and fetch; a transfer idle for `idle` is abandoned earlier.
pub fn set_timeouts(network: Duration, idle: Duration) {
    NETWORK_TIMEOUT_MS.store(network.as_millis().max(1) as u64, Ordering::Relaxed);
    IDLE_SECS.store(idle.as_secs().max(1), Ordering::Relaxed);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    Local,
    Network,
}

/// Fetches into mirrors by this process, and how often one of them is followed by git's
/// `maintenance run --auto` (which packs loose objects once there are many).
static FETCHES: AtomicU64 = AtomicU64::new(0);
pub const MAINTAIN_EVERY: u64 = 32;

async fn git(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<Vec<u8>, EngineError> {
    run_git(dir, args, env, Reach::Local).await
}

async fn git_net(dir: &Path, args: &[&str]) -> Result<Vec<u8>, EngineError> {
    run_git(dir, args, &[], Reach::Network).await
}

async fn run_git(dir: &Path, args: &[&str], env: &[(&str, &Path)], reach: Reach) -> Result<Vec<u8>, EngineError> {
    let command = || format!("git {}", args.join(" "));
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir);
    let limit = match reach {
        Reach::Local => Duration::from_millis(LOCAL_TIMEOUT_MS.load(Ordering::Relaxed)),
        Reach::Network => {
            let idle = IDLE_SECS.load(Ordering::Relaxed).to_string();
            cmd.args(["-c", "http.lowSpeedLimit=1", "-c"])
                .arg(format!("http.lowSpeedTime={idle}"));
            Duration::from_millis(NETWORK_TIMEOUT_MS.load(Ordering::Relaxed))
        }
    };
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills git's helpers too.
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| EngineError::Git {
        command: command(),
        message: format!("cannot run git: {e} (is git installed?)"),
    })?;
    let pid = child.id();
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| EngineError::Git {
            command: command(),
            message: format!("lost track of git: {e}"),
        })?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            return Err(EngineError::Git {
                command: command(),
                message: format!(
                    "gave up after {:.0?} with no result (is the remote answering?); the git processes were killed",
                    limit
                ),
            });
        }
    };
    if !out.status.success() {
        return Err(EngineError::Git {
            command: command(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// A full object id (SHA-1 or SHA-256 hex): the only revisions taken from stored data (an
/// artifact's provenance, a deploy's range), so that none can be read as a git option.
pub fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `from..to` (or `to`) of object ids, or an error naming the one that is not.
fn object_range(from: Option<&str>, to: &str) -> Result<String, EngineError> {
    for rev in from.into_iter().chain([to]) {
        if !is_object_id(rev) {
            return Err(EngineError::Git {
                command: "git rev-list".into(),
                message: format!("`{rev}` is not a commit id"),
            });
        }
    }
    Ok(match from {
        Some(f) => format!("{f}..{to}"),
        None => to.to_string(),
    })
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).trim().to_string()
}

fn lines(b: Vec<u8>) -> Vec<String> {
    String::from_utf8_lossy(&b)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

impl Repo {
    /// Opens the git repository containing `path`.
    pub async fn open(path: &Path) -> Result<Repo, EngineError> {
        if !path.exists() {
            return Err(EngineError::NotARepo {
                path: path.to_path_buf(),
                reason: "no such directory".into(),
            });
        }
        let out = git(
            path,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--git-common-dir",
            ],
            &[],
        )
        .await
        .map_err(|e| EngineError::NotARepo {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let l = lines(out);
        match l.as_slice() {
            [root, common] => Ok(Repo {
                root: PathBuf::from(root),
                common_dir: PathBuf::from(common),
            }),
            _ => Err(EngineError::NotARepo {
                path: path.to_path_buf(),
                reason: "not a working tree (a bare repository?)".into(),
            }),
        }
    }

    /// A bare repository (a server's mirror): it is its own git directory.
    pub fn bare(dir: &Path) -> Repo {
        Repo {
            root: dir.to_path_buf(),
            common_dir: dir.to_path_buf(),
        }
    }

    /// Makes a bare mirror of `url` at `dir` (`git clone --mirror`); nothing is left behind
    /// when it fails. A relative path is taken from the current directory.
    pub async fn mirror(url: &str, dir: &Path) -> Result<Repo, EngineError> {
        let fail = |message: String| EngineError::Git {
            command: format!("git clone --mirror {url}"),
            message,
        };
        if url.starts_with('-') {
            return Err(fail("not a repository URL or path".into()));
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EngineError::Io {
                doing: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let d = dir.to_string_lossy().into_owned();
        match git_net(&here, &["clone", "--mirror", "--quiet", "--", url, &d]).await {
            Ok(_) => Ok(Repo::bare(dir)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                Err(e)
            }
        }
    }

    /// Fetches new commits and refs into a bare mirror. git's own `maintenance run --auto`
    /// after each fetch (one more process on the way from a push to its run) is left out:
    /// every [`MAINTAIN_EVERY`]th fetch of this process starts it in the background instead.
    pub async fn fetch(&self) -> Result<(), EngineError> {
        git_net(
            &self.root,
            &["-c", "maintenance.auto=false", "fetch", "--prune", "--quiet", "origin"],
        )
        .await?;
        if FETCHES.fetch_add(1, Ordering::Relaxed) % MAINTAIN_EVERY == MAINTAIN_EVERY - 1 {
            let root = self.root.clone();
            tokio::spawn(async move {
                if let Err(e) = git(&root, &["maintenance", "run", "--auto", "--quiet"], &[]).await {
                    tracing::warn!(error = %e, mirror = %root.display(), "git maintenance failed");
                }
            });
        }
        Ok(())
    }

    /// Branches and tags with the object each names: (`refs/heads/x` or `refs/tags/y`, id).
    pub async fn refs(&self) -> Result<Vec<(String, String)>, EngineError> {
        let out = git(
            &self.root,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads",
                "refs/tags",
            ],
            &[],
        )
        .await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, id)| (r.to_string(), id.to_string()))
            .collect())
    }

    /// The full commit id `rev` names.
    pub async fn resolve(&self, rev: &str) -> Result<String, EngineError> {
        if rev.starts_with('-') || rev.is_empty() {
            return Err(EngineError::UnknownRevision {
                rev: rev.into(),
                reason: "not a revision".into(),
            });
        }
        git(
            &self.root,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{rev}^{{commit}}"),
            ],
            &[],
        )
        .await
        .map(text)
        .map_err(|_| EngineError::UnknownRevision {
            rev: rev.into(),
            reason: "no commit has that name".into(),
        })
    }

    /// The branch or tag a revision stands for (GitLab: a branch pipeline or a tag pipeline).
    pub async fn ref_of(&self, rev: &str) -> (Option<String>, Option<String>) {
        if rev == "HEAD" {
            let b = git(&self.root, &["symbolic-ref", "--short", "-q", "HEAD"], &[])
                .await
                .ok()
                .map(text);
            return (b.filter(|s| !s.is_empty()), None);
        }
        if git(
            &self.root,
            &["show-ref", "--verify", "--quiet", &format!("refs/tags/{rev}")],
            &[],
        )
        .await
        .is_ok()
        {
            return (None, Some(rev.to_string()));
        }
        if git(
            &self.root,
            &["show-ref", "--verify", "--quiet", &format!("refs/heads/{rev}")],
            &[],
        )
        .await
        .is_ok()
        {
            return (Some(rev.to_string()), None);
        }
        (None, None)
    }

    /// The repository's default branch, for `CI_DEFAULT_BRANCH` of a local run: the one
    /// `origin/HEAD` names, else `main` or `master` when there is one, else the branch checked
    /// out, else `main`.
    pub async fn default_branch(&self) -> String {
        let out = |args: &'static [&'static str]| async move {
            git(&self.root, args, &[])
                .await
                .ok()
                .map(text)
                .filter(|s| !s.is_empty())
        };
        if let Some(b) = out(&["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"]).await
            && let Some(name) = b.strip_prefix("origin/")
        {
            return name.to_string();
        }
        for name in ["main", "master"] {
            let r = format!("refs/heads/{name}");
            if git(&self.root, &["show-ref", "--verify", "--quiet", &r], &[])
                .await
                .is_ok()
            {
                return name.to_string();
            }
        }
        out(&["symbolic-ref", "--short", "-q", "HEAD"])
            .await
            .unwrap_or_else(|| "main".to_string())
    }

    /// Whether `commit` is `tip` or one of its ancestors (`git merge-base --is-ancestor`).
    pub async fn is_ancestor(&self, commit: &str, tip: &str) -> bool {
        if commit.starts_with('-') || tip.starts_with('-') {
            return false;
        }
        git(&self.root, &["merge-base", "--is-ancestor", commit, tip], &[])
            .await
            .is_ok()
    }

    /// The commits in `to` that `from` lacks (all of `to`'s history without `from`), newest
    /// first, at most `max`.
    pub async fn commits_between(&self, from: Option<&str>, to: &str, max: usize) -> Result<Vec<String>, EngineError> {
        let range = object_range(from, to)?;
        let max = format!("--max-count={max}");
        git(&self.root, &["rev-list", &max, &range, "--"], &[]).await.map(lines)
    }

    /// How many commits are in `to` and not in `from`.
    pub async fn count_between(&self, from: Option<&str>, to: &str) -> Result<u64, EngineError> {
        let range = object_range(from, to)?;
        let out = git(&self.root, &["rev-list", "--count", &range, "--"], &[]).await?;
        Ok(text(out).parse().unwrap_or(0))
    }

    /// Author, committer date and subject of each of `commits` (those the repository has).
    pub async fn describe(&self, commits: &[&str]) -> Vec<Described> {
        let mut args = vec![
            "log",
            "--no-walk=unsorted",
            "--format=%H%x1f%an%x1f%ae%x1f%cI%x1f%s%x1e",
        ];
        args.extend(commits.iter().copied().filter(|c| is_object_id(c)));
        args.push("--");
        match git(&self.root, &args, &[]).await {
            Ok(out) => parse_log(&String::from_utf8_lossy(&out)),
            // One unknown commit fails the whole call: describe them one by one then.
            Err(_) if commits.len() > 1 => {
                let mut all = Vec::new();
                for c in commits {
                    all.extend(Box::pin(self.describe(&[c])).await);
                }
                all
            }
            Err(_) => Vec::new(),
        }
    }

    /// A file's bytes at a commit, or `None` if the commit has no such file.
    pub async fn file_at(&self, commit: &str, path: &str) -> Option<Vec<u8>> {
        git(&self.root, &["cat-file", "blob", &format!("{commit}:{path}")], &[])
            .await
            .ok()
    }

    /// Writes `git archive` of a tree-ish to `dst` (a tar).
    pub async fn archive(&self, treeish: &str, dst: &Path) -> Result<(), EngineError> {
        let dst_s = dst.to_string_lossy().into_owned();
        git(&self.root, &["archive", "--format=tar", "-o", &dst_s, treeish], &[])
            .await
            .map(|_| ())
    }

    /// Files the commit changed against its first parent (all files for a root commit).
    pub async fn changed_files(&self, commit: &str) -> Result<Vec<String>, EngineError> {
        git(
            &self.root,
            &[
                "diff-tree",
                "-r",
                "--name-only",
                "--no-commit-id",
                "--root",
                "-m",
                "--first-parent",
                commit,
            ],
            &[],
        )
        .await
        .map(lines)
    }

    /// Every file in a tree-ish.
    pub async fn files(&self, treeish: &str) -> Result<Vec<String>, EngineError> {
        git(&self.root, &["ls-tree", "-r", "--name-only", treeish], &[])
            .await
            .map(lines)
    }

    /// A tree of the working directory as it is now (tracked changes and untracked, not ignored
    /// files), written through a temporary index so the user's index is untouched. Returns the
    /// tree id and the files that differ from HEAD.
    pub async fn dirty_tree(&self, scratch: &Path) -> Result<(String, Vec<String>), EngineError> {
        let index = scratch.join(format!("index-{}", std::process::id()));
        let env = [("GIT_INDEX_FILE", index.as_path())];
        let r = async {
            git(&self.root, &["read-tree", "HEAD"], &env).await?;
            git(&self.root, &["add", "-A"], &env).await?;
            let tree = text(git(&self.root, &["write-tree"], &env).await?);
            let changed = lines(git(&self.root, &["diff-index", "--cached", "--name-only", "HEAD"], &env).await?);
            Ok((tree, changed))
        }
        .await;
        let _ = std::fs::remove_file(&index);
        r
    }

    /// Where the repository comes from, for provenance: `remote.origin.url` or its path.
    pub async fn origin(&self) -> String {
        match git(&self.root, &["config", "--get", "remote.origin.url"], &[])
            .await
            .map(text)
        {
            Ok(u) if !u.is_empty() => u,
            _ => self.root.display().to_string(),
        }
    }
}

/// One commit as `git log` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub commit: String,
    pub author: String,
    pub email: Option<String>,
    pub committed_at: takt_model::OffsetDateTime,
    pub subject: String,
}

/// Parses `git log --format=%H%x1f%an%x1f%ae%x1f%cI%x1f%s%x1e` output.
pub(crate) fn parse_log(out: &str) -> Vec<Described> {
    out.split('\x1e')
        .filter_map(|rec| {
            let mut f = rec.trim_start_matches('\n').split('\x1f');
            let commit = f.next()?.trim().to_string();
            let author = f.next()?.to_string();
            let email = f.next().filter(|e| !e.is_empty()).map(str::to_string);
            let at = f.next()?;
            let committed_at = takt_model::timefmt::parse_rfc3339(at)?;
            let subject = f.next().unwrap_or("").trim_end().to_string();
            (commit.len() >= 40).then_some(Described {
                commit,
                author,
                email,
                committed_at,
                subject,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pushed artifact's provenance names its commit: a value like `--output=x` must never
    /// reach git's command line as an option.
    #[test]
    fn ranges_take_object_ids_only() {
        let a = "a".repeat(40);
        let b = "b".repeat(64);
        assert_eq!(object_range(Some(&a), &b).unwrap(), format!("{a}..{b}"));
        assert_eq!(object_range(None, &a).unwrap(), a);
        for bad in ["--output=/tmp/x", "HEAD", "", &"a".repeat(39), &"g".repeat(40)] {
            assert!(object_range(None, bad).is_err(), "{bad}");
            assert!(object_range(Some(bad), &a).is_err(), "{bad}");
        }
        assert!(!is_object_id("--all"));
    }

    #[test]
    fn git_log_records_parse_and_junk_is_left_out() {
        let out = format!(
            "{a}\x1fAda Lovelace\x1fada@example.org\x1f2026-11-30T10:00:00+01:00\x1fFix the thing\x1e\n\
             {b}\x1fNo Mail\x1f\x1f2026-11-30T09:00:00Z\x1f\x1e\nnot a record",
            a = "a".repeat(40),
            b = "b".repeat(40)
        );
        let d = parse_log(&out);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].author, "Ada Lovelace");
        assert_eq!(d[0].email.as_deref(), Some("ada@example.org"));
        assert_eq!(d[0].subject, "Fix the thing");
        assert_eq!(d[0].committed_at.unix_timestamp(), 1_796_029_200);
        assert_eq!(d[1].email, None);
        assert_eq!(d[1].subject, "");
    }
}
