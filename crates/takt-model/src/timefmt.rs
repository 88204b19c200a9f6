//! Time and duration formatting shared by every output: UTC, RFC 3339, human durations.

use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, e.g. `2026-11-23T19:40:01.123Z` (millisecond precision).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses RFC 3339 (any offset) into UTC.
/// A date as `YYYY-MM-DD` (quarantine dates, week starts).
pub fn ymd(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}

/// A duration for people: `850ms`, `4.2s`, `3m 05s`, `2h 01m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Serde for times as [`rfc3339`] writes them (`#[serde(with = "timefmt::ms")]`): what the
/// API shows; reads any RFC 3339.
pub mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}")))
    }

    /// The same for `Option<OffsetDateTime>` (`#[serde(default, with = "timefmt::ms::option")]`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::rfc3339(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::super::parse_rfc3339(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human(Duration::from_secs(185)), "3m 05s");
        assert_eq!(human(Duration::from_secs(7260)), "2h 01m");
    }

    #[test]
    fn rfc3339_is_utc_with_millis() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_123_456_789).unwrap();
        let s = rfc3339(t);
        assert!(s.ends_with('Z'), "{s}");
        assert!(s.contains(".123"), "{s}");
        let round = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert!(rfc3339(round).ends_with(":40.000Z"), "{}", rfc3339(round));
        assert_eq!(parse_rfc3339(&rfc3339(round)), Some(round));
    }
}
