//! The proxy against a direct connection and against nginx, in the same run, on loopback.
//!
//!   cargo bench -p takt-proxy --bench proxy
//!
//! 1. Added latency: 5,000 requests at a fixed 1,000/s through each path; p50 and p99 of each,
//!    and what the proxy adds over direct (target: p50 <= 150 us more).
//! 2. Throughput: 16 connections as fast as they can for 3 s through the proxy and through
//!    nginx (if `nginx` is installed; target: >= 90% of nginx's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn backend() -> Result<SocketAddr> {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(a)
}

fn start_nginx(backend: SocketAddr) -> Option<(std::process::Child, SocketAddr, tempfile::TempDir)> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir().ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off; worker_processes 2; pid {d}/pid; error_log {d}/err;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
           upstream app {{ server {backend}; keepalive 64; }}\n\
           server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).ok()?;
    let child = std::process::Command::new(bin)
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, SocketAddr::from(([127, 0, 0, 1], port)), dir));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

async fn fixed_rate(addr: SocketAddr) -> Result<(f64, f64)> {
    let c = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    };
    let url = format!("http://{addr}/");
    for _ in 0..200 {
        c.get(&url).send().await?.bytes().await?;
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..5000u32 {
        let due = start + Duration::from_millis(i as u64);
        tokio::time::sleep_until(due.into()).await;
        let t = Instant::now();
        c.get(&url).send().await?.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((pct(&mut lat, 50.0), pct(&mut lat, 99.0)))
}

async fn throughput(addr: SocketAddr) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let c = {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            };
            let url = format!("http://{addr}/");
            while Instant::now() < stop {
                if c.get(&url).send().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / 3.0)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let b = backend().await?;
        let proxy = Arc::new(takt_proxy::Proxy::new());
        proxy.set(&[(b, 1)]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let p = l.local_addr()?;
        tokio::spawn(proxy.serve(l));
        let nginx = start_nginx(b);
        let (d50, d99) = fixed_rate(b).await?;
        let (p50, p99) = fixed_rate(p).await?;
        println!("1. latency at 1,000 req/s: direct p50 {d50:.0} us p99 {d99:.0} us; takt proxy p50 {p50:.0} us p99 {p99:.0} us; added p50 {:.0} us (target <= 150) {}",
            p50 - d50, if p50 - d50 <= 150.0 { "ok" } else { "OVER TARGET" });
        if let Some((_, n, _)) = &nginx {
            let (n50, n99) = fixed_rate(*n).await?;
            println!("   nginx p50 {n50:.0} us p99 {n99:.0} us; added p50 {:.0} us", n50 - d50);
        }
        let tp = throughput(p).await?;
        match &nginx {
            Some((_, n, _)) => {
                let tn = throughput(*n).await?;
                println!("2. throughput, 16 connections: takt proxy {tp:.0} req/s, nginx {tn:.0} req/s, ratio {:.2} (target >= 0.90) {}",
                    tp / tn, if tp / tn >= 0.9 { "ok" } else { "UNDER TARGET" });
            }
            None => println!("2. throughput, 16 connections: takt proxy {tp:.0} req/s (nginx not installed: no comparison)"),
        }
        if let Some((mut child, _, dir)) = nginx {
            // SIGTERM to the master: it stops its workers too (SIGKILL would orphan them).
            let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
            drop(dir);
        }
        Ok(())
    })
}
