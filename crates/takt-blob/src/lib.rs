//! takt-blob
