//! Server settings: defaults, then the TOML config file, then `TAKT_*` environment variables,
//! then command-line flags (12-factor: everything can come from the environment).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The settings `takt serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// `human` or `json`.
    pub log_format: String,
    /// Use this as the admin token instead of generating one (`TAKT_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// The key that encrypts secrets (`TAKT_SECRET_KEY`, 64 hex digits); default: the data
    /// directory's `secret.key`.
    pub secret_key: Option<String>,
    /// Runs at once over all projects (a project's own `concurrency` may lower it).
    pub concurrency: usize,
    /// Jobs at once within one run.
    pub jobs_per_run: usize,
    /// Runs that may wait before triggers are refused with 503.
    pub max_waiting: usize,
    /// What happens to runs interrupted by a server stop: `requeue` or `fail`.
    pub on_restart: crate::queue::OnRestart,
    /// Seconds between polls of each project's repository (0: no polling).
    pub poll_seconds: u64,
    /// Largest artifact a push may send (413 above).
    pub max_artifact_bytes: u64,
    /// An object store that keeps a copy of every artifact (`s3://BUCKET/PREFIX` or
    /// `file:///PATH`); `None`: the local disk only.
    pub artifact_store: Option<String>,
    /// How jobs are kept away from the server (`isolation`: auto, bwrap, user, none).
    pub isolation: crate::isolation::IsolationSetting,
    /// The unprivileged user jobs run as where bubblewrap is not used (`NAME`, `UID[:GID]`).
    pub job_user: Option<String>,
    /// The config file the settings were read from (hidden from jobs).
    pub config_file: Option<PathBuf>,
    /// Seconds one git clone or fetch may take before it is killed (a transfer idle for
    /// 30 s, or for this long if shorter, is abandoned earlier).
    pub git_timeout: u64,
    /// What an acknowledged SQLite append survives (`TAKT_SQLITE_SYNCHRONOUS`: `full`, the
    /// default, or `normal`, for benchmarks only).
    pub durability: takt_store::Durability,
    /// How many appended events the live broadcast keeps for followers that are behind
    /// (`TAKT_FOLLOW_CAPACITY`, default 4096). Followers that fall further behind re-read the
    /// store, so this trades memory for reads; tests set it low to make every follower lag.
    pub follow_capacity: usize,
    /// The address people and forges reach the server at (`TAKT_PUBLIC_URL`,
    /// `public_url`): the links in commit statuses. Default: `http://` and `listen`.
    pub public_url: String,
    /// Browser origins that may call the OFREP routes (`TAKT_CORS_ORIGINS`, comma-separated,
    /// or `cors_origins`); none by default.
    pub cors_origins: Vec<String>,
    /// OFREP evaluations a second each flags token may make (`TAKT_OFREP_RATE_LIMIT`,
    /// `ofrep_rate_limit`; a burst of as many); beyond it 429 with `Retry-After`. 0: no limit
    /// (the default).
    pub ofrep_rate_limit: u32,
}

/// The config file (TOML). Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub log_format: Option<String>,
    pub concurrency: Option<usize>,
    pub jobs_per_run: Option<usize>,
    pub max_waiting: Option<usize>,
    pub on_restart: Option<crate::queue::OnRestart>,
    pub poll_seconds: Option<u64>,
    pub max_artifact_bytes: Option<u64>,
    pub artifact_store: Option<String>,
    pub git_timeout: Option<u64>,
    pub isolation: Option<crate::isolation::IsolationSetting>,
    pub job_user: Option<String>,
    pub public_url: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub ofrep_rate_limit: Option<u32>,
}

/// A number from the environment variable `var`, else the file's, else `default`.
fn number<T: std::str::FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match env(var) {
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            what: var.into(),
            value: v,
            reason: "not a number".into(),
        }),
        None => Ok(file.unwrap_or(default)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what} `{value}` is not valid: {reason}")]
    Invalid {
        what: String,
        value: String,
        reason: String,
    },
}

/// Flags given on the command line (they win over everything).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    pub isolation: Option<String>,
    pub job_user: Option<String>,
}

/// `$XDG_DATA_HOME/takt`, or `~/.local/share/takt`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        Some(x) => PathBuf::from(x).join("takt"),
        None => PathBuf::from(env("HOME").unwrap_or_else(|| "/".into())).join(".local/share/takt"),
    }
}

impl ServerConfig {
    /// Resolves the settings. `env` reads an environment variable (injectable for tests).
    pub fn resolve(
        file: Option<&Path>,
        flags: Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let f = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                toml::from_str::<ConfigFile>(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => ConfigFile::default(),
        };
        let pick = |flag: Option<String>, var: &str, file: Option<String>| flag.or_else(|| env(var)).or(file);
        let listen_s = pick(flags.listen, "TAKT_LISTEN", f.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_s
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                what: "listen address".into(),
                value: listen_s.clone(),
                reason: format!("{e}; write e.g. 127.0.0.1:8080"),
            })?;
        let data_dir = flags
            .data_dir
            .or_else(|| env("TAKT_DATA_DIR").map(PathBuf::from))
            .or(f.data_dir)
            .unwrap_or_else(|| default_data_dir(env));
        let max_body_bytes = number(env, "TAKT_MAX_BODY_BYTES", f.max_body_bytes, 1024 * 1024)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let concurrency = number(env, "TAKT_CONCURRENCY", f.concurrency, cores)?;
        let jobs_per_run = number(env, "TAKT_JOBS_PER_RUN", f.jobs_per_run, cores)?;
        let max_waiting = number(env, "TAKT_MAX_WAITING", f.max_waiting, 100_000)?;
        let poll_seconds = number(env, "TAKT_POLL_SECONDS", f.poll_seconds, 30)?;
        let max_artifact_bytes = number(env, "TAKT_MAX_ARTIFACT_BYTES", f.max_artifact_bytes, 2 << 30)?;
        let git_timeout = number(env, "TAKT_GIT_TIMEOUT", f.git_timeout, 600)?;
        let follow_capacity = number(env, "TAKT_FOLLOW_CAPACITY", None, takt_store::FOLLOW_CAPACITY)?;
        let durability = match env("TAKT_SQLITE_SYNCHRONOUS").map(|v| v.to_ascii_lowercase()) {
            None => takt_store::Durability::PowerLoss,
            Some(v) if v == "full" => takt_store::Durability::PowerLoss,
            Some(v) if v == "normal" => takt_store::Durability::ProcessCrash,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    what: "TAKT_SQLITE_SYNCHRONOUS".into(),
                    value: v,
                    reason: "use `full` (the default) or `normal`".into(),
                });
            }
        };
        if follow_capacity > 1 << 20 {
            return Err(ConfigError::Invalid {
                what: "TAKT_FOLLOW_CAPACITY".into(),
                value: follow_capacity.to_string(),
                reason: "at most 1048576 (followers behind by more re-read the store anyway)".into(),
            });
        }
        for (what, v) in [
            ("git_timeout", git_timeout as usize),
            ("TAKT_FOLLOW_CAPACITY", follow_capacity),
            ("concurrency", concurrency),
            ("jobs_per_run", jobs_per_run),
            ("max_waiting", max_waiting),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    what: what.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        let on_restart = match env("TAKT_ON_RESTART") {
            Some(v) if v == "requeue" => crate::queue::OnRestart::Requeue,
            Some(v) if v == "fail" => crate::queue::OnRestart::Fail,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    what: "TAKT_ON_RESTART".into(),
                    value: v,
                    reason: "use `requeue` or `fail`".into(),
                });
            }
            None => f.on_restart.unwrap_or_default(),
        };
        let isolation = match flags.isolation.or_else(|| env("TAKT_ISOLATION")) {
            Some(v) => crate::isolation::IsolationSetting::parse(&v).ok_or_else(|| ConfigError::Invalid {
                what: "isolation".into(),
                value: v,
                reason: "use `auto`, `bwrap`, `user` or `none`".into(),
            })?,
            None => f.isolation.unwrap_or_default(),
        };
        let job_user = pick(flags.job_user, "TAKT_JOB_USER", f.job_user).filter(|s| !s.trim().is_empty());
        let log_format = pick(flags.log_format, "TAKT_LOG_FORMAT", f.log_format).unwrap_or_else(|| "human".into());
        if log_format != "human" && log_format != "json" {
            return Err(ConfigError::Invalid {
                what: "log format".into(),
                value: log_format,
                reason: "use `human` or `json`".into(),
            });
        }
        let public_url = match env("TAKT_PUBLIC_URL").filter(|s| !s.is_empty()).or(f.public_url) {
            None => format!("http://{listen}"),
            Some(u) => {
                let ok =
                    url::Url::parse(&u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
                if !ok {
                    return Err(ConfigError::Invalid {
                        what: "public_url".into(),
                        value: u,
                        reason: "must be an http(s) address, e.g. https://ci.example.com".into(),
                    });
                }
                u.trim_end_matches('/').to_string()
            }
        };
        let cors_origins: Vec<String> = match env("TAKT_CORS_ORIGINS").filter(|s| !s.trim().is_empty()) {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => f.cors_origins.unwrap_or_default(),
        };
        for o in &cors_origins {
            let ok = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && !o.ends_with('/')
            });
            if !ok {
                return Err(ConfigError::Invalid {
                    what: "cors_origins".into(),
                    value: o.clone(),
                    reason: "each is an origin: scheme, host and port, e.g. https://app.example.com".into(),
                });
            }
        }
        let ofrep_rate_limit = number(&env, "TAKT_OFREP_RATE_LIMIT", f.ofrep_rate_limit, 0)?;
        Ok(ServerConfig {
            ofrep_rate_limit,
            cors_origins,
            public_url,
            data_dir,
            listen,
            database_url: pick(flags.database_url, "TAKT_DATABASE_URL", f.database_url),
            max_body_bytes,
            log_format,
            admin_token: env("TAKT_ADMIN_TOKEN").filter(|s| !s.is_empty()),
            secret_key: env("TAKT_SECRET_KEY").filter(|s| !s.is_empty()),
            concurrency,
            jobs_per_run,
            max_waiting,
            on_restart,
            poll_seconds,
            max_artifact_bytes,
            artifact_store: env("TAKT_ARTIFACT_STORE")
                .filter(|s| !s.is_empty())
                .or(f.artifact_store),
            git_timeout,
            durability,
            follow_capacity,
            isolation,
            job_user,
            config_file: file.map(Path::to_path_buf),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("takt.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/takt\"\nmax_body_bytes = 10\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "TAKT_LISTEN" => Some("127.0.0.1:9100".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        let c = ServerConfig::resolve(Some(&file), Overrides::default(), &env).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.data_dir, PathBuf::from("/srv/takt"));
        assert_eq!(c.max_body_bytes, 10);
        let c = ServerConfig::resolve(
            Some(&file),
            Overrides {
                listen: Some("127.0.0.1:1".into()),
                ..Default::default()
            },
            &env,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1);
        let c = ServerConfig::resolve(None, Overrides::default(), &env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/takt"));
        assert_eq!(c.listen.port(), 9100);
    }

    #[test]
    fn cors_origins_are_origins() {
        let with = |v: &'static str| move |k: &str| (k == "TAKT_CORS_ORIGINS").then(|| v.to_string());
        let c = ServerConfig::resolve(
            None,
            Overrides::default(),
            &with("https://a.example, http://b.example:8080"),
        )
        .unwrap();
        assert_eq!(c.cors_origins, ["https://a.example", "http://b.example:8080"]);
        for bad in ["https://a.example/app", "a.example", "https://a.example/"] {
            let e = ServerConfig::resolve(None, Overrides::default(), &with(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cors_origins") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn bad_settings_say_what_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("takt.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let e = ServerConfig::resolve(Some(&file), Overrides::default(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takt.toml") && e.contains("lisen"), "{e}");
        let e = ServerConfig::resolve(
            None,
            Overrides {
                listen: Some("nope".into()),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen address `nope`"), "{e}");
    }

    /// The broadcast is allocated whole at start: a huge capacity is refused, not a panic.
    #[test]
    fn the_follow_capacity_is_bounded() {
        let with = |v: &'static str| {
            ServerConfig::resolve(None, Overrides::default(), &move |k| {
                (k == "TAKT_FOLLOW_CAPACITY").then(|| v.to_string())
            })
        };
        assert_eq!(with("16").unwrap().follow_capacity, 16);
        for bad in ["0", "1048577", "18446744073709551615", "many"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("TAKT_FOLLOW_CAPACITY"), "{bad}: {e}");
        }
    }

    #[test]
    fn isolation_and_job_user_come_from_flag_env_or_file() {
        use crate::isolation::IsolationSetting;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("takt.toml");
        std::fs::write(&file, "isolation = \"user\"\njob_user = \"ci\"\n").unwrap();
        let c = ServerConfig::resolve(Some(&file), Overrides::default(), &|_| None).unwrap();
        assert_eq!(c.isolation, IsolationSetting::User);
        assert_eq!(c.job_user.as_deref(), Some("ci"));
        assert_eq!(c.config_file.as_deref(), Some(file.as_path()));
        let env = |k: &str| (k == "TAKT_ISOLATION").then(|| "none".to_string());
        let c = ServerConfig::resolve(Some(&file), Overrides::default(), &env).unwrap();
        assert_eq!(c.isolation, IsolationSetting::None);
        let flags = Overrides {
            isolation: Some("bwrap".into()),
            ..Default::default()
        };
        assert_eq!(
            ServerConfig::resolve(None, flags, &env).unwrap().isolation,
            IsolationSetting::Bwrap
        );
        assert_eq!(
            ServerConfig::resolve(None, Overrides::default(), &|_| None)
                .unwrap()
                .isolation,
            IsolationSetting::Auto
        );
        let bad = |k: &str| (k == "TAKT_ISOLATION").then(|| "chroot".to_string());
        let e = ServerConfig::resolve(None, Overrides::default(), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("isolation `chroot`"), "{e}");
    }
}
