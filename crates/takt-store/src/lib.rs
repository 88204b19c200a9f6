//! takt-store
