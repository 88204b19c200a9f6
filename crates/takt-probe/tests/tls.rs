//! `[CERTIFICATE_EXPIRATION]` for real: a TLS endpoint on 127.0.0.1 (Python's `ssl` over a
//! certificate that openssl made a moment ago, valid for one day), probed by the real prober.
//! The certificate is self-signed: without `insecure: true` the probe does not connect.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use takt_monitor::condition::Condition;
use takt_pipeline::ProbeSpec;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(url: &str, insecure: bool) -> ProbeSpec {
    ProbeSpec::Http {
        url: Some(url.into()),
        path: None,
        method: "GET".into(),
        headers: vec![],
        body: None,
        follow_redirects: true,
        insecure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_expiration_of_a_short_lived_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", &format!("{d}/key.pem"), "-out", &format!("{d}/cert.pem")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
         \x20   def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{d}/cert.pem', '{d}/key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n"
    );
    let _server = Killed(Command::new("python3").args(["-c", &server]).spawn().unwrap());
    let prober = takt_probe::Prober::new().unwrap();
    let url = format!("https://127.0.0.1:{port}/");
    let mut probe = prober.probe(&http(&url, true), None, Duration::from_secs(2)).await;
    for _ in 0..100 {
        if probe.connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        probe = prober.probe(&http(&url, true), None, Duration::from_secs(2)).await;
    }
    assert_eq!(probe.status, Some(200), "{probe:?}");
    let left = probe.certificate_expiration.unwrap();
    assert!(
        left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600),
        "{left:?}"
    );
    let judge = |c: &str| Condition::parse(c).unwrap().evaluate(&probe);
    let v = judge("[CERTIFICATE_EXPIRATION] > 48h");
    assert!(!v.success, "a day left is not more than 48 h: {}", v.explained);
    assert!(judge("[CERTIFICATE_EXPIRATION] > 12h").success);

    // Verified as usual: a self-signed certificate is refused, so nothing connects.
    let strict = prober.probe(&http(&url, false), None, Duration::from_secs(2)).await;
    assert!(!strict.connected && strict.status.is_none(), "{strict:?}");
    assert!(
        !Condition::parse("[CERTIFICATE_EXPIRATION] > 12h")
            .unwrap()
            .evaluate(&strict)
            .success
    );
}
