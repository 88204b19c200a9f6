//! Artifacts over HTTP (read side): list what runs stored, show a signed manifest, download a
//! blob. A whole download is hashed while it streams and its last piece is held back until
//! the digest matches: on a mismatch the transfer is aborted (the client never gets a complete,
//! wrong file) and the blob is quarantined. `Range` requests are served without whole-blob
//! verification (DECISIONS.md): clients verify what they assemble. `ETag` is the digest.

use crate::auth::Permission;
use crate::{ApiError, AppState, authorize, page_limit, query};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use takt_model::{Event, EventKind};
use takt_store::EventFilter;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Size of the pieces a download is streamed in.
const PIECE: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    project: Option<String>,
    name: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/keys`: the public key that verifies manifests (public: verification needs no token).
pub async fn keys(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let engine = &state.queue()?.engine;
    Ok(Json(
        json!({"keys": [{"algorithm": "ed25519", "public_key": engine.keys.public_key_hex()}]}),
    ))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let q = query(q)?;
    let limit = page_limit(q.limit)? as usize;
    let events = state
        .store
        .events(&EventFilter {
            project: q.project.clone(),
            kind: Some("artifact_stored".into()),
            ..Default::default()
        })
        .await?;
    let list: Vec<Value> = events
        .iter()
        .rev()
        .filter_map(|e| match &e.kind {
            EventKind::ArtifactStored {
                job,
                name,
                version,
                digest,
                size,
            } if q.name.as_ref().is_none_or(|n| n == name) => Some(json!({
                "name": name, "version": version, "digest": digest, "size": size,
                "project": e.project, "run": e.run, "job": job,
                "stored_at": takt_model::timefmt::rfc3339(e.at),
            })),
            _ => None,
        })
        .take(limit)
        .collect();
    Ok(Json(json!({"artifacts": list})))
}

fn check(name: &str, version: &str) -> Result<(), ApiError> {
    for (what, v) in [("name", name), ("version", version)] {
        takt_pipeline::check_artifact_name(v)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("artifact {what} {e}")))?;
    }
    Ok(())
}

fn manifest(state: &AppState, name: &str, version: &str) -> Result<takt_blob::SignedManifest, ApiError> {
    check(name, version)?;
    state
        .queue()?
        .engine
        .manifests
        .get(name, version)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no artifact {name}@{version}")))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    Ok(Json(json!(manifest(&state, &name, &version)?)))
}

pub async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers, Permission::Read)?;
    let m = manifest(&state, &name, &version)?.manifest;
    let engine = state.queue()?.engine.clone();
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
fn verified_stream(
    file: tokio::fs::File,
    digest: String,
    engine: Arc<takt_engine::Engine<takt_exec::LocalExecutor>>,
) -> Body {
    struct S {
        file: tokio::fs::File,
        hash: Sha256,
        held: Option<Vec<u8>>,
        done: bool,
        digest: String,
        engine: Arc<takt_engine::Engine<takt_exec::LocalExecutor>>,
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
