//! When to try a delivery again: exponential backoff with full jitter (a delay drawn
//! uniformly from zero to the exponential bound, so many failed deliveries do not retry
//! in step), within a maximum number of attempts and a maximum age.
//!
//! Written out rather than taken from `backon`: `backon`'s jitter adds a random amount
//! on top of the delay instead of drawing the whole delay, and the schedule must be a
//! pure function of (attempt, age, a random draw) to be tested and replayed.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The bound of the first retry's delay.
    pub base: Duration,
    /// No delay is drawn above this.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub attempts_max: u32,
    /// No attempt starts later than this after the delivery was queued.
    pub age_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(300),
            attempts_max: 12,
            age_max: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// After `attempts` failed attempts, at `age` since queueing: the delay before the
    /// next one, or `None` when the delivery goes to the dead-letter queue. `draw` is a
    /// uniform random number in [0, 1).
    pub fn next_delay(&self, attempts: u32, age: Duration, draw: f64) -> Option<Duration> {
        if attempts >= self.attempts_max {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(32);
        let bound = self.base.saturating_mul(1u32 << exp.min(31)).min(self.cap);
        let delay = bound.mul_f64(draw.clamp(0.0, 1.0));
        (age + delay <= self.age_max).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_are_jittered_and_end() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            attempts_max: 10,
            age_max: Duration::from_secs(3600),
        };
        // The bound doubles per attempt, up to the cap.
        let bound = |a| p.next_delay(a, Duration::ZERO, 0.999_999).unwrap();
        assert_eq!(bound(1).as_secs(), 0); // 1 s × 0.999999 rounds down in whole seconds
        assert!(bound(1) > Duration::from_millis(999));
        assert!(bound(3) > Duration::from_millis(3999) && bound(3) <= Duration::from_secs(4));
        assert_eq!(bound(9), Duration::from_secs(60).mul_f64(0.999_999));
        // Full jitter: anywhere from zero to the bound.
        assert_eq!(p.next_delay(5, Duration::ZERO, 0.0), Some(Duration::ZERO));
        assert_eq!(
            p.next_delay(5, Duration::ZERO, 0.5),
            Some(Duration::from_secs(8))
        );
        // The last attempt, or too old: the dead-letter queue.
        assert_eq!(p.next_delay(10, Duration::ZERO, 0.5), None);
        assert_eq!(p.next_delay(2, Duration::from_secs(3599), 0.9), None);
        assert!(p.next_delay(2, Duration::from_secs(3599), 0.0).is_some());
        // Never a panic on large counts.
        assert!(
            RetryPolicy {
                attempts_max: u32::MAX,
                ..p
            }
            .next_delay(u32::MAX - 1, Duration::ZERO, 0.5)
            .is_some()
        );
    }
}
