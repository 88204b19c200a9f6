//! The crate map of ARCHITECTURE.md, checked: which of our crates may depend on which (over
//! `cargo metadata`), and that the pure crates stay pure (no tokio, database, HTTP or process
//! crates among their dependencies; no file system or clock in their code outside tests).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each crate of ours and the crates of ours it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("takt-model", &[]),
    ("takt-pipeline", &["takt-model", "takt-monitor", "takt-flags"]),
    ("takt-views", &["takt-model"]),
    ("takt-api", &["takt-model", "takt-views", "takt-monitor", "takt-flow"]),
    ("takt-flow", &["takt-model", "takt-views"]),
    ("takt-deploy", &[]),
    ("takt-flags", &["takt-model"]),
    ("takt-flags-client", &["takt-flags"]),
    // The web UI: pages over the API's types, which it calls in-process (no store, no services).
    ("takt-web", &["takt-api", "takt-model", "takt-views", "takt-flow"]),
    ("takt-monitor", &["takt-model", "takt-views"]),
    ("takt-store", &["takt-model"]),
    ("takt-blob", &["takt-model"]),
    ("takt-exec", &["takt-model"]),
    ("takt-proxy", &["takt-deploy"]),
    (
        "takt-driver",
        &[
            "takt-deploy",
            "takt-monitor",
            "takt-pipeline",
            "takt-probe",
            "takt-proxy",
        ],
    ),
    (
        "takt-engine",
        &["takt-model", "takt-pipeline", "takt-store", "takt-blob", "takt-exec"],
    ),
    (
        "takt-cd",
        &[
            "takt-model",
            "takt-views",
            "takt-store",
            "takt-pipeline",
            "takt-deploy",
            "takt-driver",
            "takt-monitor",
        ],
    ),
    (
        "takt-ci",
        &[
            "takt-model",
            "takt-views",
            "takt-store",
            "takt-pipeline",
            "takt-engine",
            "takt-exec",
            "takt-monitor",
            "takt-flags",
        ],
    ),
    (
        "takt-server",
        &[
            "takt-web",
            "takt-flow",
            "takt-model",
            "takt-views",
            "takt-api",
            "takt-store",
            "takt-pipeline",
            "takt-blob",
            "takt-engine",
            "takt-exec",
            "takt-cd",
            "takt-ci",
            "takt-observe",
            "takt-monitor",
            "takt-flags",
        ],
    ),
    ("takt-probe", &["takt-monitor", "takt-pipeline"]),
    (
        "takt-observe",
        &[
            "takt-model",
            "takt-monitor",
            "takt-pipeline",
            "takt-probe",
            "takt-store",
            "takt-views",
        ],
    ),
];

/// Pure crates: functions over values. None of these may appear among their dependencies.
const PURE: &[&str] = &[
    "takt-pipeline",
    "takt-views",
    "takt-deploy",
    "takt-api",
    "takt-monitor",
    "takt-flow",
    "takt-flags",
];
const IMPURE_DEPS: &[&str] = &["tokio", "sqlx", "axum", "hyper", "reqwest", "nix", "object_store"];
/// Nor these in their code (before its `#[cfg(test)]` part).
const IMPURE_CODE: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net",
    "now_utc()",
    "Instant::now",
    "SystemTime::now",
    "Timestamp::now",
];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Our crates and their normal dependencies (all of them, ours and others).
fn crates() -> BTreeMap<String, (BTreeSet<String>, String)> {
    let m = metadata();
    let mut out = BTreeMap::new();
    for p in m["packages"].as_array().unwrap() {
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        let dir = Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .display()
            .to_string();
        out.insert(p["name"].as_str().unwrap().to_string(), (deps, dir));
    }
    out
}

#[test]
fn our_crates_depend_only_on_what_the_map_allows() {
    let all = crates();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    for (name, (deps, _)) in &all {
        let ours: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| all.contains_key(*d))
            .collect();
        if name == "takt" {
            continue; // the binary may use everything
        }
        let Some(may) = allowed.get(name.as_str()) else {
            panic!("crate `{name}` is not in the map: add it to ARCHITECTURE.md and to ALLOWED here");
        };
        for d in ours {
            assert!(
                may.contains(&d),
                "`{name}` depends on `{d}`, which the crate map does not allow (ARCHITECTURE.md)"
            );
        }
    }
    // Nothing depends on the server or the binary but the binary.
    for (name, (deps, _)) in &all {
        if name != "takt" {
            assert!(!deps.contains("takt-server") && !deps.contains("takt"), "`{name}`");
        }
    }
}

#[test]
fn the_pure_crates_stay_pure() {
    let all = crates();
    for name in PURE {
        let (deps, dir) = &all[*name];
        for bad in IMPURE_DEPS {
            assert!(!deps.contains(*bad), "pure `{name}` depends on `{bad}`");
        }
        let mut files = vec![Path::new(dir).join("src")];
        while let Some(f) = files.pop() {
            if f.is_dir() {
                files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if f.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (i, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap();
                for bad in IMPURE_CODE {
                    assert!(
                        !line.contains(bad),
                        "{}:{}: pure `{name}` uses `{bad}` (take the value as an argument)",
                        f.display(),
                        i + 1
                    );
                }
            }
        }
    }
}
