//! Deterministic weighted traffic splitting.

/// Smooth weighted round-robin: over any window of `sum(weights)` consecutive picks, each
/// target is picked exactly `weight` times, and picks of one target are spread out, not bunched.
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    weights: Vec<u32>,
    current: Vec<i64>,
    total: i64,
}

impl WeightedRoundRobin {
    /// `None` when every weight is zero (nothing can be picked).
    pub fn new(weights: &[u32]) -> Option<WeightedRoundRobin> {
        let total: i64 = weights.iter().map(|w| *w as i64).sum();
        (total > 0).then(|| WeightedRoundRobin {
            weights: weights.to_vec(),
            current: vec![0; weights.len()],
            total,
        })
    }

    /// The index of the target for the next request.
    pub fn pick(&mut self) -> usize {
        let mut best = 0;
        for (i, w) in self.weights.iter().enumerate() {
            self.current[i] += *w as i64;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        best
    }

    /// Changes the weights; the spreading starts afresh.
    pub fn set(&mut self, weights: &[u32]) -> bool {
        match WeightedRoundRobin::new(weights) {
            Some(w) => {
                *self = w;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_ten_percent_canary_gets_exactly_one_request_in_ten_spread_out() {
        let mut w = WeightedRoundRobin::new(&[90, 10]).unwrap();
        let picks: Vec<usize> = (0..100).map(|_| w.pick()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 10);
        // Spread: never two canary picks in a row.
        assert!(picks.windows(2).all(|p| !(p[0] == 1 && p[1] == 1)));
        assert!(WeightedRoundRobin::new(&[0, 0]).is_none());
        let mut all_stable = WeightedRoundRobin::new(&[100, 0]).unwrap();
        assert!((0..50).all(|_| all_stable.pick() == 0));
    }

    proptest! {
        #[test]
        fn every_window_of_the_total_matches_the_weights(weights in proptest::collection::vec(0u32..20, 1..6)) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            let mut w = WeightedRoundRobin::new(&weights).unwrap();
            for _round in 0..3 {
                let mut counts = vec![0u32; weights.len()];
                for _ in 0..total {
                    counts[w.pick()] += 1;
                }
                prop_assert_eq!(&counts, &weights);
            }
        }
    }
}
