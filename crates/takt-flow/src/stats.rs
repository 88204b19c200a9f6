//! Percentiles by nearest rank: the value at position ⌈p·n⌉ (1-based) of the sorted values, so
//! every figure is one that was measured.

use crate::Spread;

/// The `p` (0 < p ≤ 1) percentile of `sorted` (ascending); none when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 and p90 of `values` (seconds), or none when there are none.
pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    values.sort_by(f64::total_cmp);
    Some(Spread {
        p50: percentile(&values, 0.5)?,
        p90: percentile(&values, 0.9)?,
        sample: values.len(),
    })
}

/// Seconds of a duration, as a float.
pub fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let s = spread(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.p50, s.p90, s.sample), (2.0, 3.0, 3));
    }
}
