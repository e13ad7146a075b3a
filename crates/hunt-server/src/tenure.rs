//! How long this node may still answer for partitions it owns by a lease (on a
//! cluster). The lease keeper moves the end forward at each confirmed renewal; past
//! it, every answer that reads or writes the state is a 503, because another node may
//! own the partitions by then. A node paused past its lease (`SIGSTOP`) and resumed
//! therefore answers nothing from its old state: the end is behind it before it runs
//! a single handler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The end of this node's tenure, on the monotonic clock.
#[derive(Debug)]
pub struct Tenure {
    base: Instant,
    /// Microseconds after `base`; 0: none yet.
    until_us: AtomicU64,
}

impl Default for Tenure {
    fn default() -> Tenure {
        Tenure {
            base: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }
}

impl Tenure {
    /// Moves the end to `until` (never back).
    pub fn extend_to(&self, until: Instant) {
        let us = until.saturating_duration_since(self.base).as_micros() as u64;
        self.until_us.fetch_max(us.max(1), Ordering::AcqRel);
    }

    /// Whether this node may answer at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        let us = now.saturating_duration_since(self.base).as_micros() as u64;
        us < self.until_us.load(Ordering::Acquire)
    }

    /// How long the tenure still lasts at `now` (zero once it ended).
    pub fn left_at(&self, now: Instant) -> Duration {
        let until = self.base + Duration::from_micros(self.until_us.load(Ordering::Acquire));
        until.saturating_duration_since(now)
    }

    /// How long ago the tenure ended (`None`: it has not).
    pub fn lapsed_for(&self, now: Instant) -> Option<Duration> {
        let until = self.base + Duration::from_micros(self.until_us.load(Ordering::Acquire));
        (!self.valid_at(now)).then(|| now.saturating_duration_since(until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenure_holds_until_its_end_and_is_never_moved_back() {
        let t = Tenure::default();
        let now = Instant::now();
        assert!(!t.valid_at(now), "none before the first renewal");
        t.extend_to(now + Duration::from_secs(2));
        assert!(t.valid_at(now + Duration::from_millis(1999)));
        assert!(!t.valid_at(now + Duration::from_secs(2)));
        t.extend_to(now + Duration::from_secs(1));
        assert!(
            t.valid_at(now + Duration::from_millis(1500)),
            "not moved back"
        );
        assert_eq!(
            t.lapsed_for(now + Duration::from_secs(3)),
            Some(Duration::from_secs(1))
        );
    }
}
