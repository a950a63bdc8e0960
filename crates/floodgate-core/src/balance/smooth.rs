//! Smooth weighted round robin (the algorithm nginx uses): on each pick every target's
//! current value grows by its weight, the largest is chosen and loses the total. Weights
//! 5, 1, 1 give a a b a c a a rather than a a a a a b c. The whole cycle (the sum of the
//! weights, divided by their common divisor) is computed once, so a pick is an index into it.

/// One cycle of smooth weighted round robin.
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    cycle: Vec<u32>,
}

impl SmoothWeighted {
    /// The cycle for `weights` (zero weights are treated as 1).
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let g = weights.iter().copied().fold(0, gcd).max(1);
        let weights: Vec<i64> = weights
            .iter()
            .map(|&w| i64::try_from(w / g).unwrap_or(i64::MAX))
            .collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let Some((best, _)) = current
                .iter()
                .enumerate()
                .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
            else {
                break;
            };
            current[best] -= total;
            cycle.push(u32::try_from(best).unwrap_or(0));
        }
        SmoothWeighted { cycle }
    }

    /// The target for the `n`-th pick.
    pub fn pick(&self, n: usize) -> Option<usize> {
        if self.cycle.is_empty() {
            return None;
        }
        self.cycle.get(n % self.cycle.len()).map(|&i| i as usize)
    }

    /// Picks per cycle.
    pub fn len(&self) -> usize {
        self.cycle.len()
    }

    /// Whether there is no target.
    pub fn is_empty(&self) -> bool {
        self.cycle.is_empty()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_the_heavy_target_through_the_cycle() {
        let s = SmoothWeighted::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).filter_map(|n| s.pick(n)).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_the_weights_exactly_per_cycle() {
        let s = SmoothWeighted::new(&[300, 100, 200]);
        assert_eq!(s.len(), 6); // divided by the common divisor 100
        let mut counts = [0; 3];
        for n in 0..600 {
            counts[s.pick(n).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 200]);
        assert!(SmoothWeighted::new(&[]).pick(3).is_none());
    }
}
