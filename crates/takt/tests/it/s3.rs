//! The artifact store on a real S3-compatible server: moto's (`moto_server`, installed by
//! `./test.sh` from PyPI into `target/test-venv`), spoken to by the `object_store` crate's S3
//! client over HTTP with signed requests. Two `takt serve` share the bucket: what one stored,
//! another serves from an empty data directory, whole and by range; a corrupted object is
//! refused and nothing is stored.

use crate::common::server::*;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as Key};
use reqwest::StatusCode;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

/// A moto server on a local port, stopped when dropped.
struct Moto {
    _child: crate::common::KillOnDrop,
    base: String,
}

fn moto_server() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("TAKT_TEST_MOTO_SERVER") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/moto_server");
    assert!(
        venv.exists(),
        "the S3 test needs moto's server: run ./test.sh (it installs `moto[server]` into \
         target/test-venv), or set TAKT_TEST_MOTO_SERVER to a moto_server"
    );
    venv
}

async fn start_moto() -> Moto {
    let port = free_port();
    let child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto {
        _child: crate::common::KillOnDrop(child),
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client().get(&moto.base).send().await.is_ok() {
            return moto;
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on {} in 30 s",
            moto.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bucket as another S3 client sees it (signed requests with the same credentials).
fn bucket(moto: &Moto) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.base)
        .with_bucket_name("takt-artifacts")
        .with_region("us-east-1")
        .with_access_key_id("takt-test")
        .with_secret_access_key("takt-test-secret")
        .with_allow_http(true)
        .build()
        .unwrap()
}

async fn read(s3: &impl ObjectStore, key: &str) -> Vec<u8> {
    let got = s3.get(&Key::from(key)).await.unwrap_or_else(|e| panic!("{key}: {e}"));
    got.bytes().await.unwrap().to_vec()
}

async fn push(s: &Server, token: &str, name: &str, version: &str, body: &[u8]) {
    let r = client()
        .put(format!("{}/api/v1/artifacts/{name}/{version}?project=web", s.base))
        .bearer_auth(token)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
}

async fn replicated(s: &Server, token: &str, n: usize) -> serde_json::Value {
    until("the artifacts are replicated", || async {
        let ev = get_json(s, "/api/v1/events?kind=artifact_replicated", token).await;
        ev["events"].as_array().is_some_and(|e| e.len() >= n)
    })
    .await;
    get_json(s, "/api/v1/events?kind=artifact_replicated", token).await
}

async fn blob(s: &Server, token: &str, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_live_in_a_real_s3_bucket_that_another_server_serves() {
    let moto = start_moto().await;
    // The bucket, made by the operator beforehand (takt does not create buckets).
    let r = client()
        .put(format!("{}/takt-artifacts", moto.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let dir = tempfile::tempdir().unwrap();
    let store = "s3://takt-artifacts/prod/eu";
    let env = [
        ("TAKT_ARTIFACT_STORE", store),
        ("AWS_ENDPOINT_URL", moto.base.as_str()),
        ("AWS_ACCESS_KEY_ID", "takt-test"),
        ("AWS_SECRET_ACCESS_KEY", "takt-test-secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let a = start(&dir.path().join("a"), &env);
    let admin_a = a.printed_token.clone().unwrap();
    let ci = new_token(&a, &admin_a, Scope::Ci).await;

    // 20 MiB: the S3 client uploads it in several 8 MiB parts (a multipart upload).
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    push(&a, &ci, "app", "1.0.0", &big).await;
    push(&a, &ci, "app", "1.0.1", b"small artifact\n").await;
    let ev = replicated(&a, &admin_a, 2).await;
    for e in ev["events"].as_array().unwrap() {
        assert_eq!(e["ok"], true, "{e}");
        assert_eq!(e["target"], store, "{e}");
    }

    // In the bucket under the prefix, with the local layout.
    let s3 = bucket(&moto);
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&s3, "prod/eu/manifests/app/1.0.0.json").await).unwrap();
    let digest = manifest["manifest"]["digest"].as_str().unwrap().to_string();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let blob_key = format!("prod/eu/blobs/sha256/{}/{hex}", &hex[..2]);
    let stored = read(&s3, &blob_key).await;
    assert_eq!(stored.len(), big.len());
    assert!(stored == big, "the bucket holds other bytes than were pushed");

    // Server B: an empty data directory, the same bucket. It serves A's artifact, whole and
    // by range, signed by A's key.
    let b = start(&dir.path().join("b"), &env);
    let admin_b = b.printed_token.clone().unwrap();
    let shown = get_json(&b, "/api/v1/artifacts/app/1.0.0", &admin_b).await;
    assert_eq!(shown["manifest"]["digest"], digest.as_str(), "{shown}");
    let key_a = get_json(&a, "/api/v1/keys", &admin_a).await["keys"][0]["public_key"].clone();
    assert_eq!(shown["key"], key_a);
    let whole = blob(&b, &admin_b, "/api/v1/artifacts/app/1.0.0/blob", None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.bytes().await.unwrap().as_ref() == &big[..]);
    let part = blob(
        &b,
        &admin_b,
        "/api/v1/artifacts/app/1.0.0/blob",
        Some("bytes=9000000-9000099"),
    )
    .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &big[9_000_000..9_000_100]);
    // A version nobody stored is 404 on B too.
    let none = blob(&b, &admin_b, "/api/v1/artifacts/app/9.9.9/blob", None).await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);

    // Someone changes the bytes in the bucket: server C (empty, same bucket) refuses them,
    // says why, and keeps nothing; B, which holds its own verified copy, still serves it.
    let mut bad = big.clone();
    bad[123_456] ^= 0x40;
    s3.put(&Key::from(blob_key.as_str()), PutPayload::from(bad))
        .await
        .unwrap();
    let c_dir = dir.path().join("c");
    let c = start(&c_dir, &env);
    let admin_c = c.printed_token.clone().unwrap();
    let refused = blob(&c, &admin_c, "/api/v1/artifacts/app/1.0.0/blob", None).await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let why = refused.text().await.unwrap();
    assert!(why.contains(&digest), "{why}");
    let kept = c_dir.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
    assert!(!kept.exists(), "a corrupted object was stored at {}", kept.display());
    let again = blob(&b, &admin_b, "/api/v1/artifacts/app/1.0.0/blob", None).await;
    assert!(again.bytes().await.unwrap().as_ref() == &big[..]);
    // The other artifact, untouched, still comes through C.
    let small = blob(&c, &admin_c, "/api/v1/artifacts/app/1.0.1/blob", None).await;
    assert_eq!(small.bytes().await.unwrap().as_ref(), b"small artifact\n");

    // And the other way round: what C stores, A (which never saw it) serves.
    let ci_c = new_token(&c, &admin_c, Scope::Ci).await;
    push(&c, &ci_c, "app", "2.0.0", b"from c\n").await;
    let ev = replicated(&c, &admin_c, 1).await;
    assert_eq!(ev["events"][0]["ok"], true, "{ev}");
    let listed = get_json(&a, "/api/v1/artifacts/app/2.0.0", &admin_a).await;
    assert_eq!(listed["manifest"]["size"], 7, "A reads what C stored: {listed}");
}
