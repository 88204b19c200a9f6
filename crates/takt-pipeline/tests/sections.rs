//! `schedules:` and `notify:`: what they accept and how they refuse.

#![allow(clippy::unwrap_used)]

fn errors(yml: &str) -> String {
    match takt_pipeline::parse("takt.yml", yml.as_bytes()) {
        Ok(_) => String::new(),
        Err(d) => d.to_string(),
    }
}

#[test]
fn schedules_take_a_cron_string_or_a_mapping() {
    let p = takt_pipeline::parse(
        "takt.yml",
        b"schedules:\n  nightly: \"0 3 * * *\"\n  weekly: {cron: \"0 4 * * MON\", branch: release, timezone: Europe/Berlin}\njobs:\n  a: {script: [true]}\n",
    )
    .unwrap();
    assert_eq!(p.schedules.len(), 2);
    assert_eq!(p.schedules[1].branch.as_deref(), Some("release"));
    assert_eq!(p.schedules[1].timezone.as_deref(), Some("Europe/Berlin"));
    assert!(p.reserved.is_empty());
}

#[test]
fn bad_schedules_and_subscribers_say_where_and_why() {
    let e = errors("schedules:\n  nightly: \"61 3 * * *\"\njobs:\n  a: {script: [true]}\n");
    assert!(
        e.contains("takt.yml:2:12") && e.contains("not a cron expression"),
        "{e}"
    );
    let e = errors("schedules:\n  nightly: {branch: main}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("has no `cron`"), "{e}");
    let e = errors("schedules:\n  nightly: {cron: \"0 3 * * *\", brnch: x}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("brnch"), "{e}");
    let e = errors("notify: {webhook: http://x}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("`notify` must be a list"), "{e}");
    let e = errors("notify:\n  - webhook: ftp://x\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("takt.yml:2:14") && e.contains("http://"), "{e}");
    let e = errors("notify:\n  - events: [run_finished]\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("needs `webhook: URL` or `slack: URL`"), "{e}");
    let p = takt_pipeline::parse(
        "takt.yml",
        b"notify:\n  - webhook: http://127.0.0.1:1/x\n    events: [run_finished]\n  - slack: https://hooks.example/y\njobs:\n  a: {script: [true]}\n",
    )
    .unwrap();
    assert_eq!(p.notify.len(), 2);
    assert!(p.notify[1].slack);
}
