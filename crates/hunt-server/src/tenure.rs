//! How long this node may still answer for partitions it owns by a lease (on a
//! cluster). The lease keeper moves the end forward at each confirmed renewal; past
//! it, every answer that reads or writes the state is a 503, because another node may
//! own the partitions by then. A node paused past its lease (`SIGSTOP`) and resumed
//! therefore answers nothing from its old state: the end is behind it before it runs
//! a single handler.
//!
//! The clock counts the time the machine was suspended too (`CLOCK_BOOTTIME` on
//! Linux): a virtual machine suspended past its lease must not wake up believing its
//! tenure still runs, while the other nodes' clocks went on.

use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moment on the clock that also counts suspended time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(Duration);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec for the call to fill in.
            if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0 {
                return Stamp(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
        }
        static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        Stamp(BASE.get_or_init(std::time::Instant::now).elapsed())
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Stamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Stamp {
    type Output = Stamp;
    fn add(self, d: Duration) -> Stamp {
        Stamp(self.0 + d)
    }
}

/// The end of this node's tenure.
#[derive(Debug, Default)]
pub struct Tenure {
    /// Nanoseconds on the [`Stamp`] clock; 0: none yet.
    until_ns: AtomicU64,
}

impl Tenure {
    /// Moves the end to `until` (never back).
    pub fn extend_to(&self, until: Stamp) {
        let ns = until.0.as_nanos() as u64;
        self.until_ns.fetch_max(ns.max(1), Ordering::AcqRel);
    }

    fn until(&self) -> Stamp {
        Stamp(Duration::from_nanos(self.until_ns.load(Ordering::Acquire)))
    }

    /// Whether this node may answer at `now`.
    pub fn valid_at(&self, now: Stamp) -> bool {
        now < self.until()
    }

    /// How long the tenure still lasts at `now` (zero once it ended).
    pub fn left_at(&self, now: Stamp) -> Duration {
        self.until().since(now)
    }

    /// How long ago the tenure ended (`None`: it has not).
    pub fn lapsed_for(&self, now: Stamp) -> Option<Duration> {
        (!self.valid_at(now)).then(|| now.since(self.until()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenure_holds_until_its_end_and_is_never_moved_back() {
        let t = Tenure::default();
        let now = Stamp::now();
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
            t.left_at(now + Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            t.lapsed_for(now + Duration::from_secs(3)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_clock_goes_forward() {
        let a = Stamp::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(Stamp::now().since(a) >= Duration::from_millis(5));
    }
}
