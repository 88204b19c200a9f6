//! Gatus's condition language, as its documentation defines it: `LEFT OPERATOR RIGHT`, with
//! `==`, `!=`, `<`, `<=`, `>`, `>=` (a space on each side); placeholders `[STATUS]`,
//! `[RESPONSE_TIME]` (ms), `[BODY]` with a JSONPath (`[BODY].data[0].id`), `[CONNECTED]`,
//! `[CERTIFICATE_EXPIRATION]` (ms; compare with a duration such as `48h`), `[IP]`,
//! `[DNS_RCODE]`; functions `len()` and `has()` on `[BODY]`, and `pat()` (`*` matches any run
//! of characters) and `any()` on the right of `==` or `!=`.
//!
//! [`Condition::parse`] checks a condition once (an error names its column, for `takt lint`);
//! [`Condition::evaluate`] judges a probe's result and explains it the way Gatus does
//! (`[STATUS] (503) == 200`).

use std::time::Duration;

/// A condition that does not parse: where (1-based column in the condition) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ConditionError {
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Placeholder {
    /// As written in a condition, without a path: `[STATUS]`, `[BODY]`, …
    pub fn name(&self) -> &'static str {
        match self {
            Placeholder::Status => "[STATUS]",
            Placeholder::ResponseTime => "[RESPONSE_TIME]",
            Placeholder::Body(_) => "[BODY]",
            Placeholder::Connected => "[CONNECTED]",
            Placeholder::CertificateExpiration => "[CERTIFICATE_EXPIRATION]",
            Placeholder::Ip => "[IP]",
            Placeholder::DnsRcode => "[DNS_RCODE]",
        }
    }
}

impl Op {
    /// The operator as written: `<`, `!=`, …
    pub fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    /// The operator written `text`, if it is one.
    pub fn parse(text: &str) -> Option<Op> {
        [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]
            .into_iter()
            .find(|o| o.text() == text.trim())
    }
}

/// The placeholders a probe fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    Status,
    ResponseTime,
    /// The body, or the value at this JSONPath in it.
    Body(Vec<Segment>),
    Connected,
    CertificateExpiration,
    Ip,
    DnsRcode,
}

const PLACEHOLDERS: &[&str] = &[
    "STATUS",
    "RESPONSE_TIME",
    "BODY",
    "CONNECTED",
    "CERTIFICATE_EXPIRATION",
    "IP",
    "DNS_RCODE",
];

/// One step of a JSONPath: `.key` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Placeholder(Placeholder, String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Value(Value),
    Len(Value),
    Has(Value),
    Pat(String),
    Any(Vec<String>),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub text: String,
    left: Side,
    op: Op,
    right: Side,
}

/// What a probe saw; `None` where the probe does not give it (a TCP check has no status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub status: Option<u16>,
    pub response_time: Duration,
    pub body: Option<String>,
    pub connected: bool,
    /// Time left before the server's certificate expires (TLS only).
    pub certificate_expiration: Option<Duration>,
    pub ip: Option<String>,
    pub dns_rcode: Option<String>,
}

/// A condition's verdict on one probe, explained with the values it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub success: bool,
    /// As Gatus writes it: `[STATUS] (503) == 200`.
    pub explained: String,
}

fn err(column: usize, message: impl Into<String>) -> ConditionError {
    ConditionError {
        column,
        message: message.into(),
    }
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let found = [" == ", " != ", " <= ", " >= ", " < ", " > "]
            .iter()
            .zip([Op::Eq, Op::Ne, Op::Le, Op::Ge, Op::Lt, Op::Gt])
            .find_map(|(sep, op)| text.find(sep).map(|at| (at, sep.len(), op)));
        let Some((at, len, op)) = found else {
            return Err(err(
                1,
                "no comparison: write `LEFT OPERATOR RIGHT` with ==, !=, <, <=, > or >= and a space on each side",
            ));
        };
        let (l, r) = (&text[..at], &text[at + len..]);
        let left = side(l, column_of(text, l))?;
        let right = side(r, column_of(text, r))?;
        for (s, col) in [(&left, column_of(text, l)), (&right, column_of(text, r))] {
            if matches!(s, Side::Pat(_) | Side::Any(_)) && !matches!(op, Op::Eq | Op::Ne) {
                return Err(err(
                    col,
                    format!("pat() and any() compare with == or !=, not {}", op.text()),
                ));
            }
        }
        Ok(Condition {
            text: text.to_string(),
            left,
            op,
            right,
        })
    }

    /// The placeholders it reads (for checking them against what a probe kind gives).
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        [&self.left, &self.right]
            .into_iter()
            .filter_map(|s| match s {
                Side::Value(Value::Placeholder(p, _))
                | Side::Len(Value::Placeholder(p, _))
                | Side::Has(Value::Placeholder(p, _)) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Judges `probe`.
    pub fn evaluate(&self, probe: &Probe) -> Verdict {
        let body = probe
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
        let l = resolve(&self.left, probe, body.as_ref());
        let r = resolve(&self.right, probe, body.as_ref());
        let success = match (&l, &r) {
            (Ok(a), Ok(b)) => compare(a, self.op, b, &self.left, &self.right),
            _ => false,
        };
        let show = |s: &Side, v: &Result<Resolved, String>| -> String {
            let shown = match v {
                Ok(Resolved::Text(t)) => t.clone(),
                Ok(Resolved::Pattern(p)) => format!("pat({p})"),
                Ok(Resolved::AnyOf(a)) => format!("any({})", a.join(", ")),
                Err(why) => format!("INVALID: {why}"),
            };
            match s {
                Side::Value(Value::Literal(t)) if matches!(v, Ok(Resolved::Text(x)) if x == t) => t.clone(),
                Side::Pat(_) | Side::Any(_) => shown,
                other => format!("{} ({shown})", source(other)),
            }
        };
        Verdict {
            success,
            explained: format!("{} {} {}", show(&self.left, &l), self.op.text(), show(&self.right, &r)),
        }
    }
}

/// The column (1-based, in characters) where `part`, a slice of `text`, starts after its spaces.
fn column_of(text: &str, part: &str) -> usize {
    let offset = part.as_ptr() as usize - text.as_ptr() as usize;
    let lead = part.len() - part.trim_start().len();
    text[..offset + lead].chars().count() + 1
}

fn source(s: &Side) -> String {
    match s {
        Side::Value(Value::Placeholder(_, t) | Value::Literal(t)) => t.clone(),
        Side::Len(Value::Placeholder(_, t) | Value::Literal(t)) => format!("len({t})"),
        Side::Has(Value::Placeholder(_, t) | Value::Literal(t)) => format!("has({t})"),
        Side::Pat(p) => format!("pat({p})"),
        Side::Any(a) => format!("any({})", a.join(", ")),
    }
}

fn side(raw: &str, column: usize) -> Result<Side, ConditionError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(err(column, "one side of the comparison is empty"));
    }
    for (name, make) in [("len(", Side::Len as fn(Value) -> Side), ("has(", Side::Has)] {
        if let Some(inner) = s.strip_prefix(name) {
            let inner = inner
                .strip_suffix(')')
                .ok_or_else(|| err(column, format!("`{}` is not closed with `)`", &name[..3])))?;
            let v = value(inner.trim(), column + name.len())?;
            if !matches!(v, Value::Placeholder(Placeholder::Body(_), _)) {
                return Err(err(
                    column + name.len(),
                    format!("{}() takes [BODY] or a path in it, such as [BODY].items", &name[..3]),
                ));
            }
            return Ok(make(v));
        }
    }
    if let Some(inner) = s.strip_prefix("pat(") {
        let inner = inner
            .strip_suffix(')')
            .ok_or_else(|| err(column, "`pat` is not closed with `)`"))?;
        return Ok(Side::Pat(inner.to_string()));
    }
    if let Some(inner) = s.strip_prefix("any(") {
        let inner = inner
            .strip_suffix(')')
            .ok_or_else(|| err(column, "`any` is not closed with `)`"))?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err(err(
                column,
                "any() takes values separated by commas, such as any(200, 201)",
            ));
        }
        return Ok(Side::Any(values));
    }
    Ok(Side::Value(value(s, column)?))
}

fn value(s: &str, column: usize) -> Result<Value, ConditionError> {
    let Some(rest) = s.strip_prefix('[') else {
        return Ok(Value::Literal(s.to_string()));
    };
    let Some(end) = rest.find(']') else {
        return Err(err(column, "a placeholder is not closed with `]`"));
    };
    let (name, after) = (&rest[..end], &rest[end + 1..]);
    let placeholder = match name {
        "STATUS" => Placeholder::Status,
        "RESPONSE_TIME" => Placeholder::ResponseTime,
        "BODY" => Placeholder::Body(path(after, column + end + 2)?),
        "CONNECTED" => Placeholder::Connected,
        "CERTIFICATE_EXPIRATION" => Placeholder::CertificateExpiration,
        "IP" => Placeholder::Ip,
        "DNS_RCODE" => Placeholder::DnsRcode,
        other => {
            let near = PLACEHOLDERS
                .iter()
                .min_by_key(|p| strsim::levenshtein(p, &other.to_ascii_uppercase()))
                .filter(|p| strsim::levenshtein(p, &other.to_ascii_uppercase()) <= 3);
            let hint = match near {
                Some(p) => format!("did you mean [{p}]?"),
                None => format!(
                    "use one of {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("[{p}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(err(column, format!("unknown placeholder [{other}]: {hint}")));
        }
    };
    if !after.is_empty() && !matches!(placeholder, Placeholder::Body(_)) {
        return Err(err(
            column + end + 2,
            format!("only [BODY] takes a path; [{name}] is followed by `{after}`"),
        ));
    }
    Ok(Value::Placeholder(placeholder, s.to_string()))
}

/// `.data[0].id` → [Key(data), Index(0), Key(id)].
fn path(s: &str, column: usize) -> Result<Vec<Segment>, ConditionError> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut col = column;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(err(
                    col + 1,
                    "a `.` in a JSONPath is followed by a key, such as [BODY].data",
                ));
            }
            out.push(Segment::Key(r[..end].to_string()));
            col += 1 + r[..end].chars().count();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| err(col, "`[` in a JSONPath is not closed with `]`"))?;
            let i = r[..end]
                .trim()
                .parse::<usize>()
                .map_err(|_| err(col + 1, format!("`[{}]` is not an array index such as [0]", &r[..end])))?;
            out.push(Segment::Index(i));
            col += 2 + r[..end].chars().count();
            rest = &r[end + 1..];
        } else {
            return Err(err(
                col,
                format!("a JSONPath goes on with `.key` or `[index]`, not `{rest}`"),
            ));
        }
    }
    Ok(out)
}

enum Resolved {
    Text(String),
    Pattern(String),
    AnyOf(Vec<String>),
}

fn resolve(s: &Side, p: &Probe, body: Option<&serde_json::Value>) -> Result<Resolved, String> {
    Ok(match s {
        Side::Value(v) => Resolved::Text(text(v, p, body)?),
        Side::Len(v) => {
            let n = match json_at(v, p, body)? {
                Some(serde_json::Value::Array(a)) => a.len(),
                Some(serde_json::Value::Object(o)) => o.len(),
                Some(serde_json::Value::String(s)) => s.chars().count(),
                Some(other) => other.to_string().chars().count(),
                None => text(v, p, body)?.chars().count(),
            };
            Resolved::Text(n.to_string())
        }
        Side::Has(v) => Resolved::Text(json_at(v, p, body).is_ok_and(|x| x.is_some()).to_string()),
        Side::Pat(pattern) => Resolved::Pattern(pattern.clone()),
        Side::Any(values) => Resolved::AnyOf(values.clone()),
    })
}

/// The JSON value at a `[BODY]` path (`None`: the whole body is asked for, not a path).
fn json_at(v: &Value, p: &Probe, body: Option<&serde_json::Value>) -> Result<Option<serde_json::Value>, String> {
    let Value::Placeholder(Placeholder::Body(segments), _) = v else {
        return Ok(None);
    };
    if segments.is_empty() {
        return Ok(body.cloned().or_else(|| p.body.clone().map(serde_json::Value::String)));
    }
    let mut at = body.ok_or("the body is not JSON")?;
    for s in segments {
        at = match s {
            Segment::Key(k) => at.get(k.as_str()),
            Segment::Index(i) => at.get(*i),
        }
        .ok_or("no such path in the body")?;
    }
    Ok(Some(at.clone()))
}

fn text(v: &Value, p: &Probe, body: Option<&serde_json::Value>) -> Result<String, String> {
    let ph = match v {
        Value::Literal(t) => return Ok(t.clone()),
        Value::Placeholder(ph, _) => ph,
    };
    Ok(match ph {
        Placeholder::Status => p.status.ok_or("no HTTP status")?.to_string(),
        Placeholder::ResponseTime => p.response_time.as_millis().to_string(),
        Placeholder::Body(segments) if segments.is_empty() => p.body.clone().unwrap_or_default(),
        Placeholder::Body(_) => match json_at(v, p, body)? {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        },
        Placeholder::Connected => p.connected.to_string(),
        Placeholder::CertificateExpiration => p
            .certificate_expiration
            .ok_or("no TLS certificate")?
            .as_millis()
            .to_string(),
        Placeholder::Ip => p.ip.clone().ok_or("no IP address")?,
        Placeholder::DnsRcode => p.dns_rcode.clone().ok_or("no DNS answer")?,
    })
}

fn compare(a: &Resolved, op: Op, b: &Resolved, left: &Side, right: &Side) -> bool {
    let equal = match (a, b) {
        (Resolved::Text(x), Resolved::Pattern(p)) | (Resolved::Pattern(p), Resolved::Text(x)) => wildcard(p, x),
        (Resolved::Text(x), Resolved::AnyOf(v)) | (Resolved::AnyOf(v), Resolved::Text(x)) => v.iter().any(|y| y == x),
        (Resolved::Text(x), Resolved::Text(y)) => x == y,
        _ => false,
    };
    match op {
        Op::Eq => equal,
        Op::Ne => !equal,
        _ => {
            let (Resolved::Text(x), Resolved::Text(y)) = (a, b) else {
                return false;
            };
            let (Some(x), Some(y)) = (number(x, left, right), number(y, right, left)) else {
                return false;
            };
            match op {
                Op::Lt => x < y,
                Op::Le => x <= y,
                Op::Gt => x > y,
                _ => x >= y,
            }
        }
    }
}

/// A side as a number; a literal duration (`48h`, `1h30m`, `500ms`) is milliseconds, as the
/// time placeholders are.
fn number(s: &str, this: &Side, _other: &Side) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    if let Side::Value(Value::Literal(_)) = this {
        return duration_ms(s.trim());
    }
    None
}

/// Go's duration syntax (Gatus parses `48h` with it): numbers with h, m, s, ms, us, ns.
fn duration_ms(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        let r = &rest[n_end..];
        let u_end = r.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(r.len());
        let ms = match &r[..u_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += n * ms;
        rest = &r[u_end..];
    }
    Some(total as i64)
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut at = first.len();
    let end = s.len() - last.len();
    for mid in &parts[1..parts.len() - 1] {
        match s[at..end].find(mid) {
            Some(i) => at += i + mid.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            status: Some(200),
            response_time: Duration::from_millis(42),
            body: Some(r#"{"status":"ok","data":[{"id":1,"name":"john"}],"items":[1,2,3],"error":null}"#.into()),
            connected: true,
            certificate_expiration: Some(Duration::from_secs(72 * 3600)),
            ip: Some("127.0.0.1".into()),
            dns_rcode: Some("NOERROR".into()),
        }
    }

    fn ok(c: &str) -> bool {
        Condition::parse(c).unwrap().evaluate(&probe()).success
    }

    #[test]
    fn gatus_examples_judge_as_gatus_does() {
        for (c, want) in [
            ("[STATUS] == 200", true),
            ("[STATUS] != 200", false),
            ("[STATUS] < 300", true),
            ("[STATUS] >= 500", false),
            ("[STATUS] == any(200, 201)", true),
            ("[STATUS] == any(500, 503)", false),
            ("[STATUS] == pat(2*)", true),
            ("[RESPONSE_TIME] < 500", true),
            ("[RESPONSE_TIME] > 40", true),
            ("[BODY].status == ok", true),
            ("[BODY].data[0].id == 1", true),
            ("[BODY].data[0].name == pat(jo*)", true),
            ("[BODY].data[1].id == 1", false),
            ("len([BODY].items) == 3", true),
            ("len([BODY].data[0].name) == 4", true),
            ("has([BODY].error) == true", true),
            ("has([BODY].missing) == false", true),
            ("[BODY] == pat(*\"ok\"*)", true),
            ("[CONNECTED] == true", true),
            ("[CERTIFICATE_EXPIRATION] > 48h", true),
            ("[CERTIFICATE_EXPIRATION] > 96h", false),
            ("[CERTIFICATE_EXPIRATION] > 1h30m", true),
            ("[IP] == 127.0.0.1", true),
            ("[DNS_RCODE] == NOERROR", true),
            ("[DNS_RCODE] != NXDOMAIN", true),
        ] {
            assert_eq!(ok(c), want, "{c}");
        }
    }

    #[test]
    fn a_verdict_shows_the_values_it_saw() {
        let mut p = probe();
        p.status = Some(503);
        let v = Condition::parse("[STATUS] == 200").unwrap().evaluate(&p);
        assert_eq!((v.success, v.explained.as_str()), (false, "[STATUS] (503) == 200"));
        let v = Condition::parse("len([BODY].items) > 5").unwrap().evaluate(&p);
        assert_eq!(v.explained, "len([BODY].items) (3) > 5");
        // What a probe cannot give fails the condition and says why.
        p.certificate_expiration = None;
        let v = Condition::parse("[CERTIFICATE_EXPIRATION] > 48h").unwrap().evaluate(&p);
        assert!(!v.success);
        assert_eq!(
            v.explained,
            "[CERTIFICATE_EXPIRATION] (INVALID: no TLS certificate) > 48h"
        );
        let v = Condition::parse("[BODY].nope == 1").unwrap().evaluate(&p);
        assert!(v.explained.contains("no such path in the body"), "{}", v.explained);
        // A body that is not JSON: paths fail, the whole body still compares.
        p.body = Some("pong".into());
        assert!(Condition::parse("[BODY] == pong").unwrap().evaluate(&p).success);
        assert!(!Condition::parse("[BODY].a == 1").unwrap().evaluate(&p).success);
    }

    #[test]
    fn bad_conditions_name_their_column_and_what_to_write() {
        for (c, column, says) in [
            ("[STATUS]==200", 1, "no comparison"),
            ("[STAUTS] == 200", 1, "did you mean [STATUS]?"),
            ("[STATUS] == ", 13, "one side of the comparison is empty"),
            ("[WHATEVER] == 1", 1, "use one of [STATUS]"),
            ("[STATUS].x == 1", 9, "only [BODY] takes a path"),
            ("[BODY].data[x] == 1", 13, "not an array index"),
            ("[BODY]..a == 1", 8, "followed by a key"),
            ("len([STATUS]) == 3", 5, "len() takes [BODY]"),
            ("[STATUS] < pat(2*)", 12, "with == or !="),
            ("[STATUS] == any(200,)", 13, "separated by commas"),
            ("[STATUS == 200", 1, "not closed with `]`"),
            ("len([BODY] == 3", 1, "not closed with `)`"),
        ] {
            let e = Condition::parse(c).unwrap_err();
            assert!(e.message.contains(says), "{c}: {e}");
            assert_eq!(e.column, column, "{c}: {e}");
        }
    }

    #[test]
    fn wildcards_and_durations() {
        assert!(wildcard("*", ""));
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("*b*", "abc"));
        assert!(!wildcard("a*c", "ab"));
        assert!(!wildcard("abc", "abcd"));
        assert_eq!(duration_ms("48h"), Some(172_800_000));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("3d"), None);
    }
}
