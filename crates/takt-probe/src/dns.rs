//! DNS checks: one query over UDP to the check's `server` (or the first `nameserver` of
//! `/etc/resolv.conf`), its answer's records as `[BODY]` (comma-separated, in the order the
//! server gave them), the first address as `[IP]`, and its response code as `[DNS_RCODE]`
//! (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, ...). Packets are written and read with
//! `simple-dns`.

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use takt_monitor::condition::Probe;

/// DNS's port.
const PORT: u16 = 53;

fn record_type(record: &str) -> Option<TYPE> {
    Some(match record {
        "A" => TYPE::A,
        "AAAA" => TYPE::AAAA,
        "CNAME" => TYPE::CNAME,
        "MX" => TYPE::MX,
        "NS" => TYPE::NS,
        "TXT" => TYPE::TXT,
        "SRV" => TYPE::SRV,
        "PTR" => TYPE::PTR,
        _ => return None,
    })
}

/// The name of a response code, as Gatus writes it.
pub fn rcode_name(r: RCODE) -> &'static str {
    match r {
        RCODE::NoError => "NOERROR",
        RCODE::FormatError => "FORMERR",
        RCODE::ServerFailure => "SERVFAIL",
        RCODE::NameError => "NXDOMAIN",
        RCODE::NotImplemented => "NOTIMP",
        RCODE::Refused => "REFUSED",
        RCODE::YXDOMAIN => "YXDOMAIN",
        RCODE::YXRRSET => "YXRRSET",
        RCODE::NXRRSET => "NXRRSET",
        RCODE::NOTAUTH => "NOTAUTH",
        RCODE::NOTZONE => "NOTZONE",
        _ => "UNKNOWN",
    }
}

/// Where to send the query: `server` as `IP`, `IP:PORT`, `[IPv6]:PORT` or `HOST[:PORT]`, or
/// else the system's first name server.
async fn server_addr(server: Option<&str>) -> Option<SocketAddr> {
    let Some(s) = server else {
        let conf = tokio::fs::read_to_string("/etc/resolv.conf").await.unwrap_or_default();
        let ip = conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .find_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        return Some(SocketAddr::new(ip, PORT));
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (s, PORT),
    };
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

/// A query id: different for each query of this process.
fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (seed as u16)
}

/// One record's data as text.
fn text(r: &RData) -> Option<String> {
    Some(match r {
        RData::A(a) => std::net::Ipv4Addr::from(a.address).to_string(),
        RData::AAAA(a) => std::net::Ipv6Addr::from(a.address).to_string(),
        RData::CNAME(n) => n.0.to_string(),
        RData::NS(n) => n.0.to_string(),
        RData::PTR(n) => n.0.to_string(),
        RData::MX(m) => m.exchange.to_string(),
        RData::SRV(s) => format!("{}:{}", s.target, s.port),
        RData::TXT(t) => String::try_from(t.clone()).ok()?,
        _ => return None,
    })
}

/// Asks `server` for `record` records of `name` (the caller bounds the time).
pub async fn probe(name: &str, record: &str, server: Option<&str>) -> Probe {
    let (Some(kind), Ok(qname)) = (record_type(record), Name::new(name)) else {
        return Probe::default();
    };
    let Some(to) = server_addr(server).await else {
        return Probe::default();
    };
    let id = next_id();
    let mut query = Packet::new_query(id);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    query
        .questions
        .push(Question::new(qname, QTYPE::TYPE(kind), QCLASS::CLASS(CLASS::IN), false));
    let Ok(bytes) = query.build_bytes_vec() else {
        return Probe::default();
    };
    let local: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().unwrap_or(to)
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
        return Probe::default();
    };
    if socket.connect(to).await.is_err() || socket.send(&bytes).await.is_err() {
        return Probe::default();
    }
    let mut buf = vec![0u8; 4096];
    // Answers to other queries (or stray packets) are skipped; the caller's timeout ends this.
    loop {
        let Ok(n) = socket.recv(&mut buf).await else {
            return Probe::default();
        };
        let Ok(answer) = Packet::parse(&buf[..n]) else {
            continue;
        };
        if answer.id() != id {
            continue;
        }
        let values: Vec<String> = answer.answers.iter().filter_map(|rr| text(&rr.rdata)).collect();
        let ip = answer.answers.iter().find_map(|rr| match &rr.rdata {
            RData::A(_) | RData::AAAA(_) => text(&rr.rdata),
            _ => None,
        });
        return Probe {
            connected: true,
            dns_rcode: Some(rcode_name(answer.rcode()).into()),
            ip,
            body: Some(values.join(",")),
            ..Probe::default()
        };
    }
}
