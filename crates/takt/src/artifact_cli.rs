//! `takt artifact push|pull|ls|show|verify`: the artifact repository from the command line.
//!
//! `pull` writes the file and, beside it, its signed manifest (`FILE.takt.json`), so that
//! `takt artifact verify FILE --key HEX` can check both the bytes and the signature offline.

use crate::client::{Api, BadInput, Remote};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use takt_blob::SignedManifest;

#[derive(clap::Subcommand)]
pub enum ArtifactCommand {
    /// Push a file as NAME@VERSION (ci scope). Identical bytes again are a no-op; other bytes
    /// under the same name and version are refused (artifacts are immutable).
    Push {
        file: PathBuf,
        /// NAME@VERSION.
        #[arg(long = "as", value_name = "NAME@VERSION")]
        target: String,
        /// The project it belongs to (provenance).
        #[arg(long)]
        project: Option<String>,
        /// The commit it was built from (provenance).
        #[arg(long)]
        commit: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Download NAME@VERSION, verified (digest and signature); never overwrites a different file.
    Pull {
        /// NAME@VERSION.
        artifact: String,
        /// Where to write it [default: its file name, or NAME].
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List artifacts, newest first.
    Ls {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show an artifact's signed manifest and provenance.
    Show {
        /// NAME@VERSION.
        artifact: String,
        /// Print the server's JSON instead of one `field: value` line each.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Re-hash every blob on the server (corrupt ones are quarantined) and find artifacts whose
    /// blob is missing (admin scope). Exit code 1 if anything is wrong.
    Fsck {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show what retention would delete (expired versions, versions beyond `retention.keep_last`,
    /// blobs nothing names); delete only with --apply (admin scope).
    Gc {
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a pulled FILE (with FILE.takt.json beside it) offline, or NAME@VERSION on the
    /// server: the bytes match the digest, and the manifest its signature.
    Verify {
        /// A pulled file, or NAME@VERSION.
        target: String,
        /// The server's public key (hex; `GET /api/v1/keys`). Offline checks need it.
        #[arg(long, env = "TAKT_PUBLIC_KEY")]
        key: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn split(artifact: &str) -> anyhow::Result<(String, String)> {
    match artifact.rsplit_once('@') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(BadInput(format!("`{artifact}` is not NAME@VERSION")).into()),
    }
}

/// A progress bar that shows itself only when a transfer lasts over a second, on a terminal.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    shown: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::hidden());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {eta}")
        {
            bar.set_style(style);
        }
        Progress {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }
    fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        if !self.shown && self.started.elapsed() > Duration::from_secs(1) && std::io::stderr().is_terminal() {
            self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }
    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

async fn public_key(api: &Api) -> anyhow::Result<String> {
    let v: takt_api::Keys = api.get("/api/v1/keys").await?;
    v.keys
        .into_iter()
        .next()
        .map(|k| k.public_key)
        .context("the server published no key")
}

async fn fetch_manifest(api: &Api, name: &str, version: &str) -> anyhow::Result<SignedManifest> {
    let (_, m) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/artifacts/{name}/{version}"),
            None,
        )
        .await?;
    serde_json::from_value(m).context("the server sent a manifest takt cannot read")
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(takt_blob::hash_reader(f)?)
}

pub async fn artifact(c: ArtifactCommand) -> anyhow::Result<()> {
    match c {
        ArtifactCommand::Push {
            file,
            target,
            project,
            commit,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let (name, version) = split(&target)?;
            let meta =
                std::fs::metadata(&file).map_err(|e| BadInput(format!("cannot read {}: {e}", file.display())))?;
            if !meta.is_file() {
                bail!(BadInput(format!("{} is not a file", file.display())));
            }
            // One pass: a reader thread reads the file once and hands each piece both to the
            // request body and to a hashing thread; the artifact is named only when the
            // server's digest of what it got equals ours.
            let (body_tx, body_rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
            let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(8);
            let hashing = tokio::task::spawn_blocking(move || {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                for piece in hash_rx {
                    h.update(&piece);
                }
                format!("sha256:{}", hex::encode(h.finalize()))
            });
            let mut f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            std::thread::spawn(move || {
                use std::io::Read;
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    match f.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            let piece = bytes::Bytes::from(buf);
                            if hash_tx.send(piece.clone()).is_err() || body_tx.blocking_send(Ok(piece)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = body_tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            });
            let mut progress = Progress::new(meta.len());
            let stream =
                futures_util::stream::unfold(body_rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
            let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            let stream = futures_util::StreamExt::inspect(stream, move |c| {
                if let Ok(c) = c {
                    let _ = ptx.send(c.len() as u64);
                }
            });
            let req = api
                .request(reqwest::Method::POST, "/api/v1/blobs")
                .header("content-length", meta.len())
                .timeout(Duration::from_secs(24 * 3600))
                .body(reqwest::Body::wrap_stream(stream));
            let send = api.send(req);
            tokio::pin!(send);
            let sent = loop {
                tokio::select! {
                    r = &mut send => break r,
                    Some(n) = prx.recv() => progress.inc(n),
                }
            };
            progress.done();
            let blob: takt_api::BlobStored = sent?.json().await.context("reading the server's answer")?;
            let digest = hashing.await?;
            if blob.digest != digest {
                bail!(
                    "the server received bytes hashing to {}, but {} hashes to {digest} (did it change while being sent?); no artifact was made",
                    blob.digest,
                    file.display()
                );
            }
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(p) = &project {
                query.push(("project", p.clone()));
            }
            if let Some(c) = &commit {
                query.push(("commit", c.clone()));
            }
            if let Some(n) = file.file_name() {
                query.push(("file", n.to_string_lossy().into_owned()));
            }
            let req = api
                .request(reqwest::Method::PUT, &format!("/api/v1/artifacts/{name}/{version}"))
                .query(&query)
                .header("x-takt-blob", &digest);
            let v: takt_api::Pushed = api.typed(req, "the push").await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else if v.unchanged {
                outln!("{name}@{version} is already stored with these bytes ({digest}); nothing changed");
            } else {
                outln!("pushed {name}@{version}: {digest}, {} bytes", meta.len());
            }
        }
        ArtifactCommand::Pull {
            artifact,
            output,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let (name, version) = split(&artifact)?;
            let signed = fetch_manifest(&api, &name, &version).await?;
            let key = public_key(&api).await?;
            signed.verify(Some(&key))?;
            let mf = &signed.manifest;
            let out = output.unwrap_or_else(|| {
                PathBuf::from(
                    mf.path
                        .as_deref()
                        .and_then(|p| Path::new(p).file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| name.clone()),
                )
            });
            if out.exists() {
                let have = tokio::task::spawn_blocking({
                    let o = out.clone();
                    move || sha256_file(&o)
                })
                .await??;
                if have == mf.digest {
                    write_manifest(&out, &signed)?;
                    report_pull(json, &out, mf, true);
                    return Ok(());
                }
                bail!(BadInput(format!(
                    "{} exists with other bytes ({have}); refusing to overwrite it with {artifact} ({})",
                    out.display(),
                    mf.digest
                )));
            }
            let tmp = out.with_extension("takt-partial");
            let result = download(&api, &name, &version, &tmp, mf.size).await;
            let digest = match result {
                Ok(d) => d,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            if digest != mf.digest {
                let _ = std::fs::remove_file(&tmp);
                bail!(
                    "{artifact}: the downloaded bytes hash to {digest}, not {}; nothing was written",
                    mf.digest
                );
            }
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            write_manifest(&out, &signed)?;
            report_pull(json, &out, mf, false);
        }
        ArtifactCommand::Ls {
            project,
            name,
            json,
            remote,
        } => {
            let mut q = vec![];
            if let Some(p) = project {
                q.push(format!("project={p}"));
            }
            if let Some(n) = name {
                q.push(format!("name={n}"));
            }
            let path = format!("/api/v1/artifacts?{}", q.join("&"));
            let v: takt_api::ArtifactList = Api::new(&remote)?.get(&path).await?;
            if json {
                outln!("{}", serde_json::to_string(&v.artifacts)?);
            } else {
                for a in &v.artifacts {
                    // A pushed artifact has no run.
                    let origin = match a.run {
                        Some(n) => format!("run #{n}"),
                        None => "pushed".to_string(),
                    };
                    outln!(
                        "{}@{}\t{}\t{} bytes\t{} {}\t{}",
                        a.name,
                        a.version,
                        a.digest,
                        a.size,
                        a.project,
                        origin,
                        a.stored_at
                    );
                }
            }
        }
        ArtifactCommand::Fsck { json, remote } => {
            let api = Api::new(&remote)?;
            let req = api
                .request(reqwest::Method::POST, "/api/v1/artifacts/fsck")
                .timeout(Duration::from_secs(24 * 3600));
            let v: takt_api::FsckReport = api.typed(req, "fsck").await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!("{} blobs, {} bytes checked", v.checked, v.bytes);
                for c in &v.corrupt {
                    outln!(
                        "CORRUPT {} (its bytes hash to {}); moved to quarantine",
                        c.digest,
                        c.actual
                    );
                }
                for q in &v.quarantined {
                    outln!(
                        "QUARANTINED {} of {} (push that version again to serve it)",
                        q.digest,
                        q.artifact
                    );
                }
                for m in &v.missing {
                    outln!("MISSING {} of {}", m.digest, m.artifact);
                }
            }
            if !v.ok {
                bail!("the artifact store has corrupt, quarantined or missing blobs");
            }
        }
        ArtifactCommand::Gc { apply, json, remote } => {
            let api = Api::new(&remote)?;
            let req = api
                .request(reqwest::Method::POST, "/api/v1/artifacts/gc")
                .json(&takt_api::GcBody { apply })
                .timeout(Duration::from_secs(24 * 3600));
            let v: takt_api::GcReport = api.typed(req, "gc").await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                let verb = if apply { "deleted" } else { "would delete" };
                for a in &v.artifacts {
                    outln!("{verb} {}@{}: {}", a.name, a.version, a.reason);
                }
                outln!(
                    "{verb} {} blobs nothing names ({} bytes){}",
                    v.blobs.len(),
                    v.freed_bytes,
                    if apply { "" } else { "; run with --apply to delete" }
                );
            }
        }
        ArtifactCommand::Show { artifact, json, remote } => {
            let (name, version) = split(&artifact)?;
            let (_, v) = Api::new(&remote)?
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/artifacts/{name}/{version}"),
                    None,
                )
                .await?;
            if json {
                outln!("{v}");
            } else {
                crate::client::print_fields(&v);
            }
        }
        ArtifactCommand::Verify {
            target,
            key,
            json,
            remote,
        } => {
            let path = PathBuf::from(&target);
            let (signed, digest) = if path.is_file() {
                let mpath = manifest_path(&path);
                let text = std::fs::read_to_string(&mpath).map_err(|e| {
                    BadInput(format!(
                        "cannot read {} (written by `takt artifact pull` beside the file): {e}",
                        mpath.display()
                    ))
                })?;
                let signed: SignedManifest = serde_json::from_str(&text)
                    .map_err(|e| BadInput(format!("{} is not a takt manifest: {e}", mpath.display())))?;
                let Some(key) = key else {
                    bail!(BadInput(
                        "an offline check needs the server's public key: --key HEX or TAKT_PUBLIC_KEY (GET /api/v1/keys)"
                            .into()
                    ));
                };
                signed.verify(Some(&key))?;
                let d = tokio::task::spawn_blocking(move || sha256_file(&path)).await??;
                (signed, d)
            } else {
                let (name, version) = split(&target)?;
                let api = Api::new(&remote)?;
                let signed = fetch_manifest(&api, &name, &version).await?;
                let key = match key {
                    Some(k) => k,
                    None => public_key(&api).await?,
                };
                signed.verify(Some(&key))?;
                let tmp = tempfile::NamedTempFile::new()?;
                let d = download(&api, &name, &version, tmp.path(), signed.manifest.size).await?;
                (signed, d)
            };
            let m = &signed.manifest;
            if digest != m.digest {
                bail!(
                    "{}@{}: the bytes hash to {digest}, but the signed manifest says {}",
                    m.name,
                    m.version,
                    m.digest
                );
            }
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"name": m.name, "version": m.version, "digest": m.digest, "signature": "valid"})
                );
            } else {
                outln!(
                    "{}@{}: digest {} matches; signature valid (key {})",
                    m.name,
                    m.version,
                    m.digest,
                    &signed.key[..16.min(signed.key.len())]
                );
            }
        }
    }
    Ok(())
}

fn manifest_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".takt.json");
    PathBuf::from(s)
}

fn write_manifest(file: &Path, m: &SignedManifest) -> anyhow::Result<()> {
    let p = manifest_path(file);
    std::fs::write(&p, serde_json::to_vec_pretty(m)?).with_context(|| format!("writing {}", p.display()))
}

fn report_pull(json: bool, out: &Path, m: &takt_blob::Manifest, already: bool) {
    if json {
        outln!(
            "{}",
            serde_json::json!({"file": out, "name": m.name, "version": m.version, "digest": m.digest, "size": m.size, "unchanged": already})
        );
    } else if already {
        outln!(
            "{} already holds {}@{} ({})",
            out.display(),
            m.name,
            m.version,
            m.digest
        );
    } else {
        outln!("{}@{} → {} ({}, verified)", m.name, m.version, out.display(), m.digest);
    }
}

/// Streams a blob into `dst`, hashing as it goes; returns the digest of what arrived.
async fn download(api: &Api, name: &str, version: &str, dst: &Path, size: u64) -> anyhow::Result<String> {
    let req = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/artifacts/{name}/{version}/blob"),
        )
        .timeout(Duration::from_secs(24 * 3600));
    let mut res = api.send(req).await?;
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(dst)
        .await
        .with_context(|| format!("creating {}", dst.display()))?;
    let mut h = Sha256::new();
    let mut progress = Progress::new(size);
    while let Some(chunk) = res.chunk().await.with_context(|| {
        format!("downloading {name}@{version} broke off (the server refuses to send a corrupt blob)")
    })? {
        h.update(&chunk);
        f.write_all(&chunk).await?;
        progress.inc(chunk.len() as u64);
    }
    progress.done();
    f.sync_all().await?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
