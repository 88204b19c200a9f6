//! Check results summed up, pure: per-hour buckets (count, successes, latency sum, min, max
//! and a latency sketch for the p95), merged into per-day buckets after 48 h; the retention
//! that says what to keep; uptime per day for the status page's bars.
//!
//! The sketch is a histogram over logarithmic latency bins (four per doubling, so a quantile is
//! within 19% of the truth), mergeable by adding counts, and stored sparse: a bucket of an
//! ordinary check holds a handful of bins.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

/// Latency bins: bin 0 is under 1 ms; bin `b` ≥ 1 covers [2^((b-1)/4), 2^(b/4)) ms.
const BINS_PER_DOUBLING: f64 = 4.0;
const LAST_BIN: u16 = 120; // 2^30 ms: longer is counted here

fn bin(ms: u64) -> u16 {
    if ms == 0 {
        return 0;
    }
    let b = ((ms as f64).log2() * BINS_PER_DOUBLING).floor() as i64 + 1;
    b.clamp(1, i64::from(LAST_BIN)) as u16
}

/// The largest latency in bin `b` (its upper bound), in ms.
fn upper(b: u16) -> u64 {
    if b == 0 {
        return 0;
    }
    2f64.powf(f64::from(b) / BINS_PER_DOUBLING).ceil() as u64
}

/// A mergeable latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sketch {
    bins: BTreeMap<u16, u32>,
}

impl Sketch {
    pub fn add(&mut self, ms: u64) {
        *self.bins.entry(bin(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (b, n) in &other.bins {
            *self.bins.entry(*b).or_default() += n;
        }
    }

    /// The `q` quantile (0..=1) in ms, as its bin's upper bound; none when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.bins.values().map(|n| u64::from(*n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &self.bins {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(upper(*b));
            }
        }
        self.bins.keys().next_back().map(|b| upper(*b))
    }

    /// Its stored form: `bin:count` pairs, comma-separated.
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self.bins.iter().map(|(b, n)| format!("{b}:{n}")).collect();
        parts.join(",")
    }

    /// Reads [`Sketch::encode`]'s form; what does not parse is left out.
    pub fn decode(s: &str) -> Sketch {
        let bins = s
            .split(',')
            .filter_map(|p| {
                let (b, n) = p.split_once(':')?;
                Some((b.parse().ok()?, n.parse().ok()?))
            })
            .collect();
        Sketch { bins }
    }
}

/// The results of one check over one hour or one day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Unix seconds at the start of its hour or day (UTC).
    pub start: i64,
    /// [`HOUR`] or [`DAY`].
    pub width: i64,
    pub count: u64,
    pub successes: u64,
    pub latency_sum: u64,
    pub latency_min: u64,
    pub latency_max: u64,
    pub sketch: Sketch,
}

impl Bucket {
    pub fn new(start: i64, width: i64) -> Bucket {
        Bucket {
            start: start - start.rem_euclid(width),
            width,
            ..Bucket::default()
        }
    }

    pub fn record(&mut self, success: bool, latency_ms: u64) {
        self.latency_min = if self.count == 0 {
            latency_ms
        } else {
            self.latency_min.min(latency_ms)
        };
        self.latency_max = self.latency_max.max(latency_ms);
        self.count += 1;
        self.successes += u64::from(success);
        self.latency_sum += latency_ms;
        self.sketch.add(latency_ms);
    }

    pub fn merge(&mut self, other: &Bucket) {
        if other.count == 0 {
            return;
        }
        self.latency_min = if self.count == 0 {
            other.latency_min
        } else {
            self.latency_min.min(other.latency_min)
        };
        self.latency_max = self.latency_max.max(other.latency_max);
        self.count += other.count;
        self.successes += other.successes;
        self.latency_sum += other.latency_sum;
        self.sketch.merge(&other.sketch);
    }

    /// Successes over results; none without results.
    pub fn uptime(&self) -> Option<f64> {
        (self.count > 0).then(|| self.successes as f64 / self.count as f64)
    }

    pub fn p95(&self) -> Option<u64> {
        self.sketch.quantile(0.95)
    }
}

/// How long results are kept (docs/monitoring.md, Storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw results (seconds).
    pub raw: i64,
    /// Hour buckets, before they are merged into days.
    pub hours: i64,
    /// Day buckets.
    pub days: i64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            raw: DAY,
            hours: 2 * DAY,
            days: 400 * DAY,
        }
    }
}

/// What compaction at `now` does (all in unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Raw results before this go.
    pub results_before: i64,
    /// Hour buckets starting before this (a day boundary) are merged into their days.
    pub hours_before: i64,
    /// Day buckets starting before this go.
    pub days_before: i64,
}

pub fn compaction(now: i64, r: Retention) -> Compaction {
    let hours_before = now - r.hours;
    Compaction {
        results_before: now - r.raw,
        // Whole days only: a day's hours are merged together, once.
        hours_before: hours_before - hours_before.rem_euclid(DAY),
        days_before: now - r.days,
    }
}

/// Merges hour buckets into day buckets (`days`: those already stored, merged into). Returns
/// the day buckets that changed.
pub fn into_days(hours: &[Bucket], days: &[Bucket]) -> Vec<Bucket> {
    let mut out: BTreeMap<i64, Bucket> = days.iter().map(|d| (d.start, d.clone())).collect();
    for h in hours {
        let day = h.start - h.start.rem_euclid(DAY);
        out.entry(day).or_insert_with(|| Bucket::new(day, DAY)).merge(h);
    }
    out.into_values()
        .filter(|d| hours.iter().any(|h| h.start - h.start.rem_euclid(DAY) == d.start))
        .collect()
}

/// One day of the status page's uptime bars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// Unix seconds at the day's start (UTC).
    pub day: i64,
    /// None: no results that day.
    pub uptime: Option<f64>,
}

/// The last `n` days up to `now`'s, oldest first, from any buckets (hours and days mixed).
pub fn bars(buckets: &[Bucket], now: i64, n: i64) -> Vec<Bar> {
    let today = now - now.rem_euclid(DAY);
    let mut days: BTreeMap<i64, Bucket> = BTreeMap::new();
    for b in buckets {
        let day = b.start - b.start.rem_euclid(DAY);
        days.entry(day).or_insert_with(|| Bucket::new(day, DAY)).merge(b);
    }
    (0..n)
        .rev()
        .map(|i| {
            let day = today - i * DAY;
            Bar {
                day,
                uptime: days.get(&day).and_then(Bucket::uptime),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_sum_up_and_merge() {
        let mut h = Bucket::new(3 * HOUR + 17, HOUR);
        assert_eq!(h.start, 3 * HOUR);
        for (ok, ms) in [(true, 10), (true, 20), (false, 5000), (true, 30)] {
            h.record(ok, ms);
        }
        assert_eq!((h.count, h.successes, h.latency_sum), (4, 3, 5060));
        assert_eq!((h.latency_min, h.latency_max), (10, 5000));
        assert_eq!(h.uptime(), Some(0.75));
        let mut d = Bucket::new(0, DAY);
        d.merge(&h);
        d.merge(&Bucket::new(0, HOUR));
        assert_eq!((d.count, d.latency_min), (4, 10), "an empty bucket changes nothing");
        assert_eq!(Sketch::decode(&h.sketch.encode()), h.sketch);
        assert_eq!(Sketch::decode("x,3:2,:"), Sketch::decode("3:2"));
    }

    #[test]
    fn compaction_keeps_whole_days_of_hours() {
        let now = 10 * DAY + 5 * HOUR;
        let c = compaction(now, Retention::default());
        assert_eq!(c.results_before, now - DAY);
        assert_eq!(c.hours_before, 8 * DAY, "the 48 h back, rounded down to a day");
        assert_eq!(c.days_before, now - 400 * DAY);
        let hours: Vec<Bucket> = (0..30)
            .map(|i| {
                let mut b = Bucket::new(7 * DAY + i * HOUR, HOUR);
                b.record(i != 3, 10);
                b
            })
            .collect();
        let mut old = Bucket::new(7 * DAY, DAY);
        old.record(true, 1);
        let days = into_days(&hours, &[old, Bucket::new(2 * DAY, DAY)]);
        assert_eq!(days.len(), 2, "day 7 and day 8, not the untouched day 2");
        assert_eq!((days[0].start, days[0].count, days[0].successes), (7 * DAY, 25, 24));
        assert_eq!((days[1].start, days[1].count), (8 * DAY, 6));
    }

    #[test]
    fn bars_cover_the_last_days_oldest_first() {
        let mut b = Bucket::new(9 * DAY + HOUR, HOUR);
        b.record(true, 1);
        b.record(false, 1);
        let bars = bars(&[b], 10 * DAY + 7, 3);
        assert_eq!(
            bars.iter().map(|b| b.day).collect::<Vec<_>>(),
            [8 * DAY, 9 * DAY, 10 * DAY]
        );
        assert_eq!(bars[1].uptime, Some(0.5));
        assert_eq!((bars[0].uptime, bars[2].uptime), (None, None));
    }

    proptest! {
        /// The sketch's p95 is within one bin (19%) of the true p95, and merging two sketches
        /// is the sketch of both samples.
        #[test]
        fn the_p95_is_close_and_merging_is_exact(a in prop::collection::vec(0u64..100_000, 1..300), b in prop::collection::vec(0u64..100_000, 0..300)) {
            let mut s = Sketch::default();
            a.iter().for_each(|ms| s.add(*ms));
            let mut sorted = a.clone();
            sorted.sort_unstable();
            let truth = sorted[((0.95 * a.len() as f64).ceil() as usize).max(1) - 1];
            let got = s.quantile(0.95).unwrap();
            prop_assert!(got >= truth && got as f64 <= (truth as f64 * 1.19).max(truth as f64 + 1.0), "{got} vs {truth}");
            let mut t = Sketch::default();
            b.iter().for_each(|ms| t.add(*ms));
            let mut both = Sketch::default();
            a.iter().chain(&b).for_each(|ms| both.add(*ms));
            s.merge(&t);
            prop_assert_eq!(s, both);
        }
    }
}
