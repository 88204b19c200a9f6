//! The artifact store's object-storage side, through the `object_store` crate's one interface.
//!
//! Blobs and manifests are always written to the local disk first ([`LocalBlobs`],
//! [`ManifestStore`]: hashed while written, fsynced, renamed — the layout an
//! `object_store::local::LocalFileSystem` rooted at the data directory reads as objects). With an
//! object store configured (`s3://bucket/prefix` for any S3-compatible store, or `file:///path`
//! for another disk), each stored artifact is also put there under the same keys
//! (`blobs/sha256/ab/<hex>`, `manifests/<name>/<version>.json`), and what the local disk lacks
//! is fetched from there — the blob re-hashed on its way in — so a server with an empty data
//! directory can serve and deploy what another one stored.

use crate::{BlobError, BlobRef, LocalBlobs, ManifestStore, SignedManifest, digest_hex};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::io::Read;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Pieces a blob is uploaded in (S3's multipart minimum is 5 MiB).
const PART: usize = 8 << 20;

/// An object store that holds a copy of every artifact.
#[derive(Debug, Clone)]
pub struct ObjectMirror {
    store: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    /// Where, as configured (credentials are never part of it).
    pub url: String,
}

fn err(doing: &'static str, what: impl std::fmt::Display, e: object_store::Error) -> BlobError {
    BlobError::Remote(format!("{doing} {what}: {e}"))
}

impl ObjectMirror {
    /// `s3://BUCKET[/PREFIX]` (credentials, region and endpoint from the usual `AWS_*`
    /// variables, e.g. `AWS_ENDPOINT_URL` for an S3-compatible server; plain http is allowed for
    /// endpoints on this machine) or `file:///ABSOLUTE/PATH`.
    pub fn from_url(url: &str) -> Result<ObjectMirror, BlobError> {
        let _ = rustls::crypto::ring::default_provider().install_default(); // TLS on ring: see Cargo.toml
        let bad = |why: &str| BlobError::Remote(format!("artifact store `{url}`: {why}"));
        let (store, rest): (Arc<dyn ObjectStore>, &str) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("name the bucket: s3://BUCKET/PREFIX"));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(true)
                .build()
                .map_err(|e| bad(&e.to_string()))?;
            (Arc::new(s3), prefix)
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file:// store needs an absolute path (file:///srv/takt-objects)"));
            }
            std::fs::create_dir_all(path).map_err(|e| bad(&e.to_string()))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|e| bad(&e.to_string()))?;
            (Arc::new(fs), "")
        } else {
            return Err(bad("use s3://BUCKET/PREFIX or file:///PATH"));
        };
        Ok(ObjectMirror {
            store,
            prefix: rest.split('/').filter(|p| !p.is_empty()).map(String::from).collect(),
            url: url.to_string(),
        })
    }

    fn key<'a>(&'a self, parts: impl IntoIterator<Item = &'a str>) -> ObjectPath {
        ObjectPath::from_iter(self.prefix.iter().map(String::as_str).chain(parts))
    }

    fn blob_key(&self, digest: &str) -> Result<ObjectPath, BlobError> {
        let hex = digest_hex(digest)?;
        Ok(self.key(["blobs", "sha256", &hex[..2], hex]))
    }

    fn manifest_key(&self, name: &str, version: &str) -> ObjectPath {
        let file = format!("{version}.json");
        self.key(["manifests", name, file.as_str()])
    }

    /// Puts a stored artifact (its blob, then its signed manifest) into the object store.
    /// A blob already there is not sent again; a manifest is created once and never replaced.
    pub async fn put_artifact(&self, blobs: &LocalBlobs, m: &SignedManifest) -> Result<(), BlobError> {
        let digest = &m.manifest.digest;
        let key = self.blob_key(digest)?;
        if self.store.head(&key).await.is_err() {
            let path = blobs.path_of(digest)?;
            let mut f = tokio::fs::File::open(&path).await.map_err(|e| BlobError::Io {
                doing: "reading",
                path: path.clone(),
                source: e,
            })?;
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| err("starting the upload of", digest, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                w.wait_for_capacity(2).await.map_err(|e| err("uploading", digest, e))?;
                let n = f.read(&mut buf).await.map_err(|e| BlobError::Io {
                    doing: "reading",
                    path: path.clone(),
                    source: e,
                })?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(|e| err("uploading", digest, e))?;
        }
        let body = serde_json::to_vec_pretty(m).map_err(|e| BlobError::Remote(e.to_string()))?;
        let key = self.manifest_key(&m.manifest.name, &m.manifest.version);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.put_opts(&key, PutPayload::from(body), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.get_manifest(&m.manifest.name, &m.manifest.version).await? {
                    Some(there) if there.manifest.digest == *digest => Ok(()),
                    Some(there) => Err(BlobError::Conflict {
                        name: m.manifest.name.clone(),
                        version: m.manifest.version.clone(),
                        existing: there.manifest.digest,
                        new: digest.clone(),
                    }),
                    None => Ok(()),
                }
            }
            Err(e) => Err(err("storing the manifest of", &m.manifest.name, e)),
        }
    }

    /// A manifest from the object store, if it has one.
    pub async fn get_manifest(&self, name: &str, version: &str) -> Result<Option<SignedManifest>, BlobError> {
        let key = self.manifest_key(name, version);
        match self.store.get(&key).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| err("reading", &key, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| BlobError::Remote(format!("{key} is not a manifest: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err("reading", &key, e)),
        }
    }

    /// Fetches a blob the local disk lacks into it, hashed on its way in (other bytes are
    /// refused and nothing is stored). `Ok(None)`: the object store does not have it either.
    pub async fn fetch_blob(&self, blobs: &LocalBlobs, digest: &str) -> Result<Option<BlobRef>, BlobError> {
        let key = self.blob_key(digest)?;
        let mut stream = match self.store.get(&key).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err("reading", &key, e)),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
        let blobs = blobs.clone();
        let expected = digest.to_string();
        let writer =
            tokio::task::spawn_blocking(move || blobs.ingest_expecting(ChannelReader::new(rx), Some(&expected)));
        while let Some(chunk) = stream.next().await {
            let item = chunk
                .map(|b| b.to_vec())
                .map_err(|e| std::io::Error::other(e.to_string()));
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
        drop(tx);
        writer.await.map_err(|e| BlobError::Remote(e.to_string()))?.map(Some)
    }

    /// Copies a manifest the local store lacks from the object store (its signature is checked
    /// by whoever reads it, as for every manifest).
    pub async fn fetch_manifest(
        &self,
        manifests: &ManifestStore,
        name: &str,
        version: &str,
    ) -> Result<Option<SignedManifest>, BlobError> {
        let Some(m) = self.get_manifest(name, version).await? else {
            return Ok(None);
        };
        if m.manifest.name != name || m.manifest.version != version {
            return Err(BlobError::Remote(format!(
                "the object store's manifest for {name}@{version} names {}@{}",
                m.manifest.name, m.manifest.version
            )));
        }
        manifests.put(&m)?;
        Ok(Some(m))
    }

    /// Whether the object store has the blob.
    pub async fn has_blob(&self, digest: &str) -> bool {
        match self.blob_key(digest) {
            Ok(k) => self.store.head(&k).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A `Read` over chunks arriving on a channel (an async download feeding a blocking writer).
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
