//! How `takt serve` keeps jobs away from itself: the `isolation` and `job_user` settings,
//! chosen once at start (docs/server.md, "Job isolation").

use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use takt_exec::{Bwrap, Isolation};

/// The `isolation` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationSetting {
    /// bubblewrap if it is on PATH and works; else `user` if `job_user` is set; else none.
    #[default]
    Auto,
    Bwrap,
    User,
    None,
}

impl IsolationSetting {
    pub fn parse(s: &str) -> Option<IsolationSetting> {
        Some(match s.trim() {
            "auto" => IsolationSetting::Auto,
            "bwrap" => IsolationSetting::Bwrap,
            "user" => IsolationSetting::User,
            "none" => IsolationSetting::None,
            _ => return None,
        })
    }
}

/// What a server without isolation says, at start, in `/readyz` and in `takt project show`.
pub const NO_ISOLATION_WARNING: &str = "jobs can read the server's secrets: they run as the server's own user, unisolated \
     (install bubblewrap, or set job_user)";

/// The isolation the server's jobs run under, and what to tell people about it.
#[derive(Debug, Clone)]
pub struct JobIsolation {
    pub isolation: Isolation,
    /// Why it is what it is, when that is worth saying (e.g. bwrap was not usable).
    pub note: Option<String>,
}

impl JobIsolation {
    /// `none`, `bwrap` or `user`.
    pub fn name(&self) -> &'static str {
        self.isolation.name()
    }

    /// Set when jobs are not isolated from the server.
    pub fn warning(&self) -> Option<&'static str> {
        matches!(self.isolation, Isolation::None).then_some(NO_ISOLATION_WARNING)
    }

    /// `{"isolation": NAME, "warning"?: TEXT}`, for `/readyz` and the project view.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("isolation".into(), json!(self.name()));
        if let Some(w) = self.warning() {
            m.insert("warning".into(), json!(w));
        }
        m
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("isolation = \"bwrap\", but bwrap is not on PATH: install the bubblewrap package")]
    NoBwrap,
    #[error("isolation = \"bwrap\", but {0}")]
    BwrapBroken(takt_exec::ExecError),
    #[error("isolation = \"user\" needs job_user (TAKT_JOB_USER, --job-user): the unprivileged user jobs run as")]
    NoJobUser,
    #[error("job_user `{user}`: {reason}")]
    BadJobUser { user: String, reason: String },
    #[error("cannot restrict the data directory {path} to the server's user: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the isolation check did not finish: {0}")]
    Join(String),
}

/// Chooses how jobs run. `hide`: what jobs must not see under bubblewrap (data directory,
/// config file, CLI credentials, the workspace folder). With a job user, the data directory
/// becomes readable by the server's user only (0700).
pub async fn choose(
    setting: IsolationSetting,
    job_user: Option<&str>,
    data_dir: &Path,
    hide: Vec<PathBuf>,
) -> Result<JobIsolation, IsolationError> {
    let mut note = None;
    if matches!(setting, IsolationSetting::Auto | IsolationSetting::Bwrap) {
        let found = tokio::task::spawn_blocking(|| takt_exec::find_on_path("bwrap"))
            .await
            .map_err(|e| IsolationError::Join(e.to_string()))?;
        match (found, setting) {
            (Some(program), _) => match takt_exec::probe_bwrap(&program).await {
                Ok(()) => {
                    let b = tokio::task::spawn_blocking(move || Bwrap::new(program, &hide))
                        .await
                        .map_err(|e| IsolationError::Join(e.to_string()))?;
                    return Ok(JobIsolation {
                        isolation: Isolation::Bwrap(b),
                        note: None,
                    });
                }
                Err(e) if setting == IsolationSetting::Bwrap => return Err(IsolationError::BwrapBroken(e)),
                Err(e) => note = Some(e.to_string()),
            },
            (None, IsolationSetting::Bwrap) => return Err(IsolationError::NoBwrap),
            (None, _) => note = Some("bwrap is not on PATH (the bubblewrap package)".into()),
        }
    }
    match (setting, job_user) {
        (IsolationSetting::User, None) => Err(IsolationError::NoJobUser),
        (IsolationSetting::User | IsolationSetting::Auto, Some(user)) => {
            let (uid, gid) = resolve_user(user)?;
            let me = nix::unistd::geteuid().as_raw();
            if uid == me {
                return Err(IsolationError::BadJobUser {
                    user: user.to_string(),
                    reason: "it is the server's own user: its jobs could read everything the server can".into(),
                });
            }
            if me != 0 {
                return Err(IsolationError::BadJobUser {
                    user: user.to_string(),
                    reason: "running jobs as another user needs the server to run as root".into(),
                });
            }
            let dir = data_dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|source| IsolationError::DataDir { path: dir, source })
            })
            .await
            .map_err(|e| IsolationError::Join(e.to_string()))??;
            Ok(JobIsolation {
                isolation: Isolation::User { uid, gid },
                note,
            })
        }
        _ => Ok(JobIsolation {
            isolation: Isolation::None,
            note,
        }),
    }
}

/// `NAME`, `UID` or `UID:GID` → (uid, gid); a name's group is its primary group. Never root.
pub fn resolve_user(user: &str) -> Result<(u32, u32), IsolationError> {
    let bad = |reason: String| IsolationError::BadJobUser {
        user: user.to_string(),
        reason,
    };
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (
            u.parse::<u32>().map_err(|_| bad("write NAME, UID or UID:GID".into()))?,
            g.parse::<u32>().map_err(|_| bad("write NAME, UID or UID:GID".into()))?,
        ),
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => match nix::unistd::User::from_name(user) {
                Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
                Ok(None) => return Err(bad("no such user".into())),
                Err(e) => return Err(bad(e.to_string())),
            },
        },
    };
    if uid == 0 || gid == 0 {
        return Err(bad("must be an unprivileged user and group, not root".into()));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_users_resolve_and_root_is_refused() {
        assert_eq!(resolve_user("1234").unwrap(), (1234, 1234));
        assert_eq!(resolve_user("1234:99").unwrap(), (1234, 99));
        assert!(resolve_user("0").unwrap_err().to_string().contains("not root"));
        assert!(resolve_user("root").unwrap_err().to_string().contains("not root"));
        assert!(resolve_user("12:x").is_err());
        assert!(
            resolve_user("no-such-user-takt")
                .unwrap_err()
                .to_string()
                .contains("no such user")
        );
    }

    #[test]
    fn settings_parse() {
        assert_eq!(IsolationSetting::parse("bwrap"), Some(IsolationSetting::Bwrap));
        assert_eq!(IsolationSetting::parse("none"), Some(IsolationSetting::None));
        assert_eq!(IsolationSetting::parse("chroot"), None);
    }

    #[tokio::test]
    async fn none_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let j = choose(IsolationSetting::None, None, dir.path(), Vec::new())
            .await
            .unwrap();
        assert_eq!(j.name(), "none");
        assert_eq!(j.fields()["warning"], NO_ISOLATION_WARNING);
        assert!(matches!(
            choose(IsolationSetting::User, None, dir.path(), Vec::new()).await,
            Err(IsolationError::NoJobUser)
        ));
    }
}
