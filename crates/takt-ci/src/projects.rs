//! Projects: the view (repository, default branch, settings, sealed secrets) is
//! `takt_views::project`; here are the rules for names and the bare mirror each project has
//! under `<data-dir>/mirrors/NAME.git`.

use std::path::{Path, PathBuf};

pub use takt_views::project::{Project, Projects, Sealed};

/// Project names: 1–100 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 100
        && !n.starts_with(['.', '-'])
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "project name `{n}` is not allowed: use 1 to 100 of A-Z a-z 0-9 . _ - (not first . or -)"
        ))
    }
}

/// The longest branch or tag name takt accepts (git itself has no limit; file systems stop
/// a path component at 255 bytes).
pub const MAX_REF_NAME: usize = 255;

/// Branch and tag names by git's ref-format rules (`git check-ref-format`), plus a length
/// limit: components not starting with `.` nor ending in `.lock`, no `..`, no control
/// characters, space, `~ ^ : ? * [ \`, no `@{`, not `@`, no empty component, not ending in `.`.
pub fn check_ref_name(what: &str, b: &str) -> Result<(), String> {
    let shown: String = b.chars().take(60).flat_map(char::escape_debug).collect();
    let refuse = |why: &str| Err(format!("`{shown}` is not a valid {what} name: {why}"));
    if b.is_empty() {
        return refuse("it is empty");
    }
    if b.len() > MAX_REF_NAME {
        return refuse(&format!(
            "it is {} bytes long; at most {MAX_REF_NAME} are allowed",
            b.len()
        ));
    }
    if b.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if b == "@" || b.contains("@{") {
        return refuse("`@` alone and `@{` are reserved by git");
    }
    if b.contains("..") {
        return refuse("it contains `..`");
    }
    if b.ends_with('.') {
        return refuse("it ends with `.`");
    }
    if let Some(c) = b.chars().find(|c| c.is_control() || " ~^:?*[\\".contains(*c)) {
        return refuse(&format!("it contains {c:?}"));
    }
    for part in b.split('/') {
        if part.is_empty() {
            return refuse("it has an empty component (`//`, or `/` at either end)");
        }
        if part.starts_with('.') || part.ends_with(".lock") {
            return refuse("a component starts with `.` or ends with `.lock`");
        }
    }
    Ok(())
}

/// Branch names as git allows them.
pub fn check_branch(b: &str) -> Result<(), String> {
    check_ref_name("branch", b)
}

pub fn mirror_path(data: &Path, name: &str) -> PathBuf {
    data.join("mirrors").join(format!("{name}.git"))
}
