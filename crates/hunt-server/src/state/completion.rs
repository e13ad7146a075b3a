//! Time to complete a hunt, for the dashboard: from a customer's first step found to
//! their completion, in event time. Kept in a partition's memory only (not in
//! snapshots): a start is known for customers whose first find this server applied
//! (or replayed from the log) since it started, and the last [`DURATIONS_MAX`]
//! completions' times are kept per hunt. Bounded: at most [`STARTS_MAX`] customers in
//! progress are followed per partition; past it, starts older than a day are let go,
//! then all if that is not enough, and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use hunt_core::engine::Outcome;
use hunt_core::time::Timestamp;

/// Customers in progress followed per partition (about 100 bytes each).
pub const STARTS_MAX: usize = 50_000;
/// Completions' times kept per hunt and partition.
pub const DURATIONS_MAX: usize = 512;
/// Starts older than this are let go first when the map is full.
const STALE_MS: i64 = 24 * 3600 * 1000;

#[derive(Default)]
pub struct CompletionTimes {
    /// (hunt, customer) → when their first step was found.
    starts: HashMap<(Arc<str>, Box<str>), i64>,
    /// Per hunt, the last completions' times in ms, oldest first.
    durations: HashMap<Arc<str>, VecDeque<i64>>,
    /// Starts let go to stay within the bound.
    pub dropped: u64,
}

impl CompletionTimes {
    /// Takes one applied event's outcomes, at event time `at`.
    pub fn observe(&mut self, user: &str, at: Timestamp, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::StepFound { hunt, found: 1, .. } => {
                    if self.starts.len() >= STARTS_MAX {
                        self.make_room(at.0);
                    }
                    self.starts.insert((hunt.clone(), user.into()), at.0);
                }
                Outcome::HuntCompleted { hunt } => {
                    if let Some(t0) = self.starts.remove(&(hunt.clone(), Box::from(user))) {
                        let d = self.durations.entry(hunt.clone()).or_default();
                        if d.len() == DURATIONS_MAX {
                            d.pop_front();
                        }
                        d.push_back(at.0.saturating_sub(t0).max(0));
                    }
                }
                _ => {}
            }
        }
    }

    fn make_room(&mut self, now_ms: i64) {
        let before = self.starts.len();
        self.starts
            .retain(|_, t| now_ms.saturating_sub(*t) < STALE_MS);
        if self.starts.len() >= STARTS_MAX {
            self.starts.clear();
        }
        self.dropped += (before - self.starts.len()) as u64;
    }

    /// The last completions' times of `hunt`, in ms.
    pub fn of(&self, hunt: &str) -> Vec<i64> {
        self.durations
            .get(hunt)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The `q` quantile (0 to 1) of `ms`, by the nearest rank; `None` when empty.
pub fn quantile_ms(ms: &mut [i64], q: f64) -> Option<i64> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    Some(ms[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(hunt: &str, n: u32) -> Outcome {
        Outcome::StepFound {
            hunt: hunt.into(),
            step: "s".into(),
            found: n,
            next_clue: None,
        }
    }

    fn done(hunt: &str) -> Outcome {
        Outcome::HuntCompleted { hunt: hunt.into() }
    }

    #[test]
    fn from_the_first_find_to_the_completion() {
        let mut c = CompletionTimes::default();
        c.observe("ann", Timestamp(1_000), &[found("h", 1)]);
        c.observe("ann", Timestamp(4_000), &[found("h", 2)]);
        c.observe(
            "bob",
            Timestamp(5_000),
            &[found("h", 1), found("h", 2), done("h")],
        );
        c.observe("ann", Timestamp(9_000), &[found("h", 3), done("h")]);
        // A completion whose start this server never saw is not counted.
        c.observe("cy", Timestamp(9_500), &[done("h")]);
        assert_eq!(c.of("h"), vec![0, 8_000]);
        assert_eq!(c.of("other"), Vec::<i64>::new());
    }

    #[test]
    fn bounded() {
        let mut c = CompletionTimes::default();
        for i in 0..(STARTS_MAX + 10) {
            c.observe(&format!("u{i}"), Timestamp(i as i64), &[found("h", 1)]);
        }
        assert!(c.starts.len() <= STARTS_MAX);
        assert_eq!(c.dropped, STARTS_MAX as u64);
        for i in 0..(DURATIONS_MAX + 5) {
            let u = format!("v{i}");
            c.observe(&u, Timestamp(0), &[found("h", 1), done("h")]);
        }
        assert_eq!(c.of("h").len(), DURATIONS_MAX);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<i64> = (1..=10).rev().collect();
        assert_eq!(quantile_ms(&mut v, 0.5), Some(5));
        assert_eq!(quantile_ms(&mut v, 0.9), Some(9));
        assert_eq!(quantile_ms(&mut [], 0.5), None);
        assert_eq!(quantile_ms(&mut [7], 0.9), Some(7));
    }
}
