//! takt-engine
