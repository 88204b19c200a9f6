//! The status page as plain HTML (no JavaScript; the web UI's stylesheet, `/ui/app.css`, gives it
//! the same colours, light and dark) and its incidents as an Atom feed (RFC 4287). Pure string
//! building; every value is escaped.

use crate::status::{IncidentLine, ServiceState, StatusPage};
use std::fmt::Write;

/// Escapes text for HTML and XML content and attributes; characters XML 1.0 forbids
/// (control characters other than tab and newlines, U+FFFE, U+FFFF) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An incident's place on the page, `incident-shop-3` for `shop#3`: letters, digits, `-`,
/// `_` and `.` only, so it is a valid HTML id, URL fragment and part of a tag URI.
fn anchor(id: &str) -> String {
    let mut out = String::from("incident-");
    out.extend(id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || "-_.".contains(c) {
            c
        } else {
            '-'
        }
    }));
    out
}

fn color(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Operational => "#2e7d32",
        ServiceState::UnderMaintenance => "#1565c0",
        ServiceState::Degraded => "#f9a825",
        ServiceState::PartialOutage => "#ef6c00",
        ServiceState::MajorOutage => "#c62828",
    }
}

fn status_name(s: takt_model::IncidentStatus) -> &'static str {
    s.into()
}

fn incident_html(out: &mut String, i: &IncidentLine) {
    let _ = write!(
        out,
        "<article class=\"incident\" id=\"{id}\"><h3>{title}</h3><p class=\"meta\">{status} · {severity} · {services} · since {start}{end}</p><ul>",
        id = anchor(&i.id),
        title = escape(&i.title),
        status = status_name(i.status),
        severity = <&str>::from(i.severity),
        services = escape(&i.services.join(", ")),
        start = escape(&i.started_at),
        end = i
            .resolved_at
            .as_ref()
            .map(|r| format!(", resolved {}", escape(r)))
            .unwrap_or_default(),
    );
    for u in &i.updates {
        let _ = write!(
            out,
            "<li><time>{}</time> {}{}</li>",
            escape(&u.at),
            u.status
                .map(|s| format!("<b>{}</b> ", status_name(s)))
                .unwrap_or_default(),
            escape(&u.text)
        );
    }
    out.push_str("</ul></article>");
}

/// `/status`.
pub fn html(p: &StatusPage, title: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title>\
<link rel=\"alternate\" type=\"application/atom+xml\" title=\"Incidents\" href=\"/status/feed.xml\">\
<link rel=\"stylesheet\" href=\"/ui/app.css\">\
<style>body{{max-width:56rem;margin:2rem auto;padding:0 1rem}}\
.banner{{padding:1rem;color:#fff;border-radius:.4rem;font-size:1.2rem}}.service{{border-bottom:1px solid var(--line,#ddd);padding:.8rem 0}}\
.bars{{display:flex;gap:1px;height:2rem;margin:.4rem 0}}.bars span{{flex:1;border-radius:1px}}.meta{{color:var(--muted,#666);font-size:.9rem}}\
.state{{float:right;font-weight:600}}</style></head><body><main id=\"main\"><h1>{t}</h1><p class=\"banner\" style=\"background:{c}\">{label}</p>",
        t = escape(title),
        c = color(p.state),
        label = if p.state == ServiceState::Operational {
            "All systems operational"
        } else {
            p.state.label()
        },
    );
    if !p.open_incidents.is_empty() {
        out.push_str("<section><h2>Current incidents</h2>");
        for i in &p.open_incidents {
            incident_html(&mut out, i);
        }
        out.push_str("</section>");
    }
    if !p.maintenance.is_empty() {
        out.push_str("<section><h2>Maintenance</h2><ul>");
        for m in &p.maintenance {
            let _ = write!(
                out,
                "<li>{}{}: {} to {}</li>",
                if m.active { "<b>Under way</b> · " } else { "" },
                escape(&m.services.join(", ")),
                escape(&m.starts_at),
                escape(&m.ends_at)
            );
        }
        out.push_str("</ul></section>");
    }
    out.push_str("<section><h2>Services</h2>");
    if p.services.is_empty() {
        out.push_str("<p>No public checks yet: mark checks <code>public: true</code> in takt.yml.</p>");
    }
    for s in &p.services {
        let _ = write!(
            out,
            "<div class=\"service\"><span class=\"state\" style=\"color:{c}\">{label}</span><h3>{name}</h3><div class=\"bars\" role=\"img\" aria-label=\"uptime, last 90 days\">",
            c = color(s.state),
            label = s.state.label(),
            name = escape(&s.name),
        );
        for d in &s.days {
            let (bg, tip) = match d.uptime {
                None => ("#e0e0e0".to_string(), "no data".to_string()),
                Some(u) if u >= 0.999 => ("#43a047".to_string(), format!("{:.2}%", u * 100.0)),
                Some(u) if u >= 0.99 => ("#fdd835".to_string(), format!("{:.2}%", u * 100.0)),
                Some(u) => ("#e53935".to_string(), format!("{:.2}%", u * 100.0)),
            };
            let day = time::OffsetDateTime::from_unix_timestamp(d.day)
                .map(|t| t.date().to_string())
                .unwrap_or_default();
            let _ = write!(out, "<span style=\"background:{bg}\" title=\"{day}: {tip}\"></span>");
        }
        let _ = write!(
            out,
            "</div><p class=\"meta\">90 days ago · {} uptime · today</p></div>",
            s.uptime
                .map(|u| format!("{:.3}%", u * 100.0))
                .unwrap_or_else(|| "no".into())
        );
    }
    out.push_str("</section>");
    if !p.resolved_incidents.is_empty() {
        out.push_str("<section><h2>Past incidents (14 days)</h2>");
        for i in &p.resolved_incidents {
            incident_html(&mut out, i);
        }
        out.push_str("</section>");
    }
    let _ = write!(
        out,
        "<p class=\"meta\">Updated {} · <a href=\"/status.json\">JSON</a> · <a href=\"/status/feed.xml\">Atom feed</a></p></main></body></html>",
        escape(&p.generated_at)
    );
    out
}

/// `/status/feed.xml`: one entry per incident (open and recently resolved), newest first.
pub fn atom(p: &StatusPage, title: &str, base: &str) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>{t}</title><id>tag:takt,2026:status</id>\
<link rel=\"alternate\" href=\"{b}/status\"/><link rel=\"self\" href=\"{b}/status/feed.xml\"/><updated>{u}</updated><author><name>takt</name></author>",
        t = escape(title),
        b = escape(base),
        u = escape(&p.generated_at),
    );
    for i in p.open_incidents.iter().chain(&p.resolved_incidents) {
        let updated = i.updates.first().map_or(i.started_at.as_str(), |u| u.at.as_str());
        let mut body = String::new();
        incident_html(&mut body, i);
        let _ = write!(
            out,
            "<entry><id>tag:takt,2026:{id}</id><title>{title} ({status})</title><updated>{up}</updated><published>{start}</published>\
<link rel=\"alternate\" href=\"{b}/status#{id}\"/><content type=\"html\">{content}</content></entry>",
            b = escape(base),
            id = anchor(&i.id),
            title = escape(&i.title),
            status = status_name(i.status),
            up = escape(updated),
            start = escape(&i.started_at),
            content = escape(&body),
        );
    }
    out.push_str("</feed>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("bell\u{7}\ttab\u{FFFF}"), "bell\u{FFFD}\ttab\u{FFFD}");
        assert_eq!(anchor("shop#3"), "incident-shop-3");
        assert_eq!(anchor("a b<c>#1"), "incident-a-b-c--1");
    }
}
