//! Artifacts over HTTP for real: what a triggered run stored, listed, shown, downloaded whole
//! (verified while streaming) and by range; a corrupt blob is never served whole.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

mod common;
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
