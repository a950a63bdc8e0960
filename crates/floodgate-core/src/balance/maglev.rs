//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): each target walks its own
//! pseudo-random permutation of a prime-sized table and claims the first free slot, in
//! turns, until the table is full. A key goes to the target in slot `hash mod M`. Targets
//! get near-equal shares (or shares by weight: a target claims a slot on each turn its
//! credit reaches the largest weight), and adding or removing one target moves about 1/N of
//! the keys.
//!
//! Bounded load (Mirrokni et al., "Consistent Hashing with Bounded Loads"): when the key's
//! target already has its capacity of requests in flight, the walk goes on through the
//! following slots to the first target under capacity, so one hot key cannot overload a
//! target while keys still mostly stay put.

use super::stable_hash;

/// Table size for up to 650 targets; more targets get the next prime above 100 per target.
const DEFAULT_SIZE: usize = 65_537;

/// A Maglev lookup table.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table for targets named `names` with `weights` (same length; zero is 1).
    pub fn new(names: &[&str], weights: &[u32]) -> Self {
        let n = names.len();
        if n == 0 {
            return Maglev { table: Vec::new() };
        }
        let m = if n <= 650 {
            DEFAULT_SIZE
        } else {
            next_prime(n * 100)
        };
        let m64 = m as u64;
        let perm: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                let offset = stable_hash(name.as_bytes()) % m64;
                let mut salted = name.as_bytes().to_vec();
                salted.extend_from_slice(b"#skip");
                let skip = stable_hash(&salted) % (m64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let weights: Vec<u64> = (0..n)
            .map(|i| u64::from(weights.get(i).copied().unwrap_or(1).max(1)))
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1);
        let mut next = vec![0u64; n];
        let mut credit = vec![0u64; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        while filled < m {
            for i in 0..n {
                credit[i] += weights[i];
                if credit[i] < max_w {
                    continue;
                }
                credit[i] -= max_w;
                let (offset, skip) = perm[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m64) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = u32::try_from(i).unwrap_or(0);
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        Maglev { table }
    }

    /// The target for a key hash.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        Some(self.table[(hash % m) as usize] as usize)
    }

    /// The target for a key hash under bounded load: the key's own target if its
    /// `in_flight` is below `capacity`, else the first target under capacity found walking
    /// on through the table (the key's own target if none is).
    pub fn lookup_bounded(
        &self,
        hash: u64,
        in_flight: impl Fn(usize) -> u32,
        capacity: u32,
    ) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (hash % m as u64) as usize;
        let own = self.table[start] as usize;
        (0..m)
            .map(|k| self.table[(start + k) % m] as usize)
            .find(|&t| in_flight(t) < capacity)
            .or(Some(own))
    }
}

/// The capacity per target for bounded load with factor `c` (≥ 1): `⌈c × (total + 1) / n⌉`,
/// `total` being the requests in flight over all `n` targets.
pub fn bounded_capacity(c: f64, total: u32, n: usize) -> u32 {
    let n = n.max(1) as f64;
    (c.max(1.0) * (f64::from(total) + 1.0) / n).ceil() as u32
}

fn next_prime(from: usize) -> usize {
    (from.max(2)..)
        .find(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .unwrap_or(DEFAULT_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn build(names: &[String], weights: &[u32]) -> Maglev {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Maglev::new(&refs, weights)
    }

    fn shares(m: &Maglev, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &t in &m.table {
            counts[t as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / m.table.len() as f64)
            .collect()
    }

    #[test]
    fn shares_are_even_or_by_weight() {
        let m = build(&names(5), &[1; 5]);
        for s in shares(&m, 5) {
            assert!((s - 0.2).abs() < 0.01, "{s}");
        }
        let m = build(&names(3), &[2, 1, 1]);
        let s = shares(&m, 3);
        assert!((s[0] - 0.5).abs() < 0.01, "{s:?}");
        assert!((s[1] - 0.25).abs() < 0.01, "{s:?}");
    }

    /// Adding or removing one of N targets moves about 1/N of the keys.
    #[test]
    fn a_change_of_one_target_moves_about_one_nth_of_the_keys() {
        let five = names(5);
        let before = build(&five, &[1; 5]);
        let mut four = five.clone();
        four.remove(2);
        let after = build(&four, &[1; 4]);
        let keys: Vec<u64> = (0..20_000u32)
            .map(|k| stable_hash(format!("user-{k}").as_bytes()))
            .collect();
        let name_before = |h: u64| five[before.lookup(h).unwrap()].as_str();
        let name_after = |h: u64| four[after.lookup(h).unwrap()].as_str();
        let moved = keys
            .iter()
            .filter(|&&h| name_before(h) != name_after(h))
            .count();
        let moved_share = moved as f64 / keys.len() as f64;
        assert!((0.19..0.23).contains(&moved_share), "moved {moved_share}");
        // Keys of the targets that stayed mostly stay.
        let needless = keys
            .iter()
            .filter(|&&h| name_before(h) != five[2] && name_before(h) != name_after(h))
            .count();
        assert!((needless as f64 / keys.len() as f64) < 0.03, "{needless}");
        // And adding a sixth moves about 1/6.
        let six = names(6);
        let grown = build(&six, &[1; 6]);
        let moved = keys
            .iter()
            .filter(|&&h| name_before(h) != six[grown.lookup(h).unwrap()])
            .count();
        let moved_share = moved as f64 / keys.len() as f64;
        assert!((0.15..0.20).contains(&moved_share), "moved {moved_share}");
    }

    #[test]
    fn bounded_load_walks_past_a_full_target() {
        let m = build(&names(3), &[1; 3]);
        let h = stable_hash(b"hot-key");
        let own = m.lookup(h).unwrap();
        let cap = bounded_capacity(1.25, 9, 3);
        assert_eq!(cap, 5);
        // The key's target is at capacity: another one takes it.
        let loads = |t: usize| if t == own { cap } else { 0 };
        let other = m.lookup_bounded(h, loads, cap).unwrap();
        assert_ne!(other, own);
        // Under capacity it stays.
        assert_eq!(m.lookup_bounded(h, |_| 0, cap), Some(own));
        // Everything full: the own target.
        assert_eq!(m.lookup_bounded(h, |_| cap, cap), Some(own));
        assert_eq!(next_prime(1000), 1009);
    }
}
