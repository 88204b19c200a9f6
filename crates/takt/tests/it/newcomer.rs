//! What a new user tripped over (the newcomer-fixes issue), each against the real binary.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;

const OK_JOB: &str = "jobs:\n  hello:\n    script: [echo hello]\n";

/// `takt trigger` prints the run's number; `--rev SHA` of a branch head runs as that branch;
/// `--ref` names the branch, and must contain the commit.
#[tokio::test]
async fn trigger_prints_the_run_and_knows_the_branch_of_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", OK_JOB)]);
    let main_head = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit(&[("f", "1")], "feature");
    let feature_head = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "main"]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    let trigger = |args: &[&str]| {
        let mut c = takt();
        c.args(["trigger", "demo", "--server", &s.base, "--token", &admin])
            .args(args);
        c.output().unwrap()
    };

    let out = trigger(&["--rev", &main_head]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("queued run #1 of demo"), "{text}");
    assert!(text.contains("takt logs demo/1"), "{text}");
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(
        run["branch"], "main",
        "a branch head's sha runs as that branch: {run:#}"
    );

    let out = trigger(&["--rev", &feature_head]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(finished_run(&s, &admin, "demo", 2).await["branch"], "feature");

    let out = trigger(&["--rev", &main_head, "--ref", "feature", "--force"]);
    assert!(out.status.success(), "main's head is on feature too: {}", stderr(&out));
    assert_eq!(finished_run(&s, &admin, "demo", 3).await["branch"], "feature");

    let out = trigger(&["--rev", &feature_head, "--ref", "main"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not on branch `main`"), "{}", stderr(&out));
}

/// Pushes the artifact app@1.0 over the API.
async fn push_app(s: &Server, token: &str) {
    let r = client()
        .put(format!("{}/api/v1/artifacts/app/1.0", s.base))
        .bearer_auth(token)
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
}

/// `takt artifact ls` printed `run #null` for pushed artifacts.
#[tokio::test]
async fn artifact_ls_says_a_pushed_artifact_was_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    push_app(&s, &admin).await;
    let out = takt()
        .args(["artifact", "ls", "--server", &s.base, "--token", &admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("app@1.0") && text.contains("pushed"), "{text}");
    assert!(!text.contains("null"), "{text}");
}

/// `takt artifact show` and `takt project show` printed JSON only and took no `--json`: now
/// one `field: value` line each, and `--json` for the server's document.
#[tokio::test]
async fn artifact_show_and_project_show_print_fields_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", "jobs:\n  a:\n    script: [\"true\"]\n")]);
    add_project(&s, &admin, "demo", repo.path()).await;
    push_app(&s, &admin).await;
    let show = |args: &[&str]| {
        let out = takt()
            .args(args)
            .args(["--server", &s.base, "--token", &admin])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for args in [&["artifact", "show", "app@1.0"][..], &["project", "show", "demo"][..]] {
        let text = show(args);
        assert!(!text.trim_start().starts_with('{'), "{args:?} prints fields: {text}");
        let json = show(&[args, &["--json"][..]].concat());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v.is_object(), "{json}");
        // Every plain value of the document is in the text.
        let first = v
            .as_object()
            .unwrap()
            .iter()
            .find_map(|(k, x)| x.as_str().map(|x| (k.clone(), x.to_string())));
        if let Some((k, x)) = first {
            assert!(
                text.lines().any(|l| l.starts_with(&k) && l.ends_with(&x)),
                "{k}: {x} in\n{text}"
            );
        }
    }
    let text = show(&["project", "show", "demo"]);
    assert!(
        text.lines().any(|l| l.starts_with("name") && l.ends_with("demo")),
        "{text}"
    );
    let text = show(&["artifact", "show", "app@1.0"]);
    assert!(text.contains("1.0"), "{text}");
}

/// `takt --help` described the artifact commands without fsck and gc.
#[test]
fn the_artifact_summary_names_every_artifact_command() {
    let out = takt().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("artifact"))
        .unwrap_or_else(|| panic!("{text}"));
    for cmd in ["push", "pull", "ls", "show", "verify", "fsck", "gc"] {
        assert!(line.contains(cmd), "`{cmd}` missing from: {line}");
    }
}

/// Piped, a table is plain aligned columns (no box drawing), as `cargo` and `kubectl` print;
/// `takt runs show` says in text why a run ended before any job ran.
#[tokio::test]
async fn piped_tables_are_plain_and_runs_show_says_why_a_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", "jobs:\n  hello: [not, a, job]\n")]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, body) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    assert_eq!(st, reqwest::StatusCode::ACCEPTED, "{body}");
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let reason = run["reason"].as_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut c = takt();
        c.args(args).args(["--server", &s.base, "--token", &admin]);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = cli(&["runs", "show", "demo", "1"]);
    assert!(shown.contains(&format!("reason: {reason}")), "{shown}");

    let listed = cli(&["runs", "ls", "--project", "demo"]);
    assert!(
        !listed.contains(['│', '─', '┌', '└', '╭']),
        "box drawing in piped output:\n{listed}"
    );
    let lines: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[0].trim_start().starts_with("project"), "{listed}");
    // Columns line up: the status column starts where its header does.
    let at = lines[0].find("status").unwrap();
    assert_eq!(lines[1].get(at..at + 6), Some("failed"), "{listed}");
}
