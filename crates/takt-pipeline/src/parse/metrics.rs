//! `metrics:`: the band thresholds of the flow metrics (docs/metrics.md, "Bands").

use super::{Cx, key};
use crate::model::{Bands, MetricsConfig};
use crate::yaml::{Node, NodeKind};

const KEYS: &[&str] = &["bands", "min_sample"];
const BAND_KEYS: &[&str] = &[
    "deployment_frequency",
    "lead_time",
    "change_fail_rate",
    "recovery_time",
    "rework_rate",
];

impl Cx {
    /// `metrics: {bands: {KEY: [elite, high, medium]}, min_sample: N}`.
    pub(super) fn metrics(&mut self, n: &Node) -> MetricsConfig {
        let mut out = MetricsConfig::default();
        let Some(fields) = self.map(n, "`metrics`") else {
            return out;
        };
        for (k, v) in fields {
            match key(k) {
                "bands" => out.bands = self.bands(v),
                "min_sample" => match v.as_str().and_then(|t| t.parse::<u32>().ok()) {
                    Some(m) if (1..=10_000).contains(&m) => out.min_sample = Some(m),
                    _ => self.err(v.pos, "`min_sample` must be a whole number from 1 to 10000"),
                },
                _ => self.unknown_key(k, KEYS, "`metrics`"),
            }
        }
        out
    }

    fn bands(&mut self, n: &Node) -> Bands {
        let mut b = Bands::default();
        let Some(fields) = self.map(n, "`metrics.bands`") else {
            return b;
        };
        for (k, v) in fields {
            let name = key(k);
            let what = format!("`metrics.bands.{name}`");
            match name {
                "deployment_frequency" => b.deployment_frequency = self.bounds(v, &what, per_day, false),
                "lead_time" => b.lead_time_s = self.bounds(v, &what, seconds, true),
                "recovery_time" => b.recovery_s = self.bounds(v, &what, seconds, true),
                "change_fail_rate" => b.change_fail_rate = self.bounds(v, &what, rate, true),
                "rework_rate" => b.rework_rate = self.bounds(v, &what, rate, true),
                _ => self.unknown_key(k, BAND_KEYS, "`metrics.bands`"),
            }
        }
        b
    }

    /// Three bounds (elite, high, medium), each read by `read`, ascending when lower is better
    /// and descending when higher is.
    fn bounds(
        &mut self,
        n: &Node,
        what: &str,
        read: fn(&str) -> Result<f64, &'static str>,
        lower_is_better: bool,
    ) -> Option<[f64; 3]> {
        let help = "give the bounds of elite, high and medium, e.g. `[1d, 7d, 30d]` for a time, \
                    `[5%, 10%, 15%]` for a rate, `[1/day, 1/week, 1/month]` for a frequency";
        let NodeKind::Seq(items) = &n.kind else {
            self.err_help(n.pos, format!("{what} must be a list of three bounds"), help);
            return None;
        };
        if items.len() != 3 {
            self.err_help(
                n.pos,
                format!(
                    "{what} lists {} bounds; it needs three: elite, high, medium",
                    items.len()
                ),
                help,
            );
            return None;
        }
        let mut out = [0.0; 3];
        for (slot, item) in out.iter_mut().zip(items) {
            let text = self.string(item, what)?;
            match read(text.trim()) {
                Ok(v) => *slot = v,
                Err(expect) => {
                    self.err_help(item.pos, format!("{what}: `{text}` is not {expect}"), help);
                    return None;
                }
            }
        }
        let ordered = if lower_is_better {
            out[0] <= out[1] && out[1] <= out[2]
        } else {
            out[0] >= out[1] && out[1] >= out[2]
        };
        if !ordered {
            let order = if lower_is_better {
                "from the smallest (elite) to the largest (medium)"
            } else {
                "from the most frequent (elite) to the least (medium)"
            };
            self.err(n.pos, format!("{what}: the bounds must go {order}"));
            return None;
        }
        Some(out)
    }
}

/// `1/day`, `3/week`, `2/month` (30 days), or a plain number of deployments per day.
fn per_day(s: &str) -> Result<f64, &'static str> {
    const EXPECT: &str = "a frequency such as `1/day`, `2/week` or `1/month`";
    let (count, per) = s.split_once('/').unwrap_or((s, "day"));
    let count: f64 = count.trim().parse().map_err(|_| EXPECT)?;
    let days = match per.trim() {
        "day" => 1.0,
        "week" => 7.0,
        "month" => 30.0,
        "year" => 365.0,
        _ => return Err(EXPECT),
    };
    if !count.is_finite() || count <= 0.0 {
        return Err(EXPECT);
    }
    Ok(count / days)
}

/// A duration (`1h`, `7d`) in seconds.
fn seconds(s: &str) -> Result<f64, &'static str> {
    crate::duration::parse(s)
        .ok()
        .filter(|d| !d.is_zero())
        .map(|d| d.as_secs_f64())
        .ok_or("a duration such as `1h` or `7d`")
}

/// `5%` or a fraction from 0 to 1.
fn rate(s: &str) -> Result<f64, &'static str> {
    const EXPECT: &str = "a rate such as `5%` or `0.05`";
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| EXPECT)? / 100.0,
        None => s.parse::<f64>().map_err(|_| EXPECT)?,
    };
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(EXPECT) }
}
