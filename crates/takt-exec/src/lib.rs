//! takt-exec
