//! `checks:`: health checks in Gatus's terms, every key checked, every condition parsed with
//! `takt-monitor` and its errors placed at their line and column.

use super::{Cx, key};
use crate::model::*;
use crate::yaml::{Node, NodeKind};
use std::time::Duration;
use takt_monitor::condition::{Condition, Placeholder};

const CHECK_KEYS: &[&str] = &[
    "service",
    "environment",
    "http",
    "tcp",
    "dns",
    "command",
    "process",
    "metric",
    "heartbeat",
    "interval",
    "timeout",
    "conditions",
    "degraded_when",
    "degraded_latency",
    "failure_threshold",
    "success_threshold",
    "public",
];
const PROBES: &[&str] = &["http", "tcp", "dns", "command", "process", "metric", "heartbeat"];

impl Cx {
    pub(super) fn checks(&mut self, n: &Node) -> Vec<HealthCheck> {
        self.named("`checks`", "check", n, Cx::health_check)
    }

    fn health_check(&mut self, name: &str, k: &Node, v: &Node) -> Option<HealthCheck> {
        let ctx = format!("check `{name}`");
        let fields = self.map(v, &ctx)?;
        let mut probe: Option<ProbeSpec> = None;
        let mut c = HealthCheck::named(name, k.pos);
        let mut conditions = None;
        let mut degraded_when = None;
        let mut thresholds = (false, false);
        // A probe was named, even if it did not parse (its own error says why).
        let mut named = false;
        for (fk, fv) in fields {
            let field = key(fk);
            named |= PROBES.contains(&field);
            if PROBES.contains(&field) && probe.is_some() {
                self.err_help(
                    fk.pos,
                    format!("{ctx} has more than one probe"),
                    "give each check one of http, tcp, dns, command, process, metric or heartbeat",
                );
                continue;
            }
            match field {
                "service" => c.service = self.string(fv, "`service`"),
                "environment" => c.environment = self.string(fv, "`environment`"),
                "http" => probe = self.http(fv),
                "tcp" => probe = self.tcp(fv),
                "dns" => probe = self.dns(fv),
                "command" => probe = self.string(fv, "`command`").map(ProbeSpec::Command),
                "process" => probe = self.process(fv),
                "metric" => probe = self.metric_probe(fv),
                "heartbeat" => probe = self.heartbeat(fv),
                "interval" => c.interval = self.positive(fv, "`interval`").unwrap_or(c.interval),
                "timeout" => c.timeout = self.positive(fv, "`timeout`").unwrap_or(c.timeout),
                "conditions" => conditions = Some(fv),
                "degraded_when" => degraded_when = Some(fv),
                "degraded_latency" => c.degraded_latency = self.positive(fv, "`degraded_latency`"),
                "failure_threshold" | "success_threshold" => {
                    let t = fv
                        .as_str()
                        .and_then(|t| t.parse::<u32>().ok())
                        .filter(|t| (1..=1000).contains(t));
                    match t {
                        None => self.err(fv.pos, format!("`{field}` must be a whole number from 1 to 1000")),
                        Some(t) if field == "failure_threshold" => {
                            c.failure_threshold = t;
                            thresholds.0 = true;
                        }
                        Some(t) => {
                            c.success_threshold = t;
                            thresholds.1 = true;
                        }
                    }
                }
                "public" => c.public = self.bool(fv, "`public`").unwrap_or(false),
                _ => self.unknown_key(fk, CHECK_KEYS, &ctx),
            }
        }
        let Some(probe) = probe else {
            if named {
                return None;
            }
            self.err_help(
                k.pos,
                format!("{ctx} has no probe"),
                "add one of http: {url: ...}, tcp: {host, port}, dns: {name}, command: ..., process: {environment: E}, metric: {name, op, value} or heartbeat: {every: 24h}",
            );
            return None;
        };
        let mut probe = probe;
        if let ProbeSpec::Process { environment } = &mut probe
            && environment.is_empty()
        {
            match &c.environment {
                Some(e) => *environment = e.clone(),
                None => {
                    self.err_help(
                        k.pos,
                        format!("{ctx}: `process` needs the environment whose instances it watches"),
                        "write `process: {environment: production}`",
                    );
                    return None;
                }
            }
        }
        if let ProbeSpec::Http { path: Some(_), .. } | ProbeSpec::Metric { path: Some(_), .. } = &probe
            && c.environment.is_none()
        {
            self.err_help(
                k.pos,
                format!("{ctx} probes a `path` but names no `environment`"),
                "add `environment: NAME` (the path is sent to its public address) or give a full `url`",
            );
        }
        if let Some(list) = degraded_when {
            c.degraded_when = self.conditions(list, &probe, &ctx, "degraded_when");
        }
        if c.degraded_latency.is_some() && matches!(probe, ProbeSpec::Heartbeat { .. }) {
            self.err(
                k.pos,
                format!("{ctx} is a heartbeat: it has no latency, so no `degraded_latency`"),
            );
        }
        if let Some(list) = conditions {
            c.conditions = self.conditions(list, &probe, &ctx, "conditions");
        } else if !matches!(probe, ProbeSpec::Heartbeat { .. }) {
            // As Gatus: without conditions, a check passes when it connects (and, over HTTP,
            // answers below 400).
            c.conditions = match probe {
                ProbeSpec::Http { .. } => vec!["[STATUS] < 400".into()],
                _ => vec!["[CONNECTED] == true".into()],
            };
        }
        if let ProbeSpec::Metric { op, value, .. } = &probe {
            // The comparison the metric names is one more condition, judged and explained as
            // the others: `[BODY].value (130) < 100`.
            c.conditions.push(format!("[BODY].value {} {value}", op.text()));
        }
        if matches!(probe, ProbeSpec::Heartbeat { .. }) {
            // One missed beat fails a heartbeat, one beat brings it back (as Gatus's external
            // endpoints' heartbeats), unless the check says otherwise.
            if !thresholds.0 {
                c.failure_threshold = 1;
            }
            if !thresholds.1 {
                c.success_threshold = 1;
            }
        }
        c.probe = probe;
        Some(c)
    }

    fn positive(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let d = self.duration(n, what)?;
        if d.is_zero() {
            self.err(n.pos, format!("{what} must be more than zero"));
            return None;
        }
        Some(d)
    }

    fn conditions(&mut self, n: &Node, probe: &ProbeSpec, ctx: &str, field: &str) -> Vec<String> {
        let NodeKind::Seq(items) = &n.kind else {
            self.err(n.pos, format!("`{field}` must be a list such as [\"[STATUS] == 200\"]"));
            return Vec::new();
        };
        if matches!(probe, ProbeSpec::Heartbeat { .. }) {
            self.err(
                n.pos,
                format!("{ctx} is a heartbeat: it has no `{field}` (a missed beat fails it)"),
            );
            return Vec::new();
        }
        let gives: &[&str] = match probe {
            ProbeSpec::Http { .. } => &[
                "[STATUS]",
                "[RESPONSE_TIME]",
                "[BODY]",
                "[CONNECTED]",
                "[CERTIFICATE_EXPIRATION]",
                "[IP]",
            ],
            ProbeSpec::Tcp { .. } => &["[CONNECTED]", "[RESPONSE_TIME]", "[IP]"],
            ProbeSpec::Dns { .. } => &["[DNS_RCODE]", "[BODY]", "[IP]", "[RESPONSE_TIME]", "[CONNECTED]"],
            ProbeSpec::Command(_) | ProbeSpec::Process { .. } => &["[CONNECTED]", "[BODY]", "[RESPONSE_TIME]"],
            ProbeSpec::Metric { .. } => &["[STATUS]", "[CONNECTED]", "[BODY]", "[RESPONSE_TIME]"],
            ProbeSpec::Heartbeat { .. } => &[],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(text) = self.string(item, "a condition") else {
                continue;
            };
            // Where the condition's first character is: after the opening quote if quoted.
            let quoted = matches!(item.kind, NodeKind::Scalar { plain: false, .. });
            let at = |column: usize| crate::Pos {
                line: item.pos.line,
                col: item.pos.col + usize::from(quoted) + column - 1,
            };
            match Condition::parse(&text) {
                Err(e) => self.err_help(
                    at(e.column),
                    format!("invalid condition `{text}`: {}", e.message),
                    "Gatus's condition language: `[STATUS] == 200`, `[BODY].status == ok`, `[RESPONSE_TIME] < 500`",
                ),
                Ok(c) => {
                    let kind = match probe {
                        ProbeSpec::Http { .. } => "an http",
                        ProbeSpec::Tcp { .. } => "a tcp",
                        ProbeSpec::Dns { .. } => "a dns",
                        ProbeSpec::Process { .. } => "a process",
                        ProbeSpec::Metric { .. } => "a metric",
                        _ => "a command",
                    };
                    let wrong: Vec<&'static str> = c
                        .placeholders()
                        .into_iter()
                        .map(Placeholder::name)
                        .filter(|p| !gives.contains(p))
                        .collect();
                    if let Some(p) = wrong.first() {
                        self.err_help(
                            at(text.find(p).map_or(1, |i| text[..i].chars().count() + 1)),
                            format!("{kind} check has no {p}"),
                            format!("it gives {}", gives.join(", ")),
                        );
                    } else {
                        out.push(text);
                    }
                }
            }
        }
        out
    }

    fn http(&mut self, n: &Node) -> Option<ProbeSpec> {
        let fields = self.map(n, "`http`")?;
        let (mut url, mut path, mut method, mut headers, mut body, mut follow) =
            (None, None, "GET".to_string(), Vec::new(), None, true);
        let mut insecure = false;
        for (fk, fv) in fields {
            match key(fk) {
                "url" => {
                    if let Some(u) = self.string(fv, "`url`") {
                        if !(u.starts_with("http://") || u.starts_with("https://")) {
                            self.err(fv.pos, "`url` must start with http:// or https://");
                        }
                        url = Some(u);
                    }
                }
                "path" => {
                    if let Some(p) = self.string(fv, "`path`") {
                        if !p.starts_with('/') {
                            self.err(fv.pos, "`path` is a path starting with /");
                        }
                        path = Some(p);
                    }
                }
                "method" => {
                    if let Some(m) = self.string(fv, "`method`") {
                        let up = m.to_ascii_uppercase();
                        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&up.as_str()) {
                            self.err(fv.pos, format!("unknown HTTP method `{m}`"));
                        }
                        method = up;
                    }
                }
                "headers" => headers = self.variables(fv, "`headers`"),
                "body" => body = self.string(fv, "`body`"),
                "follow_redirects" => follow = self.bool(fv, "`follow_redirects`").unwrap_or(true),
                "insecure" => insecure = self.bool(fv, "`insecure`").unwrap_or(false),
                _ => self.unknown_key(
                    fk,
                    &[
                        "url",
                        "path",
                        "method",
                        "headers",
                        "body",
                        "follow_redirects",
                        "insecure",
                    ],
                    "`http`",
                ),
            }
        }
        if url.is_some() == path.is_some() {
            self.err_help(
                n.pos,
                "`http` needs a `url` or a `path`, not both",
                "`url: https://shop.example/healthz`, or `path: /healthz` with the check's `environment`",
            );
            return None;
        }
        Some(ProbeSpec::Http {
            url,
            path,
            method,
            headers,
            body,
            follow_redirects: follow,
            insecure,
        })
    }

    /// `process: {environment: E}` (or `process: {}` with the check's `environment`).
    fn process(&mut self, n: &Node) -> Option<ProbeSpec> {
        let mut environment = None;
        if !n.is_null() {
            for (k, v) in self.map(n, "`process`")? {
                match key(k) {
                    "environment" => environment = self.string(v, "`process.environment`"),
                    _ => self.unknown_key(k, &["environment"], "`process`"),
                }
            }
        }
        // Empty: the check's own `environment`, wherever it is written (filled in below).
        Some(ProbeSpec::Process {
            environment: environment.unwrap_or_default(),
        })
    }

    /// `metric: {url | path, name, labels, op, value}`: a series of a Prometheus page (`path`
    /// on the check's environment, `/metrics` when neither is given).
    fn metric_probe(&mut self, n: &Node) -> Option<ProbeSpec> {
        const KEYS: &[&str] = &["url", "path", "name", "labels", "op", "value"];
        let fields = self.map(n, "`metric`")?;
        let (mut url, mut path, mut name, mut labels, mut op, mut value) = (None, None, None, Vec::new(), None, None);
        let mut ok = true;
        for (fk, fv) in fields {
            match key(fk) {
                "url" => {
                    url = self.string(fv, "`metric.url`");
                    if url
                        .as_ref()
                        .is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                    {
                        self.err(fv.pos, "`metric.url` must start with http:// or https://");
                        ok = false;
                    }
                }
                "path" => {
                    path = self.string(fv, "`metric.path`");
                    if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                        self.err(fv.pos, "`metric.path` is a path starting with /");
                        ok = false;
                    }
                }
                "name" => {
                    name = self.string(fv, "`metric.name`");
                    if name.as_ref().is_some_and(|m| !is_metric_name(m)) {
                        self.err_help(
                            fv.pos,
                            "`metric.name` is not a Prometheus metric name",
                            "letters, digits, `_` and `:`, not starting with a digit, such as http_requests_total",
                        );
                        ok = false;
                    }
                }
                "labels" => labels = self.variables(fv, "`metric.labels`"),
                "op" => {
                    let text = self.string(fv, "`metric.op`");
                    op = text.as_deref().and_then(takt_monitor::condition::Op::parse);
                    if text.is_some() && op.is_none() {
                        self.err(fv.pos, "`metric.op` must be one of <, <=, >, >=, == or !=");
                        ok = false;
                    }
                }
                "value" => {
                    value = fv
                        .as_str()
                        .filter(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
                        .map(str::to_string);
                    if value.is_none() {
                        self.err(fv.pos, "`metric.value` must be a number, such as 100 or 0.5");
                        ok = false;
                    }
                }
                _ => self.unknown_key(fk, KEYS, "`metric`"),
            }
        }
        if url.is_some() && path.is_some() {
            self.err_help(
                n.pos,
                "`metric` needs a `url` or a `path`, not both",
                "`url: http://10.0.0.5:9100/metrics`, or `path: /metrics` (the default) on the check's `environment`",
            );
            return None;
        }
        let (Some(name), Some(op), Some(value)) = (name, op, value) else {
            if ok {
                self.err_help(
                    n.pos,
                    "`metric` needs the series' `name` and the comparison's `op` and `value`",
                    "such as `metric: {name: queue_depth, labels: {queue: mail}, op: \"<\", value: 100}`",
                );
            }
            return None;
        };
        if url.is_none() && path.is_none() {
            path = Some("/metrics".to_string());
        }
        Some(ProbeSpec::Metric {
            url,
            path,
            name,
            labels,
            op,
            value,
        })
    }

    fn tcp(&mut self, n: &Node) -> Option<ProbeSpec> {
        let fields = self.map(n, "`tcp`")?;
        let (mut host, mut port) = (None, None);
        for (fk, fv) in fields {
            match key(fk) {
                "host" => host = self.string(fv, "`host`"),
                "port" => {
                    port = fv.as_str().and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                    if port.is_none() {
                        self.err(fv.pos, "`port` must be a port number from 1 to 65535");
                    }
                }
                _ => self.unknown_key(fk, &["host", "port"], "`tcp`"),
            }
        }
        match (host, port) {
            (Some(host), Some(port)) => Some(ProbeSpec::Tcp { host, port }),
            _ => {
                self.err(n.pos, "`tcp` needs a `host` and a `port`");
                None
            }
        }
    }

    fn dns(&mut self, n: &Node) -> Option<ProbeSpec> {
        let fields = self.map(n, "`dns`")?;
        let (mut name, mut record, mut server) = (None, "A".to_string(), None);
        for (fk, fv) in fields {
            match key(fk) {
                "name" => name = self.string(fv, "`name`"),
                "type" => {
                    if let Some(t) = self.string(fv, "`type`") {
                        let up = t.to_ascii_uppercase();
                        if !["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR"].contains(&up.as_str()) {
                            self.err(
                                fv.pos,
                                format!("unknown DNS record type `{t}`: use A, AAAA, CNAME, MX, NS, TXT, SRV or PTR"),
                            );
                        }
                        record = up;
                    }
                }
                "server" => server = self.string(fv, "`server`"),
                _ => self.unknown_key(fk, &["name", "type", "server"], "`dns`"),
            }
        }
        let Some(name) = name else {
            self.err(n.pos, "`dns` needs the `name` to resolve");
            return None;
        };
        Some(ProbeSpec::Dns { name, record, server })
    }

    fn heartbeat(&mut self, n: &Node) -> Option<ProbeSpec> {
        let fields = self.map(n, "`heartbeat`")?;
        let (mut every, mut grace) = (None, None);
        let mut named = false;
        for (fk, fv) in fields {
            named |= key(fk) == "every";
            // Beyond a year a beat is not a heartbeat (and far beyond, no clock can hold it).
            const MOST: Duration = Duration::from_secs(366 * 86_400);
            let (field, d) = match key(fk) {
                "every" => ("every", self.positive(fv, "`every`")),
                "grace" => ("grace", self.duration(fv, "`grace`")),
                _ => {
                    self.unknown_key(fk, &["every", "grace"], "`heartbeat`");
                    continue;
                }
            };
            let d = match d {
                Some(d) if d > MOST => {
                    self.err(fv.pos, format!("`{field}` is at most 366d"));
                    None
                }
                d => d,
            };
            if field == "every" {
                every = d;
            } else {
                grace = d;
            }
        }
        let Some(every) = every else {
            // An `every` that did not parse has said why already.
            if !named {
                self.err(
                    n.pos,
                    "`heartbeat` needs `every`, how often a beat is expected (such as 24h)",
                );
            }
            return None;
        };
        Some(ProbeSpec::Heartbeat {
            every,
            // A tenth of the period late is still on time, unless said otherwise.
            grace: grace.unwrap_or(every / 10),
        })
    }
}

impl Cx {
    /// `maintenance:`: a list of windows, each `start: "HH:MM"` (UTC, daily, or on the weekdays
    /// of `every`) or `at: RFC 3339` (once), with a `duration` and the `services` it covers.
    pub(super) fn maintenance(&mut self, n: &Node) -> Vec<takt_monitor::maintenance::Window> {
        use takt_monitor::maintenance::{Start, Window};
        let NodeKind::Seq(items) = &n.kind else {
            self.err_help(
                n.pos,
                "`maintenance` must be a list of windows",
                "- {start: \"23:00\", duration: 1h, every: [sunday]}   or   - {at: 2026-12-24T22:00:00Z, duration: 2h}",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(fields) = self.map(item, "a maintenance window") else {
                continue;
            };
            let (mut start, mut at, mut duration, mut every, mut services) = (None, None, None, Vec::new(), Vec::new());
            let mut ok = true;
            for (fk, fv) in fields {
                match key(fk) {
                    "start" => match self.string(fv, "`start`") {
                        Some(t) => match hh_mm(&t) {
                            Some(m) => start = Some(m),
                            None => {
                                self.err(
                                    fv.pos,
                                    format!("`start` is a UTC time of day such as \"23:00\", not `{t}`"),
                                );
                                ok = false;
                            }
                        },
                        None => ok = false,
                    },
                    "at" => match self.string(fv, "`at`") {
                        Some(t) => match takt_model::timefmt::parse_rfc3339(&t) {
                            Some(when) => at = Some(when.unix_timestamp()),
                            None => {
                                self.err(
                                    fv.pos,
                                    format!("`at` is an RFC 3339 time such as 2026-12-24T22:00:00Z, not `{t}`"),
                                );
                                ok = false;
                            }
                        },
                        None => ok = false,
                    },
                    "duration" => {
                        duration = self.positive(fv, "`duration`");
                        ok &= duration.is_some();
                    }
                    "every" => {
                        for d in self.strings(fv, "`every`").unwrap_or_default() {
                            match weekday(&d) {
                                Some(w) => every.push(w),
                                None => {
                                    self.err(fv.pos, format!("`every` lists weekdays such as monday, not `{d}`"));
                                    ok = false;
                                }
                            }
                        }
                    }
                    "services" => services = self.strings(fv, "`services`").unwrap_or_default(),
                    _ => self.unknown_key(
                        fk,
                        &["start", "at", "duration", "every", "services"],
                        "a maintenance window",
                    ),
                }
            }
            let begins = match (start, at) {
                (Some(minute), None) => Some(Start::Daily { minute, days: every }),
                (None, Some(at)) if every.is_empty() => Some(Start::Once { at }),
                (None, Some(_)) => {
                    self.err(
                        item.pos,
                        "`every` goes with a daily `start`, not with `at` (a window once)",
                    );
                    None
                }
                (Some(_), Some(_)) => {
                    self.err(
                        item.pos,
                        "a maintenance window has a `start` (daily) or an `at` (once), not both",
                    );
                    None
                }
                (None, None) => {
                    if ok {
                        self.err_help(
                            item.pos,
                            "a maintenance window needs a `start` or an `at`",
                            "start: \"23:00\" (daily, UTC) or at: 2026-12-24T22:00:00Z",
                        );
                    }
                    None
                }
            };
            let Some(begins) = begins else { continue };
            let Some(duration) = duration else {
                if ok {
                    self.err(item.pos, "a maintenance window needs a `duration` (such as 1h)");
                }
                continue;
            };
            if ok {
                out.push(Window {
                    start: begins,
                    duration_s: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
                    services,
                });
            }
        }
        out
    }
}

/// Minutes past midnight of `HH:MM`.
fn hh_mm(t: &str) -> Option<i64> {
    let (h, m) = t.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// 0 Monday .. 6 Sunday.
fn weekday(d: &str) -> Option<u8> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let d = d.to_ascii_lowercase();
    DAYS.iter().position(|x| *x == d || x[..3] == d).map(|i| i as u8)
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(m: &str) -> bool {
    let mut chars = m.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
