//! Artifacts over HTTP (read side): list what runs stored, show a signed manifest, download a
//! blob. A whole download is hashed while it streams and its last piece is held back until
//! the digest matches: on a mismatch the transfer is aborted (the client never gets a complete,
//! wrong file) and the blob is quarantined. `Range` requests are served without whole-blob
//! verification: clients verify what they assemble. `ETag` is the digest.

use crate::{ApiError, AppState, Caller, page_limit, query};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backon::Retryable;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use takt_api::{ArtifactsQuery, GcBody, PushQuery};
use takt_model::{Event, EventKind};
use takt_store::EventFilter;
use takt_views::Projection;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The artifact repository the routes read and write: blobs, signed manifests and the signing
/// key. The engine shares the same directories; the routes do not reach them through the run
/// queue, so the repository answers whether or not this server runs pipelines.
pub struct Repository {
    pub blobs: takt_blob::LocalBlobs,
    pub manifests: takt_blob::ManifestStore,
    pub keys: Arc<takt_blob::Keyring>,
}

/// Size of the pieces a download is streamed in.
const PIECE: usize = 256 * 1024;

/// `GET /api/v1/keys`: the public key that verifies manifests (public: verification needs no token).
pub async fn keys(State(state): State<Arc<AppState>>) -> Json<takt_api::Keys> {
    let engine = &state.artifacts;
    Json(takt_api::Keys {
        keys: vec![takt_api::PublicKey {
            algorithm: "ed25519".into(),
            public_key: engine.keys.public_key_hex(),
        }],
    })
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    q: Result<Query<ArtifactsQuery>, QueryRejection>,
) -> Result<Json<takt_api::ArtifactList>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)? as usize;
    state
        .record(Event::now(
            q.project.as_deref().unwrap_or(""),
            None,
            EventKind::ArtifactRead {
                action: takt_model::ReadAction::List,
                name: q.name.clone(),
                version: None,
                token: who.name.clone(),
            },
        ))
        .await?;
    let events = state
        .store
        .events(&EventFilter {
            project: q.project.clone(),
            run: q.run,
            kinds: takt_views::Artifacts::KINDS.to_vec(),
            ..Default::default()
        })
        .await?;
    let view = takt_views::Artifacts::fold(&events);
    let artifacts = view
        .newest_first(q.project.as_deref(), q.name.as_deref())
        .take(limit)
        .cloned()
        .collect();
    Ok(Json(takt_api::ArtifactList { artifacts }))
}

fn check(name: &str, version: &str) -> Result<(), ApiError> {
    for (what, v) in [("name", name), ("version", version)] {
        takt_pipeline::check_artifact_name(v)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("artifact {what} {e}")))?;
    }
    Ok(())
}

/// Makes sure the local disk has `name@version` and its blob, fetching what it lacks from the
/// object store (if one is configured): a server with an empty data directory serves and
/// deploys what another stored there.
pub(crate) async fn ensure_local(state: &AppState, name: &str, version: &str) -> Result<(), ApiError> {
    let Some(mirror) = &state.mirror else {
        return Ok(());
    };
    check(name, version)?;
    let engine = state.artifacts.clone();
    let internal = |e: takt_blob::BlobError| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string());
    let m = match engine.manifests.get(name, version).map_err(internal)? {
        Some(m) => m,
        None => match mirror
            .fetch_manifest(&engine.manifests, name, version)
            .await
            .map_err(internal)?
        {
            Some(m) => m,
            None => return Ok(()),
        },
    };
    let present = engine
        .blobs
        .path_of(&m.manifest.digest)
        .map(|p| p.exists())
        .unwrap_or(false);
    if !present {
        mirror
            .fetch_blob(&engine.blobs, &m.manifest.digest)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// Replication's durable cursor (table `cursors`).
pub const REPLICATION_CURSOR: &str = "replicate";

/// Copies every newly stored artifact to the object store (if one is configured), in the
/// background, each copy an `artifact_replicated` event; 5 attempts with backoff. Follows the
/// log from a durable cursor that passes an artifact once its copy is recorded, so none is
/// missed after a lag, a crash or a restart (a copy may be made twice; it is the same bytes).
pub fn start_replication(state: Arc<AppState>) {
    let Some(mirror) = state.mirror.clone() else {
        return;
    };
    tokio::spawn(async move {
        let (cursor, after) = match takt_store::Cursor::open(&state.store, REPLICATION_CURSOR).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "replication is off: cannot read its cursor");
                return;
            }
        };
        let (tx, work) = tokio::sync::mpsc::channel::<Event>(1000);
        tokio::spawn(replicate(state.clone(), mirror, work, cursor.clone()));
        let mut log = state.store.subscribe(after, &["artifact_stored"]);
        loop {
            match log.next().await {
                Ok(e) => {
                    cursor.read(log.position(), e.seq.unwrap_or(0), 1);
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "replication cannot read the log; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Copies each artifact it is handed, in order, and records the copy.
async fn replicate(
    state: Arc<AppState>,
    mirror: Arc<takt_blob::objects::ObjectMirror>,
    mut work: tokio::sync::mpsc::Receiver<Event>,
    cursor: Arc<takt_store::Cursor>,
) {
    while let Some(e) = work.recv().await {
        let seq = e.seq.unwrap_or(0);
        let EventKind::ArtifactStored {
            name, version, digest, ..
        } = &e.kind
        else {
            cursor.done(seq);
            continue;
        };
        let engine = state.artifacts.clone();
        // 5 attempts, waiting 0.5 s, 1 s, 2 s, 4 s between them; a vanished manifest is final.
        let copy = || async {
            let m = match engine.manifests.get(name, version) {
                Ok(Some(m)) => m,
                Ok(None) => return Err(None),
                Err(err) => return Err(Some(err.to_string())),
            };
            mirror
                .put_artifact(&engine.blobs, &m)
                .await
                .map_err(|err| Some(err.to_string()))
        };
        let policy = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(500))
            .with_factor(2.0)
            .with_max_times(4);
        let last = copy
            .retry(policy)
            .when(|e: &Option<String>| e.is_some())
            .await
            .err()
            .map(|e| e.unwrap_or_else(|| "the manifest is gone".to_string()));
        if let Some(err) = &last {
            tracing::error!(%name, %version, error = %err, "cannot copy an artifact to the object store");
        }
        let recorded = state
            .record(Event::now(
                &e.project,
                e.run,
                EventKind::ArtifactReplicated {
                    name: name.clone(),
                    version: version.clone(),
                    digest: digest.clone(),
                    target: mirror.url.clone(),
                    ok: last.is_none(),
                    error: last,
                },
            ))
            .await;
        // Unrecorded, the copy is made again from the cursor after a restart.
        if recorded.is_ok() {
            cursor.done(seq);
        }
    }
}

pub(crate) fn manifest(state: &AppState, name: &str, version: &str) -> Result<takt_blob::SignedManifest, ApiError> {
    check(name, version)?;
    state
        .artifacts
        .manifests
        .get(name, version)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no artifact {name}@{version}")))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    ensure_local(&state, &name, &version).await?;
    let m = manifest(&state, &name, &version)?;
    state
        .record(Event::now(
            &m.manifest.provenance.project,
            None,
            EventKind::ArtifactRead {
                action: takt_model::ReadAction::Show,
                name: Some(name.clone()),
                version: Some(version.clone()),
                token: who.name.clone(),
            },
        ))
        .await?;
    let mut v = json!(m);
    v["in_toto"] = m.manifest.in_toto();
    // Whether the signature holds, and by this server's key (what `takt artifact verify` checks).
    v["signature_valid"] = json!(m.verify(Some(&state.artifacts.keys.public_key_hex())).is_ok());
    Ok(Json(v))
}

pub async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ensure_local(&state, &name, &version).await?;
    let m = manifest(&state, &name, &version)?.manifest;
    if m.restricted && who.scope == takt_model::auth::Scope::Read {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{name}@{version} is not public (its job says `artifacts: public: false`): download it with a ci, deploy or admin token"
            ),
        ));
    }
    let engine = state.artifacts.clone();
    let etag = format!("\"{}\"", m.digest);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Ok(r);
    }
    let path = engine
        .blobs
        .path_of(&m.digest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|_| {
        ApiError::new(
            StatusCode::GONE,
            format!(
                "the blob of {name}@{version} ({}) is missing or quarantined; run `takt artifact fsck`",
                m.digest
            ),
        )
    })?;
    let size = m.size;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match range {
        None => (0, size),
        Some(r) => crate::runs::parse_range(r, size).ok_or_else(|| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range `{r}` is not within the artifact's {size} bytes"),
            )
        })?,
    };
    state
        .record(Event::now(
            &m.provenance.project,
            None,
            EventKind::ArtifactDownloaded {
                name: name.clone(),
                version: version.clone(),
                digest: m.digest.clone(),
                token: who.name.clone(),
                range: range.map(str::to_string),
            },
        ))
        .await?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = if range.is_some() {
        crate::runs::file_body(file, end - start)
    } else {
        verified_stream(file, m.digest.clone(), engine)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    let media = HeaderValue::from_str(&m.media_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, media);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (k, v) in [
        (header::CONTENT_LENGTH, (end - start).to_string()),
        (header::ETAG, etag),
        (
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                m.path.as_deref().unwrap_or(&m.name).replace(['"', '/'], "_")
            ),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&m.digest) {
        h.insert("x-checksum-sha256", v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1))) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// The whole blob, hashed as it goes; the last piece is sent only once the digest matched.
fn verified_stream(file: tokio::fs::File, digest: String, engine: Arc<Repository>) -> Body {
    struct S {
        file: tokio::fs::File,
        hash: Sha256,
        held: Option<Vec<u8>>,
        done: bool,
        digest: String,
        engine: Arc<Repository>,
    }
    let s = S {
        file,
        hash: Sha256::new(),
        held: None,
        done: false,
        digest,
        engine,
    };
    Body::from_stream(futures_util::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let mut buf = vec![0u8; PIECE];
            let n = match s.file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            };
            if n == 0 {
                s.done = true;
                let actual = format!("sha256:{}", hex::encode(std::mem::take(&mut s.hash).finalize()));
                if actual != s.digest {
                    tracing::error!(expected = %s.digest, %actual, "corrupt blob: download aborted, blob quarantined");
                    s.engine.blobs.quarantine(&s.digest);
                    let err = std::io::Error::other(format!("blob {} is corrupt (read {actual})", s.digest));
                    return Some((Err(err), s));
                }
                let last = s.held.take().unwrap_or_default();
                return Some((Ok(last), s));
            }
            buf.truncate(n);
            s.hash.update(&buf);
            if let Some(prev) = s.held.replace(buf) {
                return Some((Ok(prev), s));
            }
        }
    }))
}

/// The digest a client says it sends: `X-Checksum-Sha256: <hex>` (or `sha256:<hex>`), or
/// `Digest: sha-256=<base64>` (RFC 3230).
fn claimed_digest(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    if let Some(v) = headers.get("x-checksum-sha256") {
        let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
        let hex = v.strip_prefix("sha256:").unwrap_or(&v).to_string();
        takt_blob::digest_hex(&hex).map_err(|_| bad(format!("X-Checksum-Sha256 `{v}` is not a SHA-256 in hex")))?;
        return Ok(Some(format!("sha256:{hex}")));
    }
    if let Some(v) = headers.get("digest") {
        let v = v.to_str().unwrap_or("");
        for part in v.split(',') {
            if let Some((alg, val)) = part.trim().split_once('=')
                && alg.eq_ignore_ascii_case("sha-256")
            {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(val.trim())
                    .map_err(|_| bad(format!("Digest `{v}`: not base64")))?;
                if bytes.len() != 32 {
                    return Err(bad(format!("Digest `{v}`: a SHA-256 has 32 bytes")));
                }
                return Ok(Some(format!("sha256:{}", hex::encode(bytes))));
            }
        }
        return Err(bad(format!("Digest `{v}` has no sha-256 value")));
    }
    Ok(None)
}

/// Reads the chunks an upload sends, on a blocking thread.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
    cur: axum::body::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => self.cur = b,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// `PUT /api/v1/artifacts/{name}/{version}`: the body is the artifact, streamed to disk while
/// it is hashed (never held in memory). Identical bytes again: 200, nothing changes; other
/// bytes under the same name and version: 409 with both digests. Over the size limit: 413,
/// before anything is stored; a claimed digest that does not match: 400, nothing stored; a
/// client that goes away leaves nothing behind.
pub async fn push(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Caller(who): Caller,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<PushQuery>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<takt_api::Pushed>), ApiError> {
    let q = query(q)?;
    check(&name, &version)?;
    let engine = state.artifacts.clone();
    // An OCI-style two-step push names a blob sent before (`POST /api/v1/blobs`) instead of
    // sending the bytes again.
    let blob = match headers.get("x-takt-blob").and_then(|v| v.to_str().ok()) {
        Some(d) => existing_blob(&engine, d)?,
        None => receive_blob(&state, &headers, body).await?,
    };
    let now = takt_model::OffsetDateTime::now_utc();
    let at = takt_model::timefmt::rfc3339(now);
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() < 200)
        .unwrap_or("application/octet-stream")
        .to_string();
    let project = q.project.clone().unwrap_or_default();
    let manifest = takt_blob::Manifest {
        name: name.clone(),
        version: version.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        media_type,
        path: q.file.clone(),
        expires_at: None,
        restricted: false,
        provenance: takt_blob::Provenance {
            build_type: "https://takt.dev/provenance/push/v1".into(),
            builder: format!("takt {}", env!("CARGO_PKG_VERSION")),
            project: project.clone(),
            repository: String::new(),
            commit: q.commit.clone().unwrap_or_default(),
            branch: q.branch.clone(),
            tag: None,
            run: q.run.unwrap_or(0),
            job: q.job.clone().unwrap_or_else(|| "push".into()),
            started_at: at.clone(),
            finished_at: at,
            inputs: Vec::new(),
            dirty: false,
            pushed_by: Some(who.name.clone()),
        },
    };
    let signed = engine
        .keys
        .sign(manifest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match engine.manifests.put(&signed) {
        Ok(takt_blob::PutOutcome::Unchanged) => Ok((
            StatusCode::OK,
            Json(takt_api::Pushed {
                name,
                version,
                digest: blob.digest,
                size: blob.size,
                unchanged: true,
            }),
        )),
        Ok(takt_blob::PutOutcome::Stored) => {
            state
                .record(Event::now(
                    &project,
                    q.run,
                    EventKind::ArtifactStored {
                        job: q.job.unwrap_or_else(|| "push".into()),
                        name: name.clone(),
                        version: version.clone(),
                        digest: blob.digest.clone(),
                        size: blob.size,
                    },
                ))
                .await?;
            Ok((
                StatusCode::CREATED,
                Json(takt_api::Pushed {
                    name,
                    version,
                    digest: blob.digest,
                    size: blob.size,
                    unchanged: false,
                }),
            ))
        }
        Err(takt_blob::BlobError::Conflict { existing, new, .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{name}@{version} already exists with digest {existing}; refusing to replace it with {new} (artifacts are immutable: push a new version)"
            ),
        )),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Receives a request body as a blob: streamed to disk while hashed, never whole in memory;
/// over the limit → 413 and a claimed digest that does not match → 400, with nothing stored;
/// a body that breaks off leaves nothing behind.
async fn receive_blob(state: &AppState, headers: &HeaderMap, body: Body) -> Result<takt_blob::BlobRef, ApiError> {
    let engine = state.artifacts.clone();
    let max = state.max_artifact_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("artifacts may be at most {max} bytes (max_artifact_bytes); nothing was stored"),
        )
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > max) {
        return Err(too_large());
    }
    let expected = claimed_digest(headers)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let blobs = engine.blobs.clone();
    let want = expected.clone();
    let ingest = tokio::task::spawn_blocking(move || {
        blobs.ingest_expecting(
            ChannelReader {
                rx,
                cur: axum::body::Bytes::new(),
            },
            want.as_deref(),
        )
    });
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut failure: Option<ApiError> = None;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(b) => {
                total += b.len() as u64;
                if total > max {
                    failure = Some(too_large());
                    let _ = tx.send(Err(std::io::Error::other("over the size limit"))).await;
                    break;
                }
                if tx.send(Ok(b)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off after {total} bytes: {e}; nothing was stored"),
                ));
                let _ = tx.send(Err(std::io::Error::other("the upload broke off"))).await;
                break;
            }
        }
    }
    if failure.is_none() && length.is_some_and(|l| l != total) {
        failure = Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the upload ended after {total} of {} bytes; nothing was stored",
                length.unwrap_or(0)
            ),
        ));
        let _ = tx.send(Err(std::io::Error::other("the upload was truncated"))).await;
    }
    drop(tx);
    let stored = ingest
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let blob = stored.map_err(|e| match e {
        takt_blob::BlobError::Mismatch { .. } => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    Ok(blob)
}

/// A blob already stored, named by its digest.
fn existing_blob(engine: &Repository, digest: &str) -> Result<takt_blob::BlobRef, ApiError> {
    let path = engine
        .blobs
        .path_of(digest)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let size = std::fs::metadata(&path)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("no blob {digest}: send it first (POST /api/v1/blobs)"),
            )
        })?
        .len();
    Ok(takt_blob::BlobRef {
        digest: format!("sha256:{}", digest.strip_prefix("sha256:").unwrap_or(digest)),
        size,
    })
}

/// `POST /api/v1/blobs`: stores a blob (content-addressed, deduplicated) and answers its digest
/// and size; `PUT /api/v1/artifacts/{name}/{version}` with `X-Takt-Blob: DIGEST` then makes it
/// an artifact. A client can hash while it sends, compare with the answer, and only then name
/// the artifact: one pass over the file. Blobs no artifact names are removed by `gc`.
pub async fn push_blob(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<takt_api::BlobStored>), ApiError> {
    let blob = receive_blob(&state, &headers, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(takt_api::BlobStored {
            digest: blob.digest,
            size: blob.size,
        }),
    ))
}

/// `POST /api/v1/artifacts/fsck` (admin): re-hashes every blob (corrupt ones go to quarantine)
/// and finds manifests whose blob is missing.
pub async fn fsck(State(state): State<Arc<AppState>>) -> Result<Json<takt_api::FsckReport>, ApiError> {
    let engine = state.artifacts.clone();
    let report = tokio::task::spawn_blocking(move || takt_blob::fsck(&engine.blobs, &engine.manifests))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(takt_api::FsckReport {
        checked: report.checked as u64,
        bytes: report.bytes,
        ok: report.corrupt.is_empty() && report.missing.is_empty() && report.quarantined.is_empty(),
        corrupt: report
            .corrupt
            .into_iter()
            .map(|(digest, actual)| takt_api::CorruptBlob { digest, actual })
            .collect(),
        quarantined: report
            .quarantined
            .into_iter()
            .map(|(artifact, digest)| takt_api::MissingBlob { artifact, digest })
            .collect(),
        missing: report
            .missing
            .into_iter()
            .map(|(artifact, digest)| takt_api::MissingBlob { artifact, digest })
            .collect(),
    }))
}

/// Versions an environment runs now, may roll back to, is deploying, or ran within its
/// project's `keep_deployed_days`: never deleted.
fn deployed(state: &AppState) -> std::collections::HashSet<(String, String)> {
    let days: std::collections::HashMap<String, u32> = state
        .ci
        .branch_configs
        .read()
        .iter()
        .filter_map(|(p, x)| {
            x.retention
                .as_ref()
                .and_then(|r| r.keep_deployed_days)
                .map(|d| (p.clone(), d))
        })
        .collect();
    state.cd.deployments.index.protected(&days)
}

/// `POST /api/v1/artifacts/gc` `{"apply": false}` (admin): what retention removes — versions
/// past their `expire_in`, and versions beyond a project's `retention.keep_last` (newest
/// first, per artifact name) — then blobs nothing names any more (caches count as names).
/// A dry run unless `apply`.
pub async fn gc(
    State(state): State<Arc<AppState>>,
    body: Result<Json<GcBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<takt_api::GcReport>, ApiError> {
    let req = match body {
        Ok(Json(b)) => b,
        Err(axum::extract::rejection::JsonRejection::MissingJsonContentType(_)) => GcBody::default(),
        Err(e) => return Err(crate::body_error(e)),
    };
    let engine = state.artifacts.clone();
    let policies: std::collections::HashMap<String, takt_pipeline::Retention> = state
        .ci
        .branch_configs
        .read()
        .iter()
        .filter_map(|(p, x)| x.retention.clone().map(|r| (p.clone(), r)))
        .collect();
    let keep_safe = deployed(&state);
    let e2 = engine.clone();
    let all = tokio::task::spawn_blocking(move || e2.manifests.all())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = takt_model::timefmt::rfc3339(takt_model::OffsetDateTime::now_utc());
    let mut groups: std::collections::BTreeMap<(String, String), Vec<takt_blob::SignedManifest>> = Default::default();
    for m in all {
        groups
            .entry((m.manifest.provenance.project.clone(), m.manifest.name.clone()))
            .or_default()
            .push(m);
    }
    let (mut keep, mut remove) = (Vec::new(), Vec::new());
    for ((project, _), mut list) in groups {
        list.sort_by(|a, b| {
            b.manifest
                .provenance
                .finished_at
                .cmp(&a.manifest.provenance.finished_at)
        });
        let keep_last = policies.get(&project).and_then(|p| p.keep_last);
        for (i, m) in list.into_iter().enumerate() {
            let mf = &m.manifest;
            let reason = if mf.expires_at.as_ref().is_some_and(|t| *t < now) {
                Some(format!("expired at {}", mf.expires_at.clone().unwrap_or_default()))
            } else if keep_last.is_some_and(|n| i >= n as usize) {
                Some(format!(
                    "beyond the newest {} versions (retention.keep_last)",
                    keep_last.unwrap_or(0)
                ))
            } else {
                None
            };
            match reason {
                Some(r) if !keep_safe.contains(&(mf.name.clone(), mf.version.clone())) => remove.push((m, r)),
                _ => keep.push(m),
            }
        }
    }
    let cache_dir = state.data_dir.join("cache");
    let e3 = engine.clone();
    let blobs = tokio::task::spawn_blocking(move || takt_blob::unreferenced(&e3.blobs, &keep, &cache_dir))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let freed: u64 = blobs
        .iter()
        .filter_map(|d| engine.blobs.path_of(d).ok())
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if req.apply {
        for (m, reason) in &remove {
            let mf = &m.manifest;
            engine
                .manifests
                .remove(&mf.name, &mf.version)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            state
                .record(Event::now(
                    &mf.provenance.project,
                    None,
                    EventKind::ArtifactDeleted {
                        name: mf.name.clone(),
                        version: mf.version.clone(),
                        digest: mf.digest.clone(),
                        reason: reason.clone(),
                    },
                ))
                .await?;
        }
        for d in &blobs {
            let _ = engine.blobs.remove(d);
        }
    }
    Ok(Json(takt_api::GcReport {
        applied: req.apply,
        artifacts: remove
            .iter()
            .map(|(m, r)| takt_api::GcArtifact {
                name: m.manifest.name.clone(),
                version: m.manifest.version.clone(),
                digest: m.manifest.digest.clone(),
                reason: r.to_string(),
            })
            .collect(),
        blobs: blobs.into_iter().collect(),
        freed_bytes: freed,
    }))
}
