//! GitLab pipelines in the shapes real projects use, read unchanged: each directory under
//! `tests/gitlab/` holds a `.gitlab-ci.yml` (and the files it includes) and `expected.txt`,
//! what lint says of it and the plan it makes under four fixed commits (a push to the default
//! branch, a push to a feature branch, a tag, a schedule). A change to the reading or the
//! planning shows here as a diff of plain text.
//!
//! `TAKT_WRITE_EXPECTED=1 cargo test -p takt-pipeline --test gitlab_corpus` rewrites the files;
//! read the diff before committing it. Plain-shell ones are also run by `takt run`
//! (crates/takt/tests/it/gitlab.rs).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use takt_pipeline::gitlab::IncludeWalk;
use takt_pipeline::{Job, Layout, ParseOptions, PlanContext, Severity, parse_with, plan};

/// The commits every pipeline is planned for.
struct Commit {
    title: &'static str,
    branch: Option<&'static str>,
    tag: Option<&'static str>,
    source: &'static str,
    /// `None`: unknown (a tag or a schedule: every `changes` rule matches, as in GitLab).
    changed: Option<&'static [&'static str]>,
}

const COMMITS: [Commit; 4] = [
    Commit {
        title: "push to main (changed: src/lib.rs, Cargo.toml)",
        branch: Some("main"),
        tag: None,
        source: "push",
        changed: Some(&["src/lib.rs", "Cargo.toml"]),
    },
    Commit {
        title: "push to feature/login (changed: docs/index.md)",
        branch: Some("feature/login"),
        tag: None,
        source: "push",
        changed: Some(&["docs/index.md"]),
    },
    Commit {
        title: "tag v1.2.0",
        branch: None,
        tag: Some("v1.2.0"),
        source: "push",
        changed: None,
    },
    Commit {
        title: "schedule on main",
        branch: Some("main"),
        tag: None,
        source: "schedule",
        changed: None,
    },
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitlab")
}

/// Every file under `dir`, as paths relative to it (sorted).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("corpus directory readable") {
            let p = e.expect("corpus entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under the corpus directory");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.retain(|f| f != "expected.txt");
    out.sort();
    out
}

fn list(v: &[String]) -> String {
    v.join(" | ")
}

fn describe_job(out: &mut String, j: &Job, at: &takt_pipeline::Diagnostics) {
    let (file, pos) = at.locate(j.pos);
    let _ = writeln!(out, "job {} (stage {}, {file}:{})", j.name, j.stage, pos.line);
    for (what, lines) in [
        ("before_script", &j.before_script),
        ("script", &j.script),
        ("after_script", &j.after_script),
    ] {
        if !lines.is_empty() {
            let _ = writeln!(out, "  {what}: {}", list(lines));
        }
    }
    if !j.variables.is_empty() {
        let vars: Vec<String> = j.variables.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  variables: {}", vars.join(" "));
    }
    if let Some(needs) = &j.needs {
        let n: Vec<String> = needs
            .iter()
            .map(|n| {
                let mut s = n.job.clone();
                if !n.artifacts {
                    s.push_str(" (no artifacts)");
                }
                if n.optional {
                    s.push_str(" (optional)");
                }
                s
            })
            .collect();
        let _ = writeln!(out, "  needs: [{}]", n.join(", "));
    }
    if let Some(d) = &j.dependencies {
        let _ = writeln!(out, "  dependencies: [{}]", d.join(", "));
    }
    if !j.rules.is_empty() {
        let _ = writeln!(out, "  rules: {}", j.rules.len());
    }
    let mut flags = Vec::new();
    if j.allow_failure == Some(true) {
        flags.push("allow_failure".to_string());
    }
    if !j.allow_exit_codes.is_empty() {
        flags.push(format!("allow exit codes {:?}", j.allow_exit_codes));
    }
    if j.retry.max > 0 {
        flags.push(format!("retry {} when {:?}", j.retry.max, j.retry.when));
    }
    if let Some(t) = j.timeout {
        flags.push(format!("timeout {}s", t.as_secs()));
    }
    if j.interruptible {
        flags.push("interruptible".into());
    }
    if let Some(s) = j.start_in {
        flags.push(format!("start_in {}s", s.as_secs()));
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "  {}", flags.join(", "));
    }
    if let Some(a) = &j.artifacts {
        let mut s = format!("  artifacts: paths [{}]", a.paths.join(", "));
        if !a.exclude.is_empty() {
            let _ = write!(s, " exclude [{}]", a.exclude.join(", "));
        }
        if !a.junit.is_empty() {
            let _ = write!(s, " junit [{}]", a.junit.join(", "));
        }
        for (kind, paths) in &a.reports {
            let _ = write!(s, " {kind} [{}]", paths.join(", "));
        }
        if let Some(e) = a.expire_in {
            let _ = write!(s, " expire_in {}s", e.as_secs());
        }
        if let Some(x) = &a.expose_as {
            let _ = write!(s, " expose_as {x:?}");
        }
        if !a.public {
            s.push_str(" not public");
        }
        let _ = writeln!(out, "{s} when {:?}", a.when);
    }
    for c in &j.caches {
        let _ = writeln!(
            out,
            "  cache: key {:?} paths [{}] {:?}",
            c.key,
            c.paths.join(", "),
            c.policy
        );
    }
    if let Some(e) = &j.environment {
        let _ = writeln!(
            out,
            "  environment: {} ({}) {}",
            e.name,
            e.action,
            e.url.as_deref().unwrap_or("-")
        );
    }
    for (what, v) in [
        ("coverage", &j.coverage),
        ("resource_group", &j.resource_group),
        ("image", &j.image),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "  {what}: {v}");
        }
    }
    if let Some(t) = &j.trigger {
        let _ = writeln!(
            out,
            "  trigger: {}{}{}",
            t.file,
            if t.depend { " (depend)" } else { "" },
            if t.forward_variables {
                ""
            } else {
                " (variables not forwarded)"
            }
        );
    }
    if let Some(v) = &j.inherit_variables {
        let _ = writeln!(out, "  inherits variables: [{}]", v.join(", "));
    }
    if !j.tags.is_empty() {
        let _ = writeln!(out, "  tags: [{}]", j.tags.join(", "));
    }
}

/// What lint and the planner say of one case, as text.
fn report(dir: &Path) -> String {
    let files = files_under(dir);
    let main = std::fs::read(dir.join(".gitlab-ci.yml")).expect("each case has a .gitlab-ci.yml");
    let includes = IncludeWalk::read_all(&main, &files, |f| std::fs::read(dir.join(f)).ok());
    let opts = ParseOptions {
        layout: Some(Layout::Gitlab),
        strict: false,
    };
    let mut out = String::new();
    let p = match parse_with(".gitlab-ci.yml", &main, &opts, &includes) {
        Ok(p) => p,
        Err(d) => {
            let _ = writeln!(out, "lint: {} error(s)", d.items.len());
            for item in &d.items {
                let _ = writeln!(out, "{}", d.render(item));
            }
            return out;
        }
    };
    let _ = writeln!(out, "lint: ok; stages: {}", p.stages.join(", "));
    for w in &p.warnings.items {
        assert_eq!(w.severity, Severity::Warning);
        let _ = writeln!(out, "{}", p.warnings.render(w));
    }
    if !p.variables.is_empty() {
        let vars: Vec<String> = p.variables.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "variables: {}", vars.join(" "));
    }
    if !p.workflow.is_empty() {
        let _ = writeln!(out, "workflow rules: {}", p.workflow.len());
    }
    for j in &p.jobs {
        describe_job(&mut out, j, &p.warnings);
    }
    // Each child pipeline a trigger job runs, read as the engine reads it.
    for file in p.child_pipelines() {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        match parse_with(
            file,
            &bytes,
            &opts,
            &IncludeWalk::read_all(&bytes, &files, |f| std::fs::read(dir.join(f)).ok()),
        ) {
            Ok(c) => {
                let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
                let _ = writeln!(
                    out,
                    "child {file}: lint ok; stages: {}; jobs: {}",
                    c.stages.join(", "),
                    names.join(", ")
                );
            }
            Err(d) => {
                let _ = writeln!(out, "child {file}: {} error(s)", d.items.len());
                for item in &d.items {
                    let _ = writeln!(out, "{}", d.render(item));
                }
            }
        }
    }
    for c in &COMMITS {
        let mut v: HashMap<String, String> = [
            ("CI", "true"),
            ("CI_PIPELINE_SOURCE", c.source),
            ("CI_DEFAULT_BRANCH", "main"),
            ("CI_PROJECT_NAME", "demo"),
            ("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(b) = c.branch {
            v.insert("CI_COMMIT_BRANCH".into(), b.into());
            v.insert("CI_COMMIT_REF_NAME".into(), b.into());
        }
        if let Some(t) = c.tag {
            v.insert("CI_COMMIT_TAG".into(), t.into());
            v.insert("CI_COMMIT_REF_NAME".into(), t.into());
        }
        for (k, val) in &p.variables {
            v.insert(k.clone(), val.clone());
        }
        let cx = PlanContext {
            variables: v,
            changed_files: c.changed.map(|f| f.iter().map(|s| s.to_string()).collect()),
            files: files.clone(),
            only_jobs: Vec::new(),
        };
        let _ = writeln!(out, "\n== {}", c.title);
        match plan(&p, &cx) {
            Err(e) => {
                let _ = writeln!(out, "no run: {e}");
            }
            Ok(plan) => {
                for (i, pj) in plan.jobs.iter().enumerate() {
                    let deps: Vec<&str> = plan
                        .waits_for(i)
                        .iter()
                        .map(|&d| plan.jobs[d].job.name.as_str())
                        .collect();
                    let mut line = format!(
                        "{} [{}] {} [{}]",
                        pj.job.name,
                        pj.job.stage,
                        if pj.by_needs { "needs" } else { "after" },
                        deps.join(", ")
                    );
                    let from: Vec<&str> = pj
                        .artifacts_from
                        .iter()
                        .map(|&d| plan.jobs[d].job.name.as_str())
                        .collect();
                    if from != deps {
                        let _ = write!(line, " artifacts from [{}]", from.join(", "));
                    }
                    if pj.when != takt_pipeline::When::OnSuccess {
                        let _ = write!(line, " when {:?}", pj.when);
                    }
                    if pj.allow_failure {
                        line.push_str(" allow_failure");
                    }
                    for (k, val) in &pj.rule_variables {
                        let _ = write!(line, " {k}={val}");
                    }
                    let _ = writeln!(out, "{line}");
                }
                if !plan.variables.is_empty() {
                    let vars: Vec<String> = plan.variables.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "workflow variables: {}", vars.join(" "));
                }
                for (job, why) in &plan.excluded {
                    let _ = writeln!(out, "excluded {job}: {why}");
                }
            }
        }
    }
    out
}

#[test]
fn every_gitlab_pipeline_reads_and_plans_as_expected() {
    let write = std::env::var_os("TAKT_WRITE_EXPECTED").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/gitlab exists")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus has {} cases; the issue asks for 30",
        cases.len()
    );
    let mut wrong = Vec::new();
    for case in &cases {
        let got = report(case);
        let path = case.join("expected.txt");
        if write {
            std::fs::write(&path, &got).expect("expected.txt writable");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            wrong.push(format!(
                "{}:\n--- expected\n{want}\n--- got\n{got}",
                case.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ (TAKT_WRITE_EXPECTED=1 rewrites them):\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Every case lints clean except those named for what they refuse.
#[test]
fn only_the_cases_about_refusals_fail_lint() {
    for case in std::fs::read_dir(corpus_dir()).expect("tests/gitlab exists") {
        let case = case.expect("corpus entry").path();
        if !case.is_dir() {
            continue;
        }
        let name = case.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let ok = report(&case).starts_with("lint: ok");
        assert_eq!(ok, !name.contains("refused"), "{name}: lint ok = {ok}");
    }
}
