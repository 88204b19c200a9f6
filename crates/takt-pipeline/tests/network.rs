//! The `network` job keyword: a boolean, true by default.

#![allow(clippy::unwrap_used)]

fn jobs(yml: &str) -> Vec<takt_pipeline::Job> {
    takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap().jobs
}

#[test]
fn network_is_on_unless_a_job_says_false() {
    let j = jobs(
        "jobs:\n  a: {script: [true]}\n  b: {script: [true], network: false}\n  c: {script: [true], network: true}\n",
    );
    let by = |n: &str| j.iter().find(|x| x.name == n).unwrap().network;
    assert!(by("a") && !by("b") && by("c"));
}

#[test]
fn network_must_be_a_boolean() {
    let e = takt_pipeline::parse("takt.yml", b"jobs:\n  a: {script: [true], network: off}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("takt.yml:2:32") && e.contains("true or false"), "{e}");
}
