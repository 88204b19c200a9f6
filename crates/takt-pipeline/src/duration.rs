//! Durations as people write them in pipeline files: `90s`, `10m`, `1h 30m`, `2 hours`, `3600`.

use std::time::Duration;

/// Parses a duration. A bare number means seconds, as in GitLab CI.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` is negative; a duration must be positive"));
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("`{s}` is not a duration; write e.g. `90s`, `10m` or `1h 30m`"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("`{}` in `{s}` is not a number", &rest[..num_end]))?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let factor = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "ms" => 0.001,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use s, m, h or d (e.g. `90s`, `10m`)"
                ));
            }
        };
        total += n * factor;
        parts += 1;
        rest = rest[unit_end..].trim_start();
        rest = rest.strip_prefix("and").unwrap_or(rest);
        rest = rest.strip_prefix(',').unwrap_or(rest);
        if parts > 8 {
            return Err(format!("`{s}` has too many parts"));
        }
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("`{s}` is far too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2 hours").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1.5m").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(parse("-5m").unwrap_err().contains("negative"));
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
        assert!(parse("99999999999999999999h").is_err());
    }
}
