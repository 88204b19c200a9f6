//! DNS checks for real: a dnsmasq (Debian's `dnsmasq-base`) on a local port, serving a small
//! zone, asked for A, TXT, MX and CNAME records and for a name it does not have; a server that
//! does not answer is not connected.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use takt_monitor::condition::{Condition, Probe};
use takt_pipeline::ProbeSpec;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now, over UDP nor TCP (dnsmasq takes both).
fn free_udp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn ask(server: &str, name: &str, record: &str) -> Probe {
    let prober = takt_probe::Prober::new().unwrap();
    let spec = ProbeSpec::Dns {
        name: name.into(),
        record: record.into(),
        server: Some(server.into()),
    };
    prober.probe(&spec, None, Duration::from_secs(2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_real_dns_server() {
    let port = free_udp_port();
    let dnsmasq = Command::new("/usr/sbin/dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            &format!("--port={port}"),
            "--local=/test/",
            "--address=/shop.test/127.0.0.7",
            "--txt-record=shop.test,v=ok",
            "--mx-host=shop.test,mail.shop.test,10",
            "--cname=www.shop.test,shop.test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq (Debian's dnsmasq-base; ./test.sh installs it)");
    let mut dnsmasq = Killed(dnsmasq);
    let server = format!("127.0.0.1:{port}");
    // Until it answers (it binds within milliseconds; 100 tries of 50 ms at most).
    let mut a = Probe::default();
    for _ in 0..100 {
        a = ask(&server, "shop.test", "A").await;
        if a.connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !a.connected {
        let _ = dnsmasq.0.kill();
        let out = std::mem::replace(&mut dnsmasq.0, Command::new("true").spawn().unwrap());
        let said = out
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
        panic!("dnsmasq did not answer on {server}: {said:?}");
    }
    assert_eq!(a.dns_rcode.as_deref(), Some("NOERROR"), "{a:?}");
    assert_eq!(a.ip.as_deref(), Some("127.0.0.7"), "{a:?}");
    assert_eq!(a.body.as_deref(), Some("127.0.0.7"), "{a:?}");
    // Gatus's conditions read it.
    for (c, holds) in [
        ("[DNS_RCODE] == NOERROR", true),
        ("[BODY] == 127.0.0.7", true),
        ("[IP] == 127.0.0.8", false),
    ] {
        assert_eq!(Condition::parse(c).unwrap().evaluate(&a).success, holds, "{c}: {a:?}");
    }
    let txt = ask(&server, "shop.test", "TXT").await;
    assert_eq!(txt.body.as_deref(), Some("v=ok"), "{txt:?}");
    let mx = ask(&server, "shop.test", "MX").await;
    assert_eq!(mx.body.as_deref(), Some("mail.shop.test"), "{mx:?}");
    let cname = ask(&server, "www.shop.test", "CNAME").await;
    assert_eq!(cname.body.as_deref(), Some("shop.test"), "{cname:?}");
    let none = ask(&server, "nope.test", "A").await;
    assert!(none.connected, "{none:?}");
    assert_eq!(none.dns_rcode.as_deref(), Some("NXDOMAIN"), "{none:?}");
    assert_eq!(none.body.as_deref(), Some(""), "{none:?}");

    // Nobody there: not connected, within the timeout.
    let silent = format!("127.0.0.1:{}", free_udp_port());
    let prober = takt_probe::Prober::new().unwrap();
    let spec = ProbeSpec::Dns {
        name: "shop.test".into(),
        record: "A".into(),
        server: Some(silent),
    };
    let p = prober.probe(&spec, None, Duration::from_millis(300)).await;
    assert!(!p.connected && p.dns_rcode.is_none(), "{p:?}");
    assert!(p.response_time < Duration::from_secs(2), "{p:?}");
}
