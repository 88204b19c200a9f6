//! The CI service: the run queue (numbering, one run per commit, global and per-project
//! limits, newest-only mode, cancel, dispatch to the engine, crash recovery), projects and
//! their secrets. It knows nothing of HTTP: the server routes to it.

pub mod projects;
pub mod queue;
pub mod secrets;

/// Writes a secret to a file only its owner may read (0600), fsynced.
pub fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}
