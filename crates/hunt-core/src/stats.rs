//! Figures the benchmarks report: percentiles of measured latencies.

use std::time::Duration;

/// The `q` quantile (0 to 1) of `sorted`, which is in ascending order: the value at
/// index `round((len - 1) × q)`, nearest rank without interpolation, so every figure
/// is one that was measured (`q = 0` the least, `q = 1` the greatest). Zero when there
/// is nothing measured.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn nearest_rank_rounded_half_away_from_zero() {
        let ten = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let at = |q| percentile(&ten, q);
        assert_eq!(at(0.0), Duration::from_millis(1));
        // 9 × 0.5 = 4.5: rounded up to index 5, not down, and not interpolated (5.5).
        assert_eq!(at(0.5), Duration::from_millis(6));
        // 9 × 0.9 = 8.1: index 8.
        assert_eq!(at(0.9), Duration::from_millis(9));
        // 9 × 0.99 = 8.91 and 9 × 0.999 = 8.991: both index 9, the greatest.
        assert_eq!(at(0.99), Duration::from_millis(10));
        assert_eq!(at(0.999), Duration::from_millis(10));
        assert_eq!(at(1.0), Duration::from_millis(10));
    }

    #[test]
    fn a_longer_run_and_its_tail() {
        // 0..=1000 ms: index 1000 × q.
        let run: Vec<Duration> = (0..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&run, 0.5), Duration::from_millis(500));
        assert_eq!(percentile(&run, 0.99), Duration::from_millis(990));
        assert_eq!(percentile(&run, 0.999), Duration::from_millis(999));
        assert_eq!(percentile(&run, 0.0005), Duration::from_millis(1));
        assert_eq!(percentile(&run, 0.0004), Duration::ZERO);
    }

    #[test]
    fn edges() {
        assert_eq!(percentile(&[], 0.0), Duration::ZERO);
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[], 1.0), Duration::ZERO);
        let one = ms(&[7]);
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(percentile(&one, q), Duration::from_millis(7));
        }
        // Two values: below a half the first, from a half on the second.
        let two = [Duration::from_micros(3), Duration::from_micros(40)];
        assert_eq!(percentile(&two, 0.49), Duration::from_micros(3));
        assert_eq!(percentile(&two, 0.5), Duration::from_micros(40));
        // Sub-millisecond values come back exactly.
        assert_eq!(
            percentile(
                &[Duration::from_nanos(1_234), Duration::from_nanos(5_678)],
                1.0
            ),
            Duration::from_nanos(5_678)
        );
    }
}
