//! Artifacts over HTTP for real: what a triggered run stored, listed, shown, downloaded whole
//! (verified while streaming) and by range; a corrupt blob is never served whole.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use sha2::Digest;
use takt_server::auth::Scope;

#[tokio::test]
async fn artifacts_are_listed_shown_and_downloaded_verified() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    let read = new_token(&s, &admin, Scope::Read).await;
    let yml =
        "jobs:\n  build:\n    script: ['head -c 1000000 /dev/urandom > app.bin']\n    artifacts: {paths: [app.bin]}\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, _) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(finished_run(&s, &read, "demo", 1).await["status"], "success");

    let list = get_json(&s, "/api/v1/artifacts?project=demo", &read).await;
    let a = &list["artifacts"][0];
    assert_eq!(
        (a["name"].as_str(), a["run"].as_u64()),
        (Some("build"), Some(1)),
        "{list}"
    );
    let version = a["version"].as_str().unwrap().to_string();
    let digest = a["digest"].as_str().unwrap().to_string();
    assert!(version.starts_with("1-"), "{version}");

    // The signed manifest, and the public key that verifies it (no token needed for the key).
    let m = get_json(&s, &format!("/api/v1/artifacts/build/{version}"), &read).await;
    assert_eq!(m["manifest"]["digest"], digest.as_str());
    assert_eq!(m["manifest"]["provenance"]["project"], "demo");
    // The same provenance as an in-toto statement with a SLSA v1 predicate.
    let st = &m["in_toto"];
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        st["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"]
            .as_str()
            .unwrap(),
        repo.rev("HEAD")
    );
    assert_eq!(
        st["predicate"]["buildDefinition"]["externalParameters"]["ref"],
        "refs/heads/main"
    );
    let keys: serde_json::Value = client()
        .get(format!("{}/api/v1/keys", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["algorithm"], "ed25519");

    // Whole: the exact bytes, ETag = digest; If-None-Match → 304.
    let url = format!("{}/api/v1/artifacts/build/{version}/blob", s.base);
    let res = client().get(&url).bearer_auth(&read).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{digest}\""));
    let body = res.bytes().await.unwrap();
    assert_eq!(body.len(), 1_000_000);
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))), digest);
    let res = client()
        .get(&url)
        .bearer_auth(&read)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    // A range.
    let res = client()
        .get(&url)
        .bearer_auth(&read)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 100-199/1000000");
    assert_eq!(&res.bytes().await.unwrap()[..], &body[100..200]);
    // Bad names: 400; unknown: 404; downloads are events.
    let st = get_status(&s, &format!("/api/v1/artifacts/a..b/{version}/blob"), &read).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let st = get_status(&s, "/api/v1/artifacts/build/9-nothing", &read).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let ev = get_json(&s, "/api/v1/events?kind=artifact_downloaded", &read).await;
    assert_eq!(ev["events"].as_array().unwrap().len(), 2, "a 304 is no download: {ev}");
    assert_eq!(ev["events"][0]["project"], "demo");
    // Lists and shows are reads too: each an event naming the token.
    let ev = get_json(&s, "/api/v1/events?kind=artifact_read", &read).await;
    let reads: Vec<(String, String)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["version"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(reads[0], ("list".to_string(), "-".to_string()), "{ev}");
    assert!(reads.contains(&("show".to_string(), version.clone())), "{ev}");

    // Corrupt the stored blob: the whole download is cut short, never complete; then it is
    // quarantined and the API says so.
    let hex = digest.trim_start_matches("sha256:");
    let blob = data.join("blobs/sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[999_999] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let got = match client().get(&url).bearer_auth(&read).send().await {
        Ok(res) => res.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    assert!(
        got.is_err() || got.as_ref().is_ok_and(|n| *n < 1_000_000),
        "a corrupt blob was served whole: {got:?}"
    );
    assert!(!blob.exists(), "the corrupt blob was quarantined");
    assert!(data.join("quarantine").join(hex).exists());
    let st = client().get(&url).bearer_auth(&read).send().await.unwrap().status();
    assert_eq!(st, StatusCode::GONE);
}

async fn put(
    s: &Server,
    token: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut r = client().put(format!("{}{path}", s.base)).bearer_auth(token).body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn nothing_in(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.count() == 0).unwrap_or(true)
}

#[tokio::test]
async fn pushes_are_immutable_checked_limited_and_leave_nothing_when_they_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[("TAKT_MAX_ARTIFACT_BYTES", "100000")]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let read = new_token(&s, &admin, Scope::Read).await;
    let bytes = b"artifact one\n".repeat(100);
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));

    // Only ci (and admin) may push.
    let (st, _) = put(&s, &read, "/api/v1/artifacts/app/1.0", bytes.clone(), &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, b) = put(
        &s,
        &ci,
        "/api/v1/artifacts/app/1.0?project=demo",
        bytes.clone(),
        &[("x-checksum-sha256", &digest)],
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["digest"], digest.as_str());
    // The same bytes again: a no-op. Other bytes: 409 naming both digests.
    let (st, b) = put(&s, &ci, "/api/v1/artifacts/app/1.0", bytes.clone(), &[]).await;
    assert_eq!((st, &b["unchanged"]), (StatusCode::OK, &serde_json::json!(true)), "{b}");
    let (st, b) = put(&s, &ci, "/api/v1/artifacts/app/1.0", b"other".to_vec(), &[]).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let e = b["error"].as_str().unwrap();
    assert!(e.contains(&digest) && e.contains("sha256:"), "{e}");
    // A claimed digest that does not match: 400 and nothing stored (RFC 3230 `Digest` too).
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (st, b) = put(
        &s,
        &ci,
        "/api/v1/artifacts/app/2.0",
        bytes.clone(),
        &[("x-checksum-sha256", &wrong)],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, _) = put(
        &s,
        &ci,
        "/api/v1/artifacts/app/2.0",
        bytes.clone(),
        &[("digest", "sha-256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        get_status(&s, "/api/v1/artifacts/app/2.0", &read).await,
        StatusCode::NOT_FOUND
    );
    // Two steps (OCI-like): a blob, then the artifact naming it; an unknown blob is refused.
    let r = client()
        .post(format!("{}/api/v1/blobs", s.base))
        .bearer_auth(&ci)
        .body(b"two step".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let blob: serde_json::Value = r.json().await.unwrap();
    let d = blob["digest"].as_str().unwrap().to_string();
    let (st, b) = put(&s, &ci, "/api/v1/artifacts/two/1", vec![], &[("x-takt-blob", &d)]).await;
    assert_eq!((st, b["size"].as_u64()), (StatusCode::CREATED, Some(8)), "{b}");
    let (st, _) = put(&s, &ci, "/api/v1/artifacts/two/2", vec![], &[("x-takt-blob", &wrong)]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Too large: 413 before anything is stored. Bad names: 400.
    let (st, _) = put(&s, &ci, "/api/v1/artifacts/big/1", vec![0u8; 100_001], &[]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, _) = put(&s, &ci, "/api/v1/artifacts/a..b/1", bytes.clone(), &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let long = "x".repeat(201);
    let (st, _) = put(&s, &ci, &format!("/api/v1/artifacts/{long}/1"), bytes.clone(), &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A client that says 50,000 bytes, sends 10 and goes away leaves nothing behind.
    {
        use std::io::Write;
        let host = s.base.trim_start_matches("http://");
        let mut c = std::net::TcpStream::connect(host).unwrap();
        write!(c, "PUT /api/v1/artifacts/cut/1 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {ci}\r\ncontent-length: 50000\r\n\r\n0123456789").unwrap();
        c.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(c);
    }
    until("the cut upload is cleaned up", || {
        let tmp = data.join("tmp");
        async move { nothing_in(&tmp) }
    })
    .await;
    assert_eq!(
        get_status(&s, "/api/v1/artifacts/cut/1", &read).await,
        StatusCode::NOT_FOUND
    );
    assert!(!data.join("manifests/big").exists() && !data.join("manifests/cut").exists());

    // The CLI: pull (verified, manifest beside it), verify offline, refuse to overwrite.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.bin");
    let cli = |args: &[&str]| {
        let mut c = takt();
        c.args(args).args(["--server", &s.base, "--token", &read]);
        c.output().unwrap()
    };
    let o = cli(&["artifact", "pull", "app@1.0", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let key = get_json(&s, "/api/v1/keys", &read).await["keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let o = cli(&["artifact", "verify", out.to_str().unwrap(), "--key", &key]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A tampered file, a tampered manifest, a wrong key: each fails, saying what.
    let manifest = work.path().join("app.bin.takt.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replace("\"demo\"", "\"evil\"")).unwrap();
    let o = cli(&["artifact", "verify", out.to_str().unwrap(), "--key", &key]);
    assert!(
        !o.status.success() && stderr(&o).contains("signature"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&manifest, &original).unwrap();
    let o = cli(&["artifact", "verify", out.to_str().unwrap(), "--key", &"ab".repeat(32)]);
    assert!(
        !o.status.success() && stderr(&o).contains("different key"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&out, b"tampered").unwrap();
    let o = cli(&["artifact", "verify", out.to_str().unwrap(), "--key", &key]);
    assert!(!o.status.success() && stderr(&o).contains("hash to"), "{}", stderr(&o));
    let o = cli(&["artifact", "pull", "app@1.0", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("refusing to overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"tampered");
    // Push from the CLI; ls shows it.
    let f = work.path().join("tool.sh");
    std::fs::write(&f, "#!/bin/sh\necho tool\n").unwrap();
    let o = takt()
        .args([
            "artifact",
            "push",
            f.to_str().unwrap(),
            "--as",
            "tool@3",
            "--project",
            "demo",
        ])
        .args(["--server", &s.base, "--token", &ci])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&["artifact", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tool", "two", "app"]);
    let o = cli(&["artifact", "verify", "tool@3"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test]
async fn gc_follows_retention_of_the_default_branch_and_fsck_finds_corrupt_and_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    let yml = "retention: {keep_last: 2}\njobs:\n  build:\n    script: ['head -c 1000 /dev/urandom > app.bin']\n    artifacts: {paths: [app.bin]}\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    for n in 1..=3u64 {
        let (st, _) = post_json(
            &s,
            "/api/v1/projects/demo/trigger",
            &admin,
            serde_json::json!({"force": true}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert_eq!(finished_run(&s, &admin, "demo", n).await["status"], "success");
    }
    let (st, _) = put(
        &s,
        &admin,
        "/api/v1/artifacts/other/1?project=elsewhere",
        b"kept: no policy".to_vec(),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let list = get_json(&s, "/api/v1/artifacts?project=demo", &admin).await;
    let versions: Vec<String> = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_str().unwrap().to_string())
        .collect();
    let digests: Vec<String> = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 3);
    let oldest = &versions[2];

    let cli = |args: &[&str]| {
        let mut c = takt();
        c.args(args).args(["--server", &s.base, "--token", &admin]);
        c.output().unwrap()
    };
    // Dry run: says what, deletes nothing.
    let o = cli(&["artifact", "gc", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gone: Vec<&str> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_str().unwrap())
        .collect();
    assert_eq!(gone, [oldest.as_str()], "{v}");
    assert_eq!(v["blobs"], serde_json::json!([digests[2]]));
    assert_eq!(
        get_status(&s, &format!("/api/v1/artifacts/build/{oldest}"), &admin).await,
        StatusCode::OK
    );
    // Applied: the version and its blob are gone, recorded; the others stay.
    let o = cli(&["artifact", "gc", "--apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deleted build@"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        get_status(&s, &format!("/api/v1/artifacts/build/{oldest}"), &admin).await,
        StatusCode::NOT_FOUND
    );
    for v in &versions[..2] {
        assert_eq!(
            get_status(&s, &format!("/api/v1/artifacts/build/{v}"), &admin).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_status(&s, "/api/v1/artifacts/other/1", &admin).await,
        StatusCode::OK
    );
    let blob = |d: &str| {
        let hex = d.trim_start_matches("sha256:").to_string();
        data.join("blobs/sha256").join(&hex[..2]).join(hex)
    };
    assert!(!blob(&digests[2]).exists());
    let ev = get_json(&s, "/api/v1/events?kind=artifact_deleted", &admin).await;
    assert_eq!(ev["events"][0]["version"], oldest.as_str());

    // fsck: clean, then one corrupt and one missing blob, each reported; exit code 1.
    let o = cli(&["artifact", "fsck"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(blob(&digests[0]), b"bit rot").unwrap();
    std::fs::remove_file(blob(&digests[1])).unwrap();
    let o = cli(&["artifact", "fsck"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("CORRUPT {}", digests[0])), "{out}");
    assert!(
        out.contains(&format!("MISSING {} of build@{}", digests[1], versions[1])),
        "{out}"
    );
    assert!(
        data.join("quarantine")
            .join(digests[0].trim_start_matches("sha256:"))
            .exists()
    );
    // The quarantined blob is CORRUPT once, its version QUARANTINED, not MISSING as well.
    assert!(
        out.contains(&format!("QUARANTINED {} of build@{}", digests[0], versions[0])),
        "{out}"
    );
    assert!(!out.contains(&format!("MISSING {}", digests[0])), "{out}");
    // Checked again: nothing is corrupt now, the version stays quarantined (still exit 1).
    let o = cli(&["artifact", "fsck", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["corrupt"], serde_json::json!([]), "{v}");
    assert_eq!(v["quarantined"][0]["digest"], digests[0].as_str(), "{v}");
    assert_eq!(v["missing"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["ok"], false);
}

#[tokio::test]
async fn a_configured_object_store_keeps_a_copy_that_another_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/objects", dir.path().display());
    let env = [("TAKT_ARTIFACT_STORE", store.as_str())];
    let a = start(&dir.path().join("a"), &env);
    let admin_a = a.printed_token.clone().unwrap();
    let ci = new_token(&a, &admin_a, Scope::Ci).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = client()
        .put(format!("{}/api/v1/artifacts/app/1.0.0?project=web", a.base))
        .bearer_auth(&ci)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    until("the artifact is replicated", || async {
        let ev = get_json(&a, "/api/v1/events?kind=artifact_replicated", &admin_a).await;
        ev["events"][0]["ok"] == true
    })
    .await;
    let ev = get_json(&a, "/api/v1/events?kind=artifact_replicated", &admin_a).await;
    assert_eq!(ev["events"][0]["target"], store.as_str());

    // Server B has an empty data directory and the same object store.
    let b = start(&dir.path().join("b"), &env);
    let admin_b = b.printed_token.clone().unwrap();
    let m = get_json(&b, "/api/v1/artifacts/app/1.0.0", &admin_b).await;
    assert_eq!(m["manifest"]["provenance"]["project"], "web", "{m}");
    let got = client()
        .get(format!("{}/api/v1/artifacts/app/1.0.0/blob", b.base))
        .bearer_auth(&admin_b)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &body[..]);
    // Signed by A's key: B's key differs, so B's verify says so (the manifest names its key).
    let key_a = get_json(&a, "/api/v1/keys", &admin_a).await["keys"][0]["public_key"].clone();
    assert_eq!(m["key"], key_a);

    // A bad store URL stops the server at start with the reason (exit code 2).
    let out = takt()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("c"))
        .env("TAKT_ARTIFACT_STORE", "ftp://nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use s3://BUCKET/PREFIX or file:///PATH"));
}
