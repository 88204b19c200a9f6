//! `takt run` end to end: real repositories, real processes, the real event log.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::*;
use std::time::Duration;

const MULTI_STAGE: &str = r#"
stages: [build, test, package]
variables:
  GREETING: hello
jobs:
  compile:
    stage: build
    script:
      - echo "$GREETING from $CI_JOB_NAME"
      - mkdir -p out && echo "binary of $CI_COMMIT_SHORT_SHA" > out/app
    artifacts:
      paths: [out/]
  unit:
    stage: test
    script:
      - grep -q binary out/app
      - printf '<testsuite name="s"><testcase name="a"/><testcase name="b"/><testcase name="c"><skipped/></testcase></testsuite>' > report.xml
    artifacts:
      reports:
        junit: report.xml
  pack:
    stage: package
    script: [tar -cf app.tar out]
    artifacts:
      name: app
      paths: [app.tar]
"#;

#[test]
fn a_multi_stage_pipeline_passes_artifacts_along_and_reports_everything() {
    let repo = Repo::new(&[("takt.yml", MULTI_STAGE)]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    assert_eq!(r["status"], "success");
    assert_eq!(r["run"], 1);
    assert_eq!(r["branch"], "main");
    let unit = job(&r, "unit");
    assert_eq!(unit["tests"]["tests"], 3);
    assert_eq!(unit["tests"]["skipped"], 1);
    assert!(unit["started_at"].as_str().unwrap().ends_with('Z'));
    let pack = job(&r, "pack");
    let short = &r["commit"].as_str().unwrap()[..8];
    assert_eq!(pack["artifact"]["name"], "app");
    assert_eq!(pack["artifact"]["version"], format!("1-{short}"));
    // The artifact is on disk under its digest, and its manifest is signed.
    let digest = pack["artifact"]["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = repo.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex);
    assert!(blob.exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.data_dir().join(format!("manifests/app/1-{short}.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["manifest"]["digest"], digest);
    assert_eq!(manifest["manifest"]["provenance"]["job"], "pack");
    assert_eq!(
        manifest["manifest"]["provenance"]["inputs"].as_array().unwrap().len(),
        1,
        "built from compile's artifact"
    );
    // Logs are timestamped per line.
    let log = std::fs::read_to_string(repo.data_dir().join(job(&r, "compile")["log"].as_str().unwrap())).unwrap();
    let line = log
        .lines()
        .find(|l| l.ends_with("hello from compile"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(line.as_bytes()[23], b'Z', "{line}");
    // A second run gets the next number; same inputs give the same compile artifact digest.
    let (_, r2) = repo.run(&[]);
    assert_eq!(r2["run"], 2);
    assert_eq!(
        job(&r2, "compile")["artifact"]["digest"],
        job(&r, "compile")["artifact"]["digest"],
        "reproducible tar"
    );
}

#[test]
fn events_of_the_run_are_in_the_sqlite_event_log() {
    let repo = Repo::new(&[("takt.yml", "jobs:\n  one: {script: [echo one]}\n")]);
    let (out, _) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = repo.events();
    // The commit's info is read beside the jobs: it comes once, at no fixed place.
    let infos: Vec<&takt_model::Event> = events.iter().filter(|e| e.kind.name() == "commit_info").collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    let takt_model::EventKind::CommitInfo {
        commit,
        author,
        subject,
        ..
    } = &infos[0].kind
    else {
        unreachable!()
    };
    assert_eq!(commit, &repo.rev("HEAD"));
    assert!(!author.is_empty() && !subject.is_empty(), "{infos:?}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.kind.name())
        .filter(|k| *k != "commit_info")
        .collect();
    assert_eq!(
        kinds,
        [
            "commit_seen",
            "run_queued",
            "run_started",
            "job_queued",
            "job_started",
            "log_stored",
            "job_finished",
            "run_finished"
        ]
    );
    assert!(events.iter().all(|e| e.run == Some(1)));
}

#[test]
fn a_failing_test_stage_stops_the_line() {
    let y = r#"
jobs:
  build: {stage: build, script: [echo built]}
  test-ok: {stage: test, script: ["sleep 0.3"]}
  test-bad: {stage: test, script: [echo failing, exit 3]}
  flaky-lint: {stage: test, script: [exit 1], allow_failure: true}
  package: {stage: package, script: [echo never]}
  report: {stage: .post, script: [echo reporting], when: on_failure}
  cleanup: {stage: .post, script: [echo cleanup], when: always}
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    // All three test jobs start together (a queued job would be skipped once the line stops).
    let (out, r) = repo.run(&["--jobs", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(r["status"], "failed");
    assert_eq!(job(&r, "test-bad")["status"], "failed");
    assert_eq!(job(&r, "test-bad")["exit_code"], 3);
    assert_eq!(job(&r, "test-ok")["status"], "success", "running jobs finish");
    assert_eq!(job(&r, "flaky-lint")["status"], "failed");
    assert_eq!(job(&r, "flaky-lint")["allow_failure"], true);
    assert_eq!(job(&r, "package")["status"], "skipped");
    assert_eq!(job(&r, "package")["reason"], "the line stopped: `test-bad` failed");
    assert_eq!(job(&r, "report")["status"], "success");
    assert_eq!(job(&r, "cleanup")["status"], "success");
}

#[test]
fn needs_make_a_dag_and_carry_artifacts() {
    let y = r#"
stages: [build, test, deploy]
jobs:
  slow:
    stage: build
    script: ["sleep 1", "echo slow > slow.txt"]
  fast:
    stage: build
    script: ["echo fast > fast.txt"]
    artifacts: {paths: [fast.txt]}
  after-fast:
    stage: test
    needs: [fast]
    script:
      - test -f fast.txt
      - test ! -e slow.txt
      - date +%s%N > started
    artifacts: {paths: [started]}
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    let (out, r) = repo.run(&["--jobs", "2"]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    let after = job(&r, "after-fast");
    let slow = job(&r, "slow");
    assert!(
        after["finished_at"].as_str().unwrap() < slow["finished_at"].as_str().unwrap(),
        "needs: does not wait for the whole stage\n{r:#}"
    );
}

#[test]
fn jobs_get_a_clean_environment_and_a_fresh_checkout() {
    let y = r#"
variables:
  FROM_FILE: "file-$CI_COMMIT_SHORT_SHA"
jobs:
  env:
    variables: {JOB_VAR: job}
    script:
      - env > "$CI_PROJECT_DIR/../env.txt"
      - 'test -z "$LEAKY_HOST_VAR"'
      - 'test -z "$TAKT_SECRET_KEY"'
      - 'test "$CI" = true'
      - 'test "$JOB_VAR" = job'
      - 'case "$FROM_FILE" in file-????????) ;; *) exit 9;; esac'
      - test -f committed.txt
      - test ! -e uncommitted.txt
      - test ! -e .git
      - echo scribble > committed.txt
"#;
    let repo = Repo::new(&[("takt.yml", y), ("committed.txt", "original")]);
    repo.write("uncommitted.txt", "local change");
    let out = takt()
        .arg("run")
        .arg(repo.path())
        .env("LEAKY_HOST_VAR", "leak")
        .env("TAKT_SECRET_KEY", "do-not-leak")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("committed.txt")).unwrap(),
        "original",
        "the user's tree is untouched"
    );
    // --dirty includes the uncommitted file and says so loudly.
    repo.write("takt.yml", "jobs:\n  d: {script: [test -f uncommitted.txt]}\n");
    let (out, r) = repo.run(&["--dirty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("UNCOMMITTED"), "{}", stderr(&out));
    assert_eq!(r["dirty"], true);
}

#[test]
fn a_timeout_kills_every_process_the_job_started_including_daemons() {
    let pids = tempfile::tempdir().unwrap();
    let y = format!(
        r#"
jobs:
  hang:
    timeout: 2s
    script:
      - sleep 300 & echo $! > {p}/bg
      - setsid sh -c 'echo $$ > {p}/setsid; exec sleep 300' &
      - sh -c '(sleep 300 & echo $! > {p}/double; ) &'
      - sleep 0.3; echo started
      - sleep 300
"#,
        p = pids.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    let t = std::time::Instant::now();
    let (out, r) = repo.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(30));
    let j = job(&r, "hang");
    assert_eq!(j["failure_reason"], "job_execution_timeout");
    let p = read_pids(pids.path());
    assert_eq!(p.len(), 3, "all three background processes wrote their pid");
    for pid in p {
        assert!(!alive(pid), "process {pid} outlived its job");
    }
    let log = std::fs::read_to_string(repo.data_dir().join(j["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("started") && log.contains("timed out after 2.0s"), "{log}");
    let work: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("takt-work-"))
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|e| e.path().to_string_lossy().contains("-hang-"))
        .collect();
    assert!(work.is_empty(), "the workspace is removed: {work:?}");
}

#[test]
fn a_daemon_left_behind_by_a_passing_job_is_killed() {
    let pids = tempfile::tempdir().unwrap();
    let y = format!(
        "jobs:\n  d:\n    script:\n      - setsid sh -c 'echo $$ > {}/daemon; exec sleep 300' > /dev/null 2>&1 &\n      - sleep 0.2\n",
        pids.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = read_pids(pids.path());
    assert_eq!(p.len(), 1);
    assert!(!alive(p[0]));
    let log = std::fs::read_to_string(repo.data_dir().join(job(&r, "d")["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("killed 1 process(es) the job left running"), "{log}");
}

#[test]
fn kill_9_of_takt_kills_the_jobs_too() {
    let pids = tempfile::tempdir().unwrap();
    let y = format!(
        "jobs:\n  long:\n    script:\n      - sleep 300 & echo $! > {p}/bg\n      - setsid sh -c 'echo $$ > {p}/setsid; exec sleep 300' &\n      - sleep 300\n",
        p = pids.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    let mut child = takt()
        .arg("run")
        .arg(repo.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the job to start its processes", Duration::from_secs(20), || {
        read_pids(pids.path()).len() == 2
    });
    let p = read_pids(pids.path());
    assert!(p.iter().all(|pid| alive(*pid)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    eventually(
        "every job process to die after takt was killed",
        Duration::from_secs(10),
        || p.iter().all(|pid| !alive(*pid)),
    );
    // The data directory is free again and the next run works.
    repo.write("takt.yml", "jobs:\n  ok: {script: [true]}\n");
    repo.git(&["commit", "-qam", "quick"]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["run"], 2);
}

#[test]
fn ctrl_c_cancels_the_run_with_exit_130() {
    let pids = tempfile::tempdir().unwrap();
    let y = format!(
        "jobs:\n  long:\n    script:\n      - sleep 300 & echo $! > {p}/bg\n      - sleep 300\n  later: {{stage: deploy, script: [true]}}\n",
        p = pids.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    // takt leads its own process group, as a shell's foreground job does; Ctrl-C on a terminal
    // signals that whole group.
    use std::os::unix::process::CommandExt;
    let child = takt()
        .arg("run")
        .arg(repo.path())
        .arg("--json")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the job to start", Duration::from_secs(20), || {
        read_pids(pids.path()).len() == 1
    });
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(job(&r, "long")["status"], "cancelled");
    assert_eq!(job(&r, "later")["status"], "cancelled");
    assert!(!alive(read_pids(pids.path())[0]));
}

#[test]
fn retry_that_passes_marks_the_job_flaky() {
    let marks = tempfile::tempdir().unwrap();
    let y = format!(
        "jobs:\n  wobbly:\n    retry: 2\n    variables: {{MARK: {}/m}}\n    script:\n      - if [ -f \"$MARK\" ]; then exit 0; fi\n      - touch \"$MARK\"; exit 1\n",
        marks.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = job(&r, "wobbly");
    assert_eq!(j["flaky"], true);
    assert_eq!(j["attempts"], 2);
}

#[test]
fn cache_misses_then_hits() {
    let y = r#"
jobs:
  deps:
    cache:
      key: {files: [deps.lock]}
      paths: [vendor/]
    script:
      - if [ -f vendor/lib ]; then echo reused; else mkdir -p vendor && echo fetched > vendor/lib; fi
"#;
    let repo = Repo::new(&[("takt.yml", y), ("deps.lock", "v1")]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(job(&r, "deps")["cache"]["hit"], false);
    assert_eq!(job(&r, "deps")["cache"]["saved"], true);
    let (_, r) = repo.run(&[]);
    assert_eq!(job(&r, "deps")["cache"]["hit"], true);
    let log = std::fs::read_to_string(repo.data_dir().join(job(&r, "deps")["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("reused"), "{log}");
    repo.commit(&[("deps.lock", "v2")], "bump");
    let (_, r) = repo.run(&[]);
    assert_eq!(job(&r, "deps")["cache"]["hit"], false, "a new lock file is a new key");
}

#[test]
fn matrix_jobs_and_only_one_job() {
    let y = r#"
jobs:
  build: {stage: build, script: [true]}
  test:
    stage: test
    parallel:
      matrix:
        - OS: [linux, bsd]
    script: ['test -n "$OS"']
  docs: {stage: test, script: [true]}
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "test [OS=linux]", "test [OS=bsd]", "docs"]);
    let (out, r) = repo.run(&["--job", "docs"]);
    assert!(out.status.success());
    let names: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "docs"], "docs and what it waits for");
}

#[test]
fn output_without_end_and_binary_garbage_keep_an_intact_capped_log() {
    let y = r#"
jobs:
  noisy:
    timeout: 3s
    script:
      - head -c 200000 /dev/urandom
      - yes 'an endless line of output'
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    let (out, r) = repo.run(&["--log-limit", "1MiB"]);
    assert_eq!(out.status.code(), Some(1));
    let j = job(&r, "noisy");
    assert_eq!(j["failure_reason"], "job_execution_timeout");
    assert_eq!(j["log_truncated"], true);
    let log = std::fs::read(repo.data_dir().join(j["log"].as_str().unwrap())).unwrap();
    assert!(log.len() < 1_100_000, "capped: {}", log.len());
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("log cut at 1048576 bytes"));
    assert!(
        text.contains("timed out after 3.0s"),
        "the end of the job is still recorded"
    );
    assert!(text.contains("more bytes of output were dropped"));
}

#[test]
fn the_coffee_test_names_the_bottleneck() {
    let y =
        "budget: 1s\njobs:\n  quick: {stage: build, script: [true]}\n  slow: {stage: test, script: ['sleep 1.2']}\n";
    let repo = Repo::new(&[("takt.yml", y)]);
    let out = takt().arg("run").arg(repo.path()).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("coffee test failed")
            && s.contains("Critical path: quick → slow")
            && s.contains("Bottleneck: `slow`"),
        "{s}"
    );
}

#[test]
fn rules_see_the_branch_and_the_changed_files() {
    let y = r#"
jobs:
  main-only:
    script: [true]
    rules:
      - if: $CI_COMMIT_BRANCH == "main"
  docs:
    script: [true]
    rules:
      - changes: [docs/**/*]
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    repo.commit(&[("src/x", "1")], "code");
    let (_, r) = repo.run(&[]);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r["excluded"][0][0], "docs");
    repo.git(&["checkout", "-qb", "feature"]);
    repo.commit(&[("docs/a.md", "1")], "docs");
    let (_, r) = repo.run(&[]);
    assert_eq!(r["branch"], "feature");
    let names: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs"]);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let not_repo = tempfile::tempdir().unwrap();
    let out = takt().arg("run").arg(not_repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a git repository"), "{}", stderr(&out));

    let repo = Repo::new(&[("README", "no pipeline")]);
    let out = takt().arg("run").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no takt.yml (nor .gitlab-ci.yml) in"),
        "{}",
        stderr(&out)
    );

    repo.commit(
        &[("takt.yml", "jobs:\n  a:\n    script: [true]\n    stage: tset\n")],
        "typo",
    );
    let out = takt().arg("run").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("takt.yml:4:12: error: job `a` uses stage `tset`") && e.contains("did you mean `test`?"),
        "{e}"
    );
    let runs = std::fs::read_dir(repo.data_dir().join("logs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "nothing ran");

    let out = takt()
        .arg("run")
        .arg(repo.path())
        .args(["--rev", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown revision `nope`"));

    let out = takt().arg("run").arg("--jobs").arg("0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_relative_data_directory_works_from_anywhere() {
    let repo = Repo::new(&[(
        "takt.yml",
        "jobs:\n  a: {script: ['echo hi > out.txt'], artifacts: {paths: [out.txt]}}\n",
    )]);
    let cwd = tempfile::tempdir().unwrap();
    let out = takt()
        .current_dir(cwd.path())
        .arg("run")
        .arg(repo.path())
        .args(["--data-dir", "rel/data", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cwd.path().join("rel/data/takt.db").is_file());
}

#[test]
fn one_process_owns_a_data_directory() {
    let pids = tempfile::tempdir().unwrap();
    let y = format!(
        "jobs:\n  hold: {{script: ['echo $$ > {}/p', 'sleep 300']}}\n",
        pids.path().display()
    );
    let repo = Repo::new(&[("takt.yml", &y)]);
    let mut first = takt()
        .arg("run")
        .arg(repo.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first run to start its job", Duration::from_secs(20), || {
        read_pids(pids.path()).len() == 1
    });
    let out = takt().arg("run").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("in use by another takt process (pid {})", first.id())),
        "{}",
        stderr(&out)
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn a_terminal_gets_a_live_view_of_running_jobs() {
    // `script` gives takt a real pseudo-terminal.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs `script` (util-linux)");
    }
    let repo = Repo::new(&[(
        "takt.yml",
        "jobs:\n  busy: {script: ['echo live-marker-line; sleep 1.5']}\n",
    )]);
    let cmd = format!("{} run {}", env!("CARGO_BIN_EXE_takt"), repo.path().display());
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let screen = String::from_utf8_lossy(&out.stdout);
    // A spinner line shows the job (bold) and its last log line while it runs.
    assert!(screen.contains("\u{1b}[1mbusy\u{1b}[0m"), "{screen:?}");
    assert!(
        screen.contains("\u{1b}[2mlive-marker-line "),
        "the last log line is shown: {screen:?}"
    );
    assert!(screen.contains("busy passed in"), "{screen:?}");
}

#[test]
fn gitlab_style_job_names_and_cache_keys_work() {
    let y = r#"
jobs:
  test/unit:
    script: [mkdir -p out, echo ok > out/r.txt, 'test "$CI_COMMIT_REF_SLUG" = feature-x-1']
    artifacts: {paths: [out/]}
    cache:
      key: deps-$CI_COMMIT_REF_SLUG
      paths: [out/]
"#;
    let repo = Repo::new(&[("takt.yml", y)]);
    repo.git(&["checkout", "-qb", "Feature/X_1"]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    let j = job(&r, "test/unit");
    assert_eq!(j["artifact"]["name"], "test-unit");
    assert_eq!(j["cache"]["key"], "deps-feature-x-1");
}

#[test]
fn steps_start_under_the_shim_beside_takt_or_under_takt_itself() {
    let y = "jobs:\n  who: {script: ['echo \"parent=$(basename $(readlink /proc/$PPID/exe))\"']}\n";
    let log_of = |out: &std::process::Output, repo: &Repo| {
        assert!(out.status.success(), "{}", stderr(out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        std::fs::read_to_string(repo.data_dir().join(job(&r, "who")["log"].as_str().unwrap())).unwrap()
    };
    // Beside the built takt there is takt-shim: steps start under it.
    let repo = Repo::new(&[("takt.yml", y)]);
    let (out, _) = repo.run(&[]);
    let log = log_of(&out, &repo);
    assert!(log.contains("parent=takt-shim\n"), "{log}");

    // A takt alone in its directory starts steps under itself (`takt __shim`).
    let alone = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = alone.path().join("takt");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_takt"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_takt"), &exe).unwrap();
    }
    let repo = Repo::new(&[("takt.yml", y)]);
    let out = std::process::Command::new(&exe)
        .env_remove("TAKT_DATA_DIR")
        .arg("run")
        .arg(repo.path())
        .arg("--json")
        .output()
        .unwrap();
    let log = log_of(&out, &repo);
    assert!(log.contains("parent=takt\n"), "{log}");
}
