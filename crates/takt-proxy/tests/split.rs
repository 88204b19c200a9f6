//! The proxy for real on 127.0.0.1: two backends, exact shares, weight changes, a dead backend.

#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use std::sync::Arc;
use takt_proxy::Proxy;

async fn backend(name: &'static str, status: StatusCode) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move || async move { (status, name) });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_exactly_and_errors_are_counted_per_backend() {
    let stable = backend("stable", StatusCode::OK).await;
    let canary = backend("canary", StatusCode::INTERNAL_SERVER_ERROR).await;
    let proxy = Arc::new(Proxy::new());
    proxy.set(&[(stable, 90), (canary, 10)]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(proxy.clone().serve(l));
    let c = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    };
    let mut canary_hits = 0;
    for _ in 0..200 {
        let r = c.get(format!("{base}/x?y=1")).send().await.unwrap();
        let failed = r.status() == StatusCode::INTERNAL_SERVER_ERROR;
        let body = r.text().await.unwrap();
        assert_eq!(failed, body == "canary");
        canary_hits += usize::from(failed);
    }
    assert_eq!(canary_hits, 20, "exactly the canary's share");
    let s = proxy.stats();
    assert_eq!((s[0].requests, s[0].errors), (180, 0));
    assert_eq!((s[1].requests, s[1].errors), (20, 20));
    assert!((s[1].error_rate() - 1.0).abs() < f64::EPSILON);

    // Back to stable only: at once, nothing fails.
    proxy.set(&[(stable, 100), (canary, 0)]);
    for _ in 0..50 {
        assert_eq!(c.get(&base).send().await.unwrap().text().await.unwrap(), "stable");
    }
    // A backend that is gone: 502, counted as an error; no backend with weight: 503.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    proxy.set(&[(dead, 1)]);
    assert_eq!(c.get(&base).send().await.unwrap().status(), StatusCode::BAD_GATEWAY);
    assert_eq!(proxy.stats()[0].errors, 1);
    proxy.set(&[]);
    assert_eq!(
        c.get(&base).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
