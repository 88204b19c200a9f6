//! What a `metric` check reads of a Prometheus exposition page: the series of one name whose
//! labels include the check's, summed (as PromQL's `sum(name{labels})`). The page is parsed
//! with the `prometheus-parse` crate.

use prometheus_parse::{Scrape, Value};

/// The series a `metric` check selected.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The sum of their values (NaN if one is NaN).
    pub sum: f64,
    pub series: usize,
}

impl Selected {
    /// `[BODY]`: `{"value": SUM, "series": N}`; the value is null when no series matched (or
    /// the sum is not a finite number), so that `[BODY].value < 100` fails and says so.
    pub fn body(&self) -> String {
        let value = if self.series > 0 && self.sum.is_finite() {
            // Whole numbers without a fraction, as Prometheus writes them.
            format!("{}", self.sum)
        } else {
            "null".to_string()
        };
        format!(r#"{{"value": {value}, "series": {}}}"#, self.series)
    }
}

/// Selects from `page` the series named `name` whose labels include every pair of `labels`.
/// A histogram's bucket is `NAME_bucket` with its `le` label, a summary's quantile `NAME` with
/// `quantile`; `_sum` and `_count` are series of their own. Errors say what the page lacked.
pub fn select(page: &str, name: &str, labels: &[(String, String)]) -> Result<Selected, String> {
    let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("the page does not parse as Prometheus text: {e}"))?;
    let (mut sum, mut series) = (0.0, 0usize);
    let (bucket_of, le) = match name.strip_suffix("_bucket") {
        Some(base) => (
            Some(base),
            labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.as_str()),
        ),
        None => (None, None),
    };
    let quantile = labels.iter().find(|(k, _)| k == "quantile").map(|(_, v)| v.as_str());
    for s in &scrape.samples {
        // The labels a bucket or a quantile is picked by are not among a sample's labels here.
        let matches = |skip: &str| {
            labels
                .iter()
                .filter(|(k, _)| k != skip)
                .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
        };
        let value = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) if s.metric == name && matches("") => Some(*v),
            Value::Histogram(buckets) if Some(s.metric.as_str()) == bucket_of && matches("le") => {
                let le = le.and_then(parse_bound);
                buckets.iter().find(|b| Some(b.less_than) == le).map(|b| b.count)
            }
            Value::Summary(quantiles) if s.metric == name && matches("quantile") => {
                let q = quantile.and_then(|q| q.parse::<f64>().ok());
                quantiles.iter().find(|c| Some(c.quantile) == q).map(|c| c.count)
            }
            _ => None,
        };
        if let Some(v) = value {
            sum += v;
            series += 1;
        }
    }
    Ok(Selected { sum, series })
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        l => l.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP jobs_queued Jobs waiting.
# TYPE jobs_queued gauge
jobs_queued{queue="mail",region="eu"} 120
jobs_queued{queue="mail",region="us"} 10
jobs_queued{queue="sms",region="eu"} 3
# TYPE http_requests_total counter
http_requests_total{code="500"} 7
http_requests_total{code="200"} 1027
# TYPE latency_seconds histogram
latency_seconds_bucket{route="/",le="0.1"} 90
latency_seconds_bucket{route="/",le="0.5"} 99
latency_seconds_bucket{route="/",le="+Inf"} 100
latency_seconds_sum{route="/"} 9.5
latency_seconds_count{route="/"} 100
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.99"} 0.25
rpc_seconds_sum 12
rpc_seconds_count 80
up 1
"#;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn series_are_selected_by_name_and_labels_and_summed() {
        let s = select(PAGE, "jobs_queued", &l(&[("queue", "mail")])).unwrap();
        assert_eq!((s.sum, s.series), (130.0, 2));
        assert_eq!(s.body(), r#"{"value": 130, "series": 2}"#);
        let s = select(PAGE, "jobs_queued", &l(&[("queue", "mail"), ("region", "us")])).unwrap();
        assert_eq!((s.sum, s.series), (10.0, 1));
        let s = select(PAGE, "jobs_queued", &[]).unwrap();
        assert_eq!((s.sum, s.series), (133.0, 3));
        let s = select(PAGE, "http_requests_total", &l(&[("code", "500")])).unwrap();
        assert_eq!(s.sum, 7.0);
        assert_eq!(select(PAGE, "up", &[]).unwrap().sum, 1.0);
    }

    #[test]
    fn buckets_quantiles_sums_and_counts() {
        let b = select(PAGE, "latency_seconds_bucket", &l(&[("route", "/"), ("le", "0.5")])).unwrap();
        assert_eq!((b.sum, b.series), (99.0, 1));
        let inf = select(PAGE, "latency_seconds_bucket", &l(&[("le", "+Inf")])).unwrap();
        assert_eq!(inf.sum, 100.0);
        assert_eq!(select(PAGE, "latency_seconds_sum", &[]).unwrap().sum, 9.5);
        assert_eq!(select(PAGE, "latency_seconds_count", &[]).unwrap().sum, 100.0);
        let q = select(PAGE, "rpc_seconds", &l(&[("quantile", "0.99")])).unwrap();
        assert_eq!(q.sum, 0.25);
        assert_eq!(select(PAGE, "rpc_seconds_count", &[]).unwrap().sum, 80.0);
    }

    #[test]
    fn nothing_matching_gives_a_null_value() {
        for (name, labels) in [("jobs_queued", l(&[("queue", "fax")])), ("nope", vec![])] {
            let s = select(PAGE, name, &labels).unwrap();
            assert_eq!(s.series, 0);
            assert_eq!(s.body(), r#"{"value": null, "series": 0}"#);
        }
        // Not a Prometheus page at all: no series, no panic.
        assert_eq!(select("<html>oops</html>\n\u{0}{{", "up", &[]).unwrap().series, 0);
        let nan = select("x NaN\n", "x", &[]).unwrap();
        assert_eq!(nan.body(), r#"{"value": null, "series": 1}"#);
    }
}
