//! The object-store side of the artifact store, through `object_store` for real (a
//! `LocalFileSystem` store in another directory: the same code path as S3).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use takt_blob::objects::ObjectMirror;
use takt_blob::{BlobError, Keyring, LocalBlobs, Manifest, ManifestStore, Provenance};

fn manifest(version: &str, digest: &str, size: u64) -> Manifest {
    Manifest {
        name: "app".into(),
        version: version.into(),
        digest: digest.into(),
        size,
        media_type: "application/octet-stream".into(),
        path: None,
        expires_at: None,
        restricted: false,
        provenance: Provenance {
            build_type: "https://takt.dev/run/v1".into(),
            builder: "takt test".into(),
            project: "p".into(),
            repository: "/r".into(),
            commit: "abc".into(),
            branch: Some("main".into()),
            tag: None,
            run: 1,
            job: "build".into(),
            started_at: "2026-11-24T00:00:00Z".into(),
            finished_at: "2026-11-24T00:00:01Z".into(),
            inputs: vec![],
            dirty: false,
            pushed_by: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_to_the_object_store_and_come_back_verified() {
    let (a, b, objects) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let url = format!("file://{}/takt", objects.path().display());
    let mirror = ObjectMirror::from_url(&url).unwrap();

    // Store A: a 20 MiB blob (several upload parts) and its signed manifest.
    let blobs = LocalBlobs::open(a.path()).unwrap();
    let bytes: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let blob = blobs.ingest(&bytes[..]).unwrap();
    let keys = Keyring::load_or_create(a.path()).unwrap();
    let signed = keys.sign(manifest("1", &blob.digest, blob.size)).unwrap();
    ManifestStore::new(a.path()).put(&signed).unwrap();
    mirror.put_artifact(&blobs, &signed).await.unwrap();
    // The object store has the local layout.
    let hex = blob.digest.trim_start_matches("sha256:");
    let there = objects.path().join(format!("takt/blobs/sha256/{}/{hex}", &hex[..2]));
    assert_eq!(std::fs::read(&there).unwrap(), bytes);
    assert!(objects.path().join("takt/manifests/app/1.json").exists());
    // Putting it again changes nothing; other bytes under the same version are refused.
    mirror.put_artifact(&blobs, &signed).await.unwrap();
    let other = blobs.ingest(&b"other"[..]).unwrap();
    let forged = keys.sign(manifest("1", &other.digest, other.size)).unwrap();
    match mirror.put_artifact(&blobs, &forged).await {
        Err(BlobError::Conflict { existing, new, .. }) => {
            assert_eq!((existing, new), (blob.digest.clone(), other.digest.clone()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Store B, empty: fetches the manifest and the blob, re-hashed on the way in.
    let blobs_b = LocalBlobs::open(b.path()).unwrap();
    let manifests_b = ManifestStore::new(b.path());
    let m = mirror.fetch_manifest(&manifests_b, "app", "1").await.unwrap().unwrap();
    m.verify(Some(&keys.public_key_hex())).unwrap();
    assert_eq!(manifests_b.get("app", "1").unwrap().unwrap(), signed);
    let got = mirror.fetch_blob(&blobs_b, &blob.digest).await.unwrap().unwrap();
    assert_eq!(got, blob);
    assert_eq!(std::fs::read(blobs_b.path_of(&blob.digest).unwrap()).unwrap(), bytes);
    assert!(mirror.fetch_manifest(&manifests_b, "app", "2").await.unwrap().is_none());

    // A corrupted object is refused and nothing is stored.
    let mut bad = bytes.clone();
    bad[12345] ^= 1;
    std::fs::write(&there, &bad).unwrap();
    let c = tempfile::tempdir().unwrap();
    let blobs_c = LocalBlobs::open(c.path()).unwrap();
    match mirror.fetch_blob(&blobs_c, &blob.digest).await {
        Err(BlobError::Mismatch { .. }) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(!blobs_c.path_of(&blob.digest).unwrap().exists());
    assert!(blobs_c.all().is_empty());

    // Bad URLs say what to write.
    for url in ["ftp://x", "file://relative", "s3://"] {
        let e = ObjectMirror::from_url(url).unwrap_err().to_string();
        assert!(e.contains(url), "{e}");
    }
}
