//! One sink at run time: its settings, its figures, its breaker.

use super::*;

const ATTEMPT_SECONDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// How one sink is delivered to, from the hunts file in force.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub url: String,
    pub timeout: Duration,
    /// The signing secret; `Err(variable)` when its variable is not set.
    pub secret: Result<Option<Arc<[u8]>>, String>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub version: u64,
}

impl SinkConfig {
    pub(super) fn of(s: &Sink, version: u64) -> SinkConfig {
        let secret = match &s.secret_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Arc::from(v.into_bytes()))),
                _ => Err(var.clone()),
            },
        };
        let ms = |d: hunt_core::time::Duration| Duration::from_millis(d.0.max(0) as u64);
        SinkConfig {
            url: s.url.clone(),
            timeout: ms(s.timeout),
            secret,
            concurrency: s.concurrency as usize,
            retry: RetryPolicy {
                attempts_max: s.max_attempts,
                age_max: ms(s.max_age),
                ..RetryPolicy::default()
            },
            breaker: BreakerConfig {
                failures_to_open: s.breaker_failures,
                open_for: ms(s.breaker_open_for),
            },
            version,
        }
    }
}

/// Per-sink figures for `/metrics`.
pub struct SinkMetrics {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Dead letters removed from a full dead-letter queue.
    pub evicted: AtomicU64,
    pub in_flight: AtomicU64,
    pub attempt_seconds: Histogram,
}

impl Default for SinkMetrics {
    fn default() -> SinkMetrics {
        SinkMetrics {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            attempt_seconds: Histogram::new(ATTEMPT_SECONDS),
        }
    }
}

/// One sink at run time.
pub struct LiveSink {
    pub id: Arc<str>,
    pub(super) config: RwLock<Arc<SinkConfig>>,
    /// Set when the hunts file in force no longer has this sink (its version).
    pub(super) removed: Mutex<Option<u64>>,
    pub(super) breaker: Mutex<Breaker>,
    /// Since when the breaker has not been closed.
    pub(super) unhealthy_since: Mutex<Option<Instant>>,
    pub(super) wake: Notify,
    pub metrics: SinkMetrics,
}

impl LiveSink {
    pub fn config(&self) -> Arc<SinkConfig> {
        self.config.read().clone()
    }

    pub fn breaker_state(&self) -> State {
        self.breaker.lock().state()
    }

    /// How long the breaker has been open (or probing) without closing.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        self.unhealthy_since
            .lock()
            .map(|t| now.saturating_duration_since(t))
    }

    pub(super) fn success(&self) {
        self.breaker.lock().success();
        *self.unhealthy_since.lock() = None;
    }

    pub(super) fn failure(&self, now: Instant) {
        let mut b = self.breaker.lock();
        b.failure(now);
        if b.state() != State::Closed {
            let mut since = self.unhealthy_since.lock();
            if since.is_none() {
                *since = Some(now);
                tracing::warn!(sink = %self.id, "circuit breaker opened: deliveries wait");
            }
        }
    }
}

/// The settings of a sink only the outbox knows (removed from the hunts file).
pub(super) fn placeholder(id: &str, version: u64) -> SinkConfig {
    SinkConfig {
        url: format!("removed:{id}"),
        timeout: Duration::from_secs(1),
        secret: Ok(None),
        concurrency: 1,
        retry: RetryPolicy::default(),
        breaker: BreakerConfig::default(),
        version,
    }
}
