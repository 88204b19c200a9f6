//! `takt-shim __shim -- PROGRAM ARGS...`: the per-step shim alone (`takt_exec::shim`), so a
//! step does not pay the start of the whole CLI. takt starts steps under it when it finds it
//! beside its own executable (`takt_exec::shim::beside`), under `takt __shim` otherwise.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    ExitCode::from(takt_exec::shim::entry(&args).clamp(0, 255) as u8)
}
