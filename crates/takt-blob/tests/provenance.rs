//! The provenance statement (`Manifest::in_toto`) is a strict in-toto Statement v1 with a
//! SLSA Provenance v1 predicate: checked against the JSON schema in
//! `tests/fixtures/slsa-provenance-v1.schema.json` (formats such as `uri` and `date-time`
//! enforced) by Ajv, the most used JSON-schema validator, run by Node
//! (`tests/fixtures/validate.cjs`; npm pins it in `crates/takt/tests/npm`, installed by
//! test.sh), for built, pushed and dependent artifacts, with each kind of repository address.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use serde_json::Value;
use takt_blob::{BUILDER_ID, Manifest, Provenance, git_uri};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Each document's schema errors, as Ajv reports them.
fn errors(docs: &[&Value]) -> Vec<Vec<String>> {
    use std::io::Write;
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = here.join("../takt/tests/npm/node_modules");
    assert!(
        modules.join("ajv-formats").is_dir(),
        "{} has no ajv-formats: run ./test.sh, or `npm ci --prefix crates/takt/tests/npm`",
        modules.display()
    );
    let mut child = std::process::Command::new("node")
        .arg(here.join("tests/fixtures/validate.cjs"))
        .arg(&modules)
        .arg(here.join("tests/fixtures/slsa-provenance-v1.schema.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) runs the schema validator");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(docs).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the validator failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(st: &Value) {
    let e = errors(&[st]);
    assert!(e[0].is_empty(), "{:#?}\n{st:#}", e[0]);
}

fn built(repository: &str) -> Manifest {
    Manifest {
        name: "app".into(),
        version: "3-0123456".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
        size: 10,
        media_type: "application/octet-stream".into(),
        path: Some("app".into()),
        expires_at: None,
        restricted: false,
        provenance: Provenance {
            build_type: "https://takt.dev/provenance/run/v1".into(),
            builder: "takt 0.1.0".into(),
            project: "web".into(),
            repository: repository.into(),
            commit: COMMIT.into(),
            branch: Some("main".into()),
            tag: None,
            run: 3,
            job: "package".into(),
            started_at: "2026-12-01T10:00:00Z".into(),
            finished_at: "2026-12-01T10:00:05Z".into(),
            inputs: vec![format!("sha256:{}", "cd".repeat(32))],
            dirty: false,
            pushed_by: None,
        },
    }
}

#[test]
fn built_artifacts_give_a_valid_statement_with_uris_for_every_kind_of_repository() {
    for (repository, uri) in [
        ("/srv/git/web", Some("git+file:///srv/git/web")),
        ("file:///srv/git/web", Some("git+file:///srv/git/web")),
        (
            "https://forge.example/team/web.git",
            Some("git+https://forge.example/team/web.git"),
        ),
        (
            "ssh://git@forge.example/team/web.git",
            Some("git+ssh://git@forge.example/team/web.git"),
        ),
        (
            "git@forge.example:team/web.git",
            Some("git+ssh://git@forge.example/team/web.git"),
        ),
        ("", None),
    ] {
        assert_eq!(git_uri(repository).as_deref(), uri, "{repository}");
        let st = built(repository).in_toto();
        check(&st);
        let p = &st["predicate"];
        assert_eq!(p["runDetails"]["builder"]["id"], BUILDER_ID);
        assert_eq!(p["runDetails"]["builder"]["version"]["takt"], "0.1.0");
        let source = &p["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(source["digest"]["gitCommit"], COMMIT);
        assert_eq!(source["uri"].as_str(), uri, "{st:#}");
        assert_eq!(p["buildDefinition"]["internalParameters"]["run"], 3);
        assert_eq!(p["runDetails"]["metadata"]["invocationId"], "web/3/package");
    }
}

#[test]
fn a_pushed_artifact_says_who_pushed_it_and_claims_no_run() {
    let mut m = built("");
    m.provenance.build_type = "https://takt.dev/provenance/push/v1".into();
    m.provenance.pushed_by = Some("release-bot".into());
    m.provenance.run = 0;
    m.provenance.job = "push".into();
    m.provenance.inputs.clear();
    let st = m.in_toto();
    check(&st);
    let d = &st["predicate"]["buildDefinition"];
    assert_eq!(d["externalParameters"]["pushedBy"], "release-bot");
    assert_eq!(d["externalParameters"]["commit"], COMMIT, "what the pusher declared");
    assert!(d.get("internalParameters").is_none(), "{st:#}");
    assert!(d["externalParameters"].get("repository").is_none(), "{st:#}");
    let meta = &st["predicate"]["runDetails"]["metadata"];
    assert!(meta.get("invocationId").is_none(), "no run: {st:#}");
    // Nothing declared at all: still valid, with no source to name.
    m.provenance.commit.clear();
    m.provenance.branch = None;
    let st = m.in_toto();
    check(&st);
    assert_eq!(
        st["predicate"]["buildDefinition"]["resolvedDependencies"],
        serde_json::json!([])
    );
}

#[test]
fn the_schema_refuses_what_strict_slsa_refuses() {
    let good = built("/srv/git/web").in_toto();
    check(&good);
    let bad = |at: &[&str], v: &str| {
        let mut b = good.clone();
        let mut x = &mut b;
        for k in at {
            x = match k.parse::<usize>() {
                Ok(i) => &mut x[i],
                Err(_) => &mut x[*k],
            };
        }
        *x = v.into();
        b
    };
    let cases = [
        (
            "a builder id that is not a URI",
            bad(&["predicate", "runDetails", "builder", "id"], "takt 0.1.0"),
        ),
        (
            "a dependency uri that is a bare path",
            bad(
                &["predicate", "buildDefinition", "resolvedDependencies", "0", "uri"],
                "/srv/git/web",
            ),
        ),
        (
            "a time that is not RFC 3339",
            bad(&["predicate", "runDetails", "metadata", "startedOn"], "yesterday"),
        ),
        (
            "a field SLSA does not define",
            bad(&["predicate", "runDetails", "builder", "name"], "takt"),
        ),
    ];
    let docs: Vec<&Value> = cases.iter().map(|(_, d)| d).collect();
    for ((what, _), e) in cases.iter().zip(errors(&docs)) {
        assert!(!e.is_empty(), "the schema accepts {what}");
    }
}

#[test]
fn manifests_signed_before_pushed_by_existed_still_verify() {
    let m = built("/srv/git/web");
    let json = serde_json::to_value(&m).unwrap();
    assert!(
        json["provenance"].get("pushed_by").is_none(),
        "absent when none: {json}"
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = takt_blob::Keyring::load_or_create(dir.path()).unwrap();
    let signed = keys.sign(m).unwrap();
    signed.verify(None).unwrap();
}
