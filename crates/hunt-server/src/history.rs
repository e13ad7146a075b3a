//! The dashboard's recent history: a fixed ring of samples of the server's own figures,
//! one taken every [`SAMPLE_EVERY`] by one task, the last [`SAMPLES_MAX`] kept.
//!
//! Owns: the samples and the figures derived from two of them (events per second, the
//! acknowledgement's p50 and p99, the backlog and its time to drain, codes left per
//! pool, completions per hunt). Must never: touch the ingest path. A sample reads the
//! counters the ingest path keeps anyway (relaxed atomics) and asks the partitions for
//! their per-hunt figures between their rounds, as `/metrics` does; the ring's lock is
//! taken only by the sampler and by readers. On a cluster whose partitions are spread
//! over nodes, a sample is the cluster's: every node's counters and figures, gathered
//! and summed (a node that does not answer in 2 s counts with its last answer). Memory is bounded by the ring's length
//! times the pools, hunts and partitions of one sample.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hunt_core::time::Timestamp;
use parking_lot::Mutex;

use crate::route::{Ask, Counters, SinkCounts};
use crate::service::{Service, now};

/// How often a sample is taken: often enough for a live page, rare enough that the
/// partitions' per-hunt figures are read twelve times a minute at most.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 15 minutes at one every 5 seconds.
pub const SAMPLES_MAX: usize = 180;

/// The figures a sample reads from counters alone (cheap on one node; also read live,
/// on nodes sharing the partitions by a gather of every node's counters).
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Timestamp,
    pub mono: Instant,
    /// Events accepted since the start.
    pub accepted: u64,
    /// `hunt_ack_seconds`: per bucket, and in all.
    pub ack: (Vec<u64>, u64),
    /// Events queued per partition.
    pub backlog: Vec<usize>,
    /// Events each partition has applied since the start.
    pub applied: Vec<u64>,
}

/// One hunt's totals at a sample.
#[derive(Debug, Clone)]
pub struct HuntTotals {
    pub hunt: Arc<str>,
    pub participants: u64,
    pub completions: u64,
    pub granted: u64,
}

/// A sample: the counters, plus codes left per pool and the hunts' totals.
#[derive(Debug, Clone)]
pub struct Sample {
    pub reading: Reading,
    /// (pool, codes left) for the pools of the version in force.
    pub pools: Vec<(Arc<str>, u64)>,
    pub hunts: Vec<HuntTotals>,
}

/// The ring of samples.
pub struct History {
    ring: Mutex<VecDeque<Arc<Sample>>>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            ring: Mutex::new(VecDeque::with_capacity(SAMPLES_MAX)),
        })
    }

    /// Takes a sample every [`SAMPLE_EVERY`] until the task is dropped.
    pub async fn run(self: Arc<History>, service: Arc<Service>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = sample(&service).await;
            self.push(s);
        }
    }

    /// Adds a sample, letting the oldest go once the ring is full.
    pub fn push(&self, s: Sample) {
        let mut ring = self.ring.lock();
        if ring.len() == SAMPLES_MAX {
            ring.pop_front();
        }
        ring.push_back(Arc::new(s));
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Arc<Sample>> {
        self.ring.lock().iter().cloned().collect()
    }
}

impl Reading {
    /// A reading of `c` taken now.
    pub fn of(c: &Counters) -> Reading {
        Reading {
            at: now(),
            mono: Instant::now(),
            accepted: c.accepted,
            ack: (c.ack.clone(), c.ack_count),
            backlog: c.backlog.iter().map(|n| *n as usize).collect(),
            applied: c.applied.clone(),
        }
    }
}

/// The counters now, with the sinks' health, and the nodes that did not answer: this
/// node's, and on a cluster whose partitions are spread over nodes every node's,
/// gathered and summed (a node that did not answer counts with its last answer).
pub async fn read(service: &Service) -> (Reading, Vec<SinkCounts>, Vec<String>) {
    let (c, missing) = service.counters_everywhere().await;
    (Reading::of(&c), c.sinks, missing)
}

/// A whole sample: the counters, the pools, the hunts' totals (on a cluster whose
/// partitions are spread over nodes, every node's that answered).
pub async fn sample(service: &Service) -> Sample {
    let f = service
        .figures(&Ask {
            counters: true,
            ..Ask::default()
        })
        .await;
    let reading = Reading::of(&f.counters.unwrap_or_default());
    let pools = f
        .pools
        .into_iter()
        .map(|(id, _, left)| (id, left))
        .collect();
    let hunts = f
        .stats
        .into_iter()
        .map(|(hunt, c)| HuntTotals {
            hunt,
            participants: c.participants,
            completions: c.completions,
            granted: c.granted,
        })
        .collect();
    Sample {
        reading,
        pools,
        hunts,
    }
}

/// What happened between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// The later reading's time.
    pub at: Timestamp,
    pub events_per_s: f64,
    /// The acknowledgement's median and 99th percentile in milliseconds, over the
    /// requests answered between the two; `None` when there were none.
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// Events queued at the later reading, over all partitions.
    pub backlog: usize,
    /// Seconds until the backlog is applied at the rate the partitions applied events
    /// between the two; 0 with nothing queued, `None` when something is queued and
    /// nothing was applied.
    pub time_to_drain_s: Option<f64>,
    /// Per partition: (queued, applied per second, seconds to drain).
    pub partitions: Vec<(usize, f64, Option<f64>)>,
}

/// The rates between `a` and the later `b`.
pub fn rates(a: &Reading, b: &Reading, bounds: &[f64]) -> Rates {
    let secs = b.mono.saturating_duration_since(a.mono).as_secs_f64();
    let per_s = |d: u64| if secs > 0.0 { d as f64 / secs } else { 0.0 };
    let ack_delta: Vec<u64> = b
        .ack
        .0
        .iter()
        .zip(&a.ack.0)
        .map(|(y, x)| y.saturating_sub(*x))
        .collect();
    let ack_count = b.ack.1.saturating_sub(a.ack.1);
    let partitions: Vec<(usize, f64, Option<f64>)> = b
        .backlog
        .iter()
        .enumerate()
        .map(|(p, queued)| {
            let applied = b.applied.get(p).copied().unwrap_or(0);
            let before = a.applied.get(p).copied().unwrap_or(0);
            let rate = per_s(applied.saturating_sub(before));
            (*queued, rate, drain(*queued, rate))
        })
        .collect();
    let backlog: usize = b.backlog.iter().sum();
    let drained: f64 = partitions.iter().map(|p| p.1).sum();
    Rates {
        at: b.at,
        events_per_s: per_s(b.accepted.saturating_sub(a.accepted)),
        ack_p50_ms: quantile(bounds, &ack_delta, ack_count, 0.5).map(|s| s * 1e3),
        ack_p99_ms: quantile(bounds, &ack_delta, ack_count, 0.99).map(|s| s * 1e3),
        backlog,
        time_to_drain_s: drain(backlog, drained),
        partitions,
    }
}

/// Seconds to apply `queued` events at `rate` a second.
fn drain(queued: usize, rate: f64) -> Option<f64> {
    if queued == 0 {
        Some(0.0)
    } else if rate > 0.0 {
        Some(queued as f64 / rate)
    } else {
        None
    }
}

/// The `q` quantile of a histogram's observations (`per_bucket` under `bounds`, `count`
/// in all), interpolated linearly within its bucket as Prometheus'
/// `histogram_quantile` does; one past the last bound is reported as the last bound.
pub fn quantile(bounds: &[f64], per_bucket: &[u64], count: u64, q: f64) -> Option<f64> {
    if count == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    for (i, (bound, n)) in bounds.iter().zip(per_bucket).enumerate() {
        if *n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / *n as f64;
            return Some(lower + (bound - lower) * within.clamp(0.0, 1.0));
        }
        below += n;
    }
    bounds.last().copied()
}

/// Each sample's rates against the one before it, oldest first.
pub fn series(samples: &[Arc<Sample>], bounds: &[f64]) -> Vec<Rates> {
    samples
        .windows(2)
        .map(|w| rates(&w[0].reading, &w[1].reading, bounds))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(
        secs: u64,
        accepted: u64,
        ack: Vec<u64>,
        backlog: Vec<usize>,
        applied: Vec<u64>,
    ) -> Reading {
        let count = ack.iter().sum();
        Reading {
            at: Timestamp(secs as i64 * 1000),
            mono: T0.with(|t| *t) + Duration::from_secs(secs),
            accepted,
            ack: (ack, count),
            backlog,
            applied,
        }
    }

    thread_local! {
        static T0: Instant = Instant::now();
    }

    const BOUNDS: &[f64] = &[0.001, 0.002, 0.005, 0.01];

    #[test]
    fn rates_between_two_readings() {
        let a = reading(0, 100, vec![0, 0, 0, 0], vec![0, 0], vec![50, 50]);
        // 5 s later: 500 more accepted; 100 answers, 90 under 1 ms, 10 within 2-5 ms;
        // partition 0 has 300 queued and applied 300 (60/s), partition 1 nothing queued.
        let b = reading(5, 600, vec![90, 0, 10, 0], vec![300, 0], vec![350, 250]);
        let r = rates(&a, &b, BOUNDS);
        assert_eq!(r.events_per_s, 100.0);
        assert_eq!(r.backlog, 300);
        assert_eq!(r.partitions[0], (300, 60.0, Some(5.0)));
        assert_eq!(r.partitions[1], (0, 40.0, Some(0.0)));
        // 300 queued at 100 applied a second over both partitions.
        assert_eq!(r.time_to_drain_s, Some(3.0));
        let p50 = r.ack_p50_ms.unwrap();
        assert!((p50 - 0.5556).abs() < 0.001, "{p50}");
        let p99 = r.ack_p99_ms.unwrap();
        assert!((p99 - 4.7).abs() < 0.001, "{p99}");
    }

    #[test]
    fn nothing_answered_has_no_latency_and_a_stuck_backlog_no_drain_time() {
        let a = reading(0, 10, vec![1, 0, 0, 0], vec![5], vec![10]);
        let b = reading(5, 10, vec![1, 0, 0, 0], vec![5], vec![10]);
        let r = rates(&a, &b, BOUNDS);
        assert_eq!(r.ack_p50_ms, None);
        assert_eq!(r.time_to_drain_s, None);
        assert_eq!(r.events_per_s, 0.0);
    }

    #[test]
    fn quantiles_past_the_last_bound_are_the_last_bound() {
        // Two observations over every bound: counted in all, in no bucket.
        assert_eq!(quantile(BOUNDS, &[0, 0, 0, 0], 2, 0.5), Some(0.01));
        assert_eq!(quantile(BOUNDS, &[0, 0, 0, 0], 0, 0.5), None);
        assert_eq!(quantile(BOUNDS, &[0, 4, 0, 0], 4, 1.0), Some(0.002));
    }

    #[test]
    fn the_ring_keeps_the_last_samples_only() {
        let h = History::new();
        for i in 0..(SAMPLES_MAX as u64 + 7) {
            h.push(Sample {
                reading: reading(i, i, vec![0; 4], vec![0], vec![0]),
                pools: Vec::new(),
                hunts: Vec::new(),
            });
        }
        let s = h.samples();
        assert_eq!(s.len(), SAMPLES_MAX);
        assert_eq!(s[0].reading.accepted, 7);
        assert_eq!(series(&s, BOUNDS).len(), SAMPLES_MAX - 1);
    }
}
