//! Counters and histograms of the ingest path, written out in the Prometheus text
//! format.
//!
//! Hand-rolled on atomics rather than through a metrics registry: the hot path pays one
//! relaxed add per figure, and the per-hunt figures (steps found, completions, grants,
//! pool remaining) are not counted twice — they are read at scrape time from the same
//! projections the queries serve, which the log rebuilds after a restart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Figures kept outside the engine (a cluster node's leases and forwarding), written
/// out after the engine's own on `/metrics`.
pub trait MetricsSource: Send + Sync {
    /// Appends the figures, in the Prometheus text format, to `out`.
    fn render(&self, out: &mut String);
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths of the unit.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bounds of the buckets (the last bucket, `+Inf`, is not among them).
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Observations per bucket (not cumulative), then how many in all (those over the
    /// last bound included): read one by one, so a reading taken while observations
    /// arrive may be off by those few.
    pub fn counts(&self) -> (Vec<u64>, u64) {
        let per = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (per, self.count.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The series alone, with `labels` (`a="x",b="y"`, escaped) on each line.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
        );
    }
}

const LATENCY_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
const BATCH_RECORDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Why events were rejected, for `hunt_events_rejected_total{reason}`.
#[derive(Debug, Clone, Copy)]
pub enum RejectReason {
    /// The event broke the contract (a field named in the answer).
    Invalid,
    /// Its customer is over the rate limit.
    RateLimited,
    /// The dedupe window is full.
    WindowFull,
    /// On a cluster, the escrow of the codes it needed could not be reached.
    PoolsUnavailable,
    /// On a cluster whose partitions are spread over nodes, its partition's owner could
    /// not take it.
    Moving,
}

pub struct Metrics {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicate: AtomicU64,
    rejected: [AtomicU64; 5],
    /// Whole requests refused, by HTTP status.
    refused: Mutex<BTreeMap<u16, u64>>,
    pub ack_seconds: Histogram,
    pub commit_records: Histogram,
    pub fsync_seconds: Histogram,
    /// How long each partition stopped to share its state with a snapshot.
    pub snapshot_pause_seconds: Histogram,
    pub commits: AtomicU64,
    pub commit_bytes: AtomicU64,
    /// Events refused because applying them panicked (a bug in the engine).
    pub apply_panics: AtomicU64,
    /// Events sent to another node's partition (partitions spread over nodes): each a
    /// hop over NATS and back.
    pub routed: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            received: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            rejected: Default::default(),
            refused: Mutex::new(BTreeMap::new()),
            apply_panics: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            ack_seconds: Histogram::new(LATENCY_SECONDS),
            commit_records: Histogram::new(BATCH_RECORDS),
            fsync_seconds: Histogram::new(LATENCY_SECONDS),
            snapshot_pause_seconds: Histogram::new(LATENCY_SECONDS),
            commits: AtomicU64::new(0),
            commit_bytes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn reject(&self, reason: RejectReason, n: u64) {
        self.rejected[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn refuse(&self, status: u16) {
        *self.refused.lock().entry(status).or_default() += 1;
    }

    /// The ingest path's figures.
    pub fn render(&self, out: &mut String) {
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        c(
            out,
            "hunt_events_received_total",
            "Events in requests that were decoded.",
            load(&self.received),
        );
        c(
            out,
            "hunt_events_accepted_total",
            "Events applied and durable by this node's partitions.",
            load(&self.accepted),
        );
        c(
            out,
            "hunt_events_duplicate_total",
            "Events answered as duplicates.",
            load(&self.duplicate),
        );
        c(
            out,
            "hunt_events_routed_total",
            "Events sent to the node that owns their partition (partitions spread over nodes).",
            load(&self.routed),
        );
        let _ = writeln!(
            out,
            "# HELP hunt_events_rejected_total Events not stored, by reason.\n# TYPE hunt_events_rejected_total counter"
        );
        for (i, r) in [
            "invalid",
            "rate_limited",
            "window_full",
            "pools_unavailable",
            "moving",
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                out,
                "hunt_events_rejected_total{{reason=\"{r}\"}} {}",
                load(&self.rejected[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP hunt_requests_refused_total Requests refused whole, by status.\n# TYPE hunt_requests_refused_total counter"
        );
        for (status, n) in self.refused.lock().iter() {
            let _ = writeln!(
                out,
                "hunt_requests_refused_total{{status=\"{status}\"}} {n}"
            );
        }
        self.ack_seconds.render(
            out,
            "hunt_ack_seconds",
            "From a request's arrival to its answer, for requests with events.",
        );
        self.commit_records.render(
            out,
            "hunt_commit_batch_records",
            "Records per group commit.",
        );
        self.fsync_seconds.render(
            out,
            "hunt_fsync_seconds",
            "Time of each group commit's fdatasync.",
        );
        self.snapshot_pause_seconds.render(
            out,
            "hunt_snapshot_partition_pause_seconds",
            "How long a partition stopped to share its state with a snapshot (the others go on).",
        );
        c(
            out,
            "hunt_commits_total",
            "Group commits (one write and one sync each).",
            load(&self.commits),
        );
        c(
            out,
            "hunt_commit_bytes_total",
            "Bytes written by group commits.",
            load(&self.commit_bytes),
        );
        c(
            out,
            "hunt_apply_panics_total",
            "Events refused because applying them panicked (a bug; each is logged with its id and customer).",
            load(&self.apply_panics),
        );
    }
}

impl hunt_store::CommitObserver for Metrics {
    fn committed(&self, records: usize, bytes: usize, sync: Duration) {
        self.commit_records.observe(records as f64);
        self.fsync_seconds.observe(sync.as_secs_f64());
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
