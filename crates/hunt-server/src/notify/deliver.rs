//! Delivery: the outbox at run time and one sender per sink.
//!
//! The partitions hand each round's outcomes that go to sinks to the dispatcher with
//! the round's log ticket; the dispatcher waits until those records are durable, then
//! queues the deliveries (so nothing is sent that a crash could take back). Each sink
//! has its own sender task and its own queue in the outbox: a sink that hangs fills its
//! own queue and nothing else — the partitions never wait on the dispatcher, and the
//! dispatcher never waits on a sink.
//!
//! Every change of a delivery's state is a record in the log, made durable before the
//! outbox in memory changes: a restart rebuilds the outbox from the snapshot and the
//! log and resumes every pending delivery. A snapshot takes the outbox while holding
//! the `gate` for writing, so it sees every change written so far and no change is half
//! done (written but not yet applied) at its LSN.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use hunt_core::catalog::Sink;
use hunt_core::time::Timestamp;
use hunt_store::{Log, Ticket};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use super::breaker::{Breaker, BreakerConfig, Permit, State};
use super::cloudevent::{Origin, body_of, deliveries_unbuilt};
use super::outbox::{Change, DeliveryRecord, Entry, Filter, Job, KIND_DELIVERY, Outbox, encode};
use super::retry::RetryPolicy;
use super::signature;
use crate::metrics::Histogram;
use crate::state::Version;

/// The most deliveries one sink may have pending; past it, new ones go straight to the
/// dead-letter queue (recorded, with the reason), so a dead sink's backlog stays bounded.
pub const SINK_QUEUE_MAX_DEFAULT: usize = 100_000;
/// The most dead letters one sink keeps; past it the oldest are evicted (recorded, with
/// the reason). A dead letter holds no body: about 440 bytes each (measured with the
/// ingest bench's HUNT_BENCH_DLQ), so up to ~440 MB per sink at this bound.
pub const SINK_DLQ_MAX_DEFAULT: usize = 1_000_000;

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
    fn of(s: &Sink, version: u64) -> SinkConfig {
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
    config: RwLock<Arc<SinkConfig>>,
    /// Set when the hunts file in force no longer has this sink (its version).
    removed: Mutex<Option<u64>>,
    breaker: Mutex<Breaker>,
    /// Since when the breaker has not been closed.
    unhealthy_since: Mutex<Option<Instant>>,
    wake: Notify,
    pub metrics: SinkMetrics,
}

impl LiveSink {
    pub fn config(&self) -> Arc<SinkConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn breaker_state(&self) -> State {
        lock(&self.breaker).state()
    }

    /// How long the breaker has been open (or probing) without closing.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        lock(&self.unhealthy_since).map(|t| now.saturating_duration_since(t))
    }

    fn success(&self) {
        lock(&self.breaker).success();
        *lock(&self.unhealthy_since) = None;
    }

    fn failure(&self, now: Instant) {
        let mut b = lock(&self.breaker);
        b.failure(now);
        if b.state() != State::Closed {
            let mut since = lock(&self.unhealthy_since);
            if since.is_none() {
                *since = Some(now);
                tracing::warn!(sink = %self.id, "circuit breaker opened: deliveries wait");
            }
        }
    }
}

/// What a partition hands over after a round: the round's ticket, how many records
/// the round submitted, and the events among them whose outcomes go to sinks.
pub struct Round {
    pub ticket: Ticket,
    pub records: usize,
    pub version: Arc<Version>,
    /// (index of the event's record in the round, what to tell).
    pub items: Vec<(usize, Origin)>,
}

/// What the recorder is handed.
enum Recorded {
    /// A delivery's change, when to try again after a failure, and when it happened.
    Change(String, Change, Option<Instant>, i64),
    /// Answered once everything handed over before it is recorded.
    Flush(oneshot::Sender<()>),
}

pub enum Dispatch {
    Round(Round),
    /// Answered once every round sent before it is queued.
    Barrier(oneshot::Sender<()>),
}

/// A change to record, and when to try again after a failed attempt.
type PendingChange = (String, Change, Option<Instant>);

pub struct Notifier {
    log: Arc<Log>,
    /// Held for reading while a change is written and applied; for writing by a
    /// snapshot.
    gate: tokio::sync::RwLock<()>,
    /// One operator action (retry, drop) at a time.
    ops: tokio::sync::Mutex<()>,
    outbox: Mutex<Outbox>,
    sinks: RwLock<HashMap<Arc<str>, Arc<LiveSink>>>,
    client: reqwest::Client,
    tx: mpsc::UnboundedSender<Dispatch>,
    recorder: mpsc::UnboundedSender<Recorded>,
    clock: fn() -> Timestamp,
    rng: AtomicU64,
    pub queue_max: usize,
    /// The most dead letters one sink keeps.
    pub dlq_max: usize,
    closed: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    recorder_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    me: std::sync::Weak<Notifier>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why an attempt failed.
struct Failure {
    error: String,
    /// The receiver refused the delivery itself (a 4xx other than 408, 425 or 429):
    /// trying again would not help, and the receiver is up.
    permanent: bool,
    retry_after: Option<Duration>,
}

impl Notifier {
    /// Starts the dispatcher and a sender per sink of `version`, resuming `outbox`.
    pub fn start(
        log: Arc<Log>,
        outbox: Outbox,
        version: &Version,
        clock: fn() -> Timestamp,
        queue_max: usize,
        dlq_max: usize,
    ) -> Result<Arc<Notifier>, String> {
        super::install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hunt/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (recorder, recorder_rx) = mpsc::unbounded_channel();
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8) | 1;
        let n = Arc::new_cyclic(|me| Notifier {
            log,
            gate: tokio::sync::RwLock::new(()),
            ops: tokio::sync::Mutex::new(()),
            outbox: Mutex::new(outbox),
            sinks: RwLock::new(HashMap::new()),
            client,
            tx,
            recorder,
            clock,
            rng: AtomicU64::new(seed),
            queue_max,
            dlq_max,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            recorder_task: Mutex::new(None),
            me: me.clone(),
        });
        let d = tokio::spawn(n.clone().dispatcher(rx));
        *lock(&n.recorder_task) = Some(tokio::spawn(n.clone().recorder(recorder_rx)));
        lock(&n.tasks).push(d);
        n.configure(version);
        Ok(n)
    }

    fn me(&self) -> Arc<Notifier> {
        self.me.upgrade().expect("a notifier in use is held")
    }

    /// Where partitions send their rounds.
    pub fn sender(&self) -> mpsc::UnboundedSender<Dispatch> {
        self.tx.clone()
    }

    /// Puts a hunts file version's sinks in force: new sinks get a sender, changed ones
    /// their new settings, and sinks it no longer has stop delivering (their pending
    /// deliveries go to the dead-letter queue, saying so).
    pub fn configure(&self, version: &Version) {
        let v = version.record.version;
        let catalog = version.catalog();
        let mut wanted: Vec<Arc<str>> = catalog.sinks.iter().map(|s| s.id.clone()).collect();
        // Sinks the outbox still holds deliveries for, though no longer in the file.
        // (The outbox is locked before `sinks`, never while `sinks` is held for
        // writing: the recorder takes them in the other order.)
        wanted.extend(lock(&self.outbox).sinks().cloned());
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        for id in wanted {
            let declared = catalog.sinks.iter().find(|s| s.id == id);
            let rt = match sinks.get(&id) {
                Some(rt) => rt.clone(),
                None => {
                    let Some(s) = declared else {
                        // Only in the outbox: a sender that dead-letters them.
                        let rt = self.new_sink(&id, placeholder(&id, v));
                        *lock(&rt.removed) = Some(v);
                        sinks.insert(id.clone(), rt.clone());
                        self.spawn_sender(rt);
                        continue;
                    };
                    let rt = self.new_sink(&id, SinkConfig::of(s, v));
                    sinks.insert(id.clone(), rt.clone());
                    self.spawn_sender(rt.clone());
                    rt
                }
            };
            match declared {
                Some(s) => {
                    let cfg = SinkConfig::of(s, v);
                    if let Err(var) = &cfg.secret {
                        tracing::error!(
                            sink = %id,
                            variable = %var,
                            "the sink's signing secret is not set: its deliveries fail \
                             (set the variable and restart, then retry the dead letters)"
                        );
                    }
                    *rt.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
                    *lock(&rt.removed) = None;
                }
                None => *lock(&rt.removed) = Some(v),
            }
            rt.wake.notify_one();
        }
        for (id, rt) in sinks.iter() {
            if !catalog.sinks.iter().any(|s| &s.id == id) {
                *lock(&rt.removed) = Some(v);
                rt.wake.notify_one();
            }
        }
    }

    fn new_sink(&self, id: &Arc<str>, cfg: SinkConfig) -> Arc<LiveSink> {
        Arc::new(LiveSink {
            id: id.clone(),
            breaker: Mutex::new(Breaker::new(cfg.breaker)),
            config: RwLock::new(Arc::new(cfg)),
            removed: Mutex::new(None),
            unhealthy_since: Mutex::new(None),
            wake: Notify::new(),
            metrics: SinkMetrics::default(),
        })
    }

    fn spawn_sender(&self, rt: Arc<LiveSink>) {
        let h = tokio::spawn(self.me().sender_loop(rt));
        lock(&self.tasks).push(h);
    }

    /// The sinks, by id.
    pub fn sinks(&self) -> Vec<Arc<LiveSink>> {
        let mut v: Vec<_> = self
            .sinks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// (pending, dead letters) of one sink.
    pub fn counts(&self, sink: &str) -> (usize, usize) {
        let o = lock(&self.outbox);
        (o.pending_count(sink), o.dead_count(sink))
    }

    fn draw(&self) -> f64 {
        // xorshift64*: jitter needs spread, not secrecy.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Waits until every round sent so far is queued.
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Dispatch::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Every entry, with the outbox quiet: call with the partitions paused and after
    /// [`Notifier::barrier`]; `at_lsn` is called inside, where the log holds exactly
    /// what the copy shows.
    pub async fn copy_for_snapshot<T>(&self, at_lsn: impl FnOnce() -> T) -> (Vec<Entry>, T) {
        let _quiet = self.gate.write().await;
        let t = at_lsn();
        (lock(&self.outbox).entries().cloned().collect(), t)
    }

    async fn dispatcher(self: Arc<Notifier>, mut rx: mpsc::UnboundedReceiver<Dispatch>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Dispatch::Barrier(tx) => {
                    let _ = tx.send(());
                }
                Dispatch::Round(r) => {
                    // A failed log stops the server (fail-stop); nothing to queue.
                    let Ok(last) = r.ticket.await else { continue };
                    self.queue_round(last, r.records, &r.version, r.items).await;
                }
            }
        }
    }

    async fn queue_round(
        &self,
        last: u64,
        records: usize,
        version: &Version,
        items: Vec<(usize, Origin)>,
    ) {
        let _g = self.gate.read().await;
        let at = (self.clock)().0;
        // Decided against the queues' sizes at the start (only this task adds to them),
        // bodies built outside the lock, inserted in short spans: the senders and the
        // recorder, on the same runtime threads, never wait long for the outbox.
        let mut sizes: HashMap<Arc<str>, usize> = {
            let o = lock(&self.outbox);
            version
                .catalog()
                .sinks
                .iter()
                .map(|s| (s.id.clone(), o.pending_count(&s.id)))
                .collect()
        };
        let mut planned = Vec::new();
        let mut overflow = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for (i, origin) in items {
            let lsn = last - (records - 1 - i) as u64;
            for mut d in deliveries_unbuilt(version.catalog(), lsn, &origin) {
                let size = sizes.entry(d.sink_id.clone()).or_default();
                if *size >= self.queue_max {
                    // Over the sink's bound: held (never sent, its body never built)
                    // and recorded as a dead letter.
                    overflow.push((
                        d.key.clone(),
                        format!(
                            "not sent: sink `{}` already had {} deliveries waiting (its bound)",
                            d.sink_id, self.queue_max
                        ),
                    ));
                    planned.push((d, origin.received, true));
                    continue;
                }
                *size += 1;
                if !touched.contains(&d.sink_id) {
                    touched.push(d.sink_id.clone());
                }
                d.body = body_of(&d.key, &origin, d.outcome).unwrap_or_default();
                planned.push((d, origin.received, false));
            }
        }
        let mut planned = planned.into_iter().peekable();
        while planned.peek().is_some() {
            let mut o = lock(&self.outbox);
            for (d, received, held) in planned.by_ref().take(512) {
                if held {
                    o.queue_held(d, received);
                } else {
                    o.queue(d, received);
                }
            }
        }
        for (key, error) in overflow {
            let _ = self.recorder.send(Recorded::Change(
                key,
                Change::DeadLettered { error },
                None,
                at,
            ));
        }
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        for id in touched {
            if let Some(rt) = sinks.get(&id) {
                rt.wake.notify_one();
            }
        }
    }

    /// Writes the changes senders hand over, many to one submission, and applies them
    /// once durable. A sender does not wait for this: its slot is free as soon as the
    /// receiver answered, and the delivery stays taken until its change is applied.
    async fn recorder(self: Arc<Notifier>, mut rx: mpsc::UnboundedReceiver<Recorded>) {
        let mut buf = Vec::new();
        loop {
            if rx.recv_many(&mut buf, 4096).await == 0 {
                return;
            }
            let mut changes = Vec::with_capacity(buf.len());
            let mut flushed = Vec::new();
            for r in buf.drain(..) {
                match r {
                    Recorded::Change(key, change, again, at) => {
                        changes.push((key, change, again, at))
                    }
                    Recorded::Flush(tx) => flushed.push(tx),
                }
            }
            if !changes.is_empty()
                && let Err(e) = self.record_at(changes).await
            {
                tracing::error!(error = %e, "cannot record the outcome of deliveries");
            }
            for tx in flushed {
                let _ = tx.send(());
            }
        }
    }

    /// Appends records and waits until they are durable.
    async fn write(&self, records: &[DeliveryRecord]) -> Result<(), String> {
        let payloads = records.iter().map(|r| (KIND_DELIVERY, encode(r))).collect();
        let ticket = self
            .log
            .submit_async(payloads)
            .await
            .map_err(|e| e.to_string())?;
        ticket.await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Records changes (now), then applies them and schedules failed attempts again.
    async fn record(&self, changes: Vec<PendingChange>) -> Result<(), String> {
        let at = (self.clock)().0;
        self.record_at(changes.into_iter().map(|(k, c, a)| (k, c, a, at)).collect())
            .await
    }

    async fn record_at(
        &self,
        changes: Vec<(String, Change, Option<Instant>, i64)>,
    ) -> Result<(), String> {
        let _g = self.gate.read().await;
        let records: Vec<DeliveryRecord> = changes
            .iter()
            .map(|(key, change, _, at)| DeliveryRecord {
                key: key.clone(),
                at: *at,
                change: change.clone(),
            })
            .collect();
        self.write(&records).await?;
        let mut woken: Vec<Arc<str>> = Vec::new();
        // Applied in short spans of the outbox's lock.
        for (records, changes) in records.chunks(512).zip(changes.chunks(512)) {
            let mut o = lock(&self.outbox);
            for (r, (key, _, again, _)) in records.iter().zip(changes) {
                let sink = o.get(key).map(|e| e.sink.clone());
                if let Err(e) = o.apply(r) {
                    tracing::warn!(error = %e, "a delivery change did not fit");
                    continue;
                }
                if matches!(r.change, Change::Failed { .. }) {
                    o.put_back(key, *again);
                }
                if let Some(s) = sink {
                    if !woken.contains(&s) {
                        woken.push(s.clone());
                    }
                    if let Some(rt) = self.sinks.read().unwrap_or_else(|e| e.into_inner()).get(&s) {
                        let m = &rt.metrics;
                        match r.change {
                            Change::Delivered => m.delivered.fetch_add(1, Ordering::Relaxed),
                            Change::Failed { .. } => m.failed.fetch_add(1, Ordering::Relaxed),
                            Change::DeadLettered { .. } => {
                                m.dead_lettered.fetch_add(1, Ordering::Relaxed)
                            }
                            Change::Evicted { .. } => m.evicted.fetch_add(1, Ordering::Relaxed),
                            Change::Retried | Change::Dropped => 0,
                        };
                    }
                }
            }
        }
        // A full dead-letter queue lets its oldest go (recorded, with the reason): a sink
        // dead for long must not take the process's memory with it.
        let mut evict = Vec::new();
        {
            let o = lock(&self.outbox);
            for s in &woken {
                let dead = o.dead_count(s);
                if dead > self.dlq_max {
                    let keys = o.oldest_dead(s, dead - self.dlq_max);
                    tracing::warn!(
                        sink = %s,
                        evicted = keys.len(),
                        bound = self.dlq_max,
                        "the sink's dead-letter queue is full: evicting the oldest"
                    );
                    evict.extend(keys);
                }
            }
        }
        let at = (self.clock)().0;
        for key in evict {
            let reason = format!(
                "evicted: the dead-letter queue of its sink held more than {} entries",
                self.dlq_max
            );
            let _ = self
                .recorder
                .send(Recorded::Change(key, Change::Evicted { reason }, None, at));
        }
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        for s in woken {
            if let Some(rt) = sinks.get(&s) {
                rt.wake.notify_one();
            }
        }
        Ok(())
    }

    async fn sender_loop(self: Arc<Notifier>, rt: Arc<LiveSink>) {
        let mut inflight = JoinSet::new();
        loop {
            while inflight.try_join_next().is_some() {}
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let cfg = rt.config();
            if inflight.len() >= cfg.concurrency.max(1) {
                inflight.join_next().await;
                continue;
            }
            let now = Instant::now();
            let job = lock(&self.outbox).take(&rt.id, now);
            let Some(job) = job else {
                let due = lock(&self.outbox).next_due(&rt.id);
                let sleep =
                    tokio::time::sleep_until(due.unwrap_or(now + Duration::from_secs(3600)).into());
                tokio::select! {
                    _ = rt.wake.notified() => {}
                    _ = sleep => {}
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                }
                continue;
            };
            if let Some(v) = *lock(&rt.removed) {
                let error = format!(
                    "not sent: sink `{}` is not in the hunts file in force (version {v})",
                    rt.id
                );
                let at = (self.clock)().0;
                let _ = self.recorder.send(Recorded::Change(
                    job.key,
                    Change::DeadLettered { error },
                    None,
                    at,
                ));
                continue;
            }
            let permit = lock(&rt.breaker).permit(now);
            match permit {
                Permit::WaitUntil(t) => {
                    // Waiting spends no attempt: the delivery goes back as it was.
                    lock(&self.outbox).put_back(&job.key, None);
                    let sleep = tokio::time::sleep_until(t.into());
                    tokio::select! {
                        _ = sleep => {}
                        Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                    }
                }
                Permit::Send | Permit::Probe => {
                    inflight.spawn(self.clone().attempt(rt.clone(), cfg, job));
                }
            }
        }
    }

    async fn attempt(self: Arc<Notifier>, rt: Arc<LiveSink>, cfg: Arc<SinkConfig>, mut job: Job) {
        if job.body.is_none() {
            // Not expected (bodies are read back before a retry and on start), but
            // never send an empty body: read it back now.
            let log = self.log.clone();
            let wanted = vec![(job.lsn, job.outcome, job.key.clone())];
            let got = tokio::task::spawn_blocking(move || load_bodies(&log, wanted)).await;
            match got {
                Ok(Ok(mut b)) if !b.is_empty() => {
                    let body = b.remove(0).1;
                    lock(&self.outbox).set_body(&job.key, body.clone());
                    job.body = Some(body);
                }
                _ => {
                    let error =
                        "not sent: its event's record cannot be read back from the log".to_string();
                    let _ = self.recorder.send(Recorded::Change(
                        job.key,
                        Change::DeadLettered { error },
                        None,
                        (self.clock)().0,
                    ));
                    return;
                }
            }
        }
        rt.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let body = job.body.clone().unwrap_or_else(|| Arc::from(Vec::new()));
        let result = send(
            &self.client,
            &cfg,
            &job.key,
            job.attempts,
            &body,
            (self.clock)(),
        )
        .await;
        let now = Instant::now();
        rt.metrics
            .attempt_seconds
            .observe(now.duration_since(started).as_secs_f64());
        rt.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let change = match result {
            Ok(()) => {
                rt.success();
                (job.key, Change::Delivered, None)
            }
            Err(f) => {
                if f.permanent {
                    rt.success();
                } else {
                    rt.failure(now);
                }
                let attempts = job.attempts + 1;
                let age_ms = ((self.clock)().0 - job.since.0).max(0) as u64;
                let delay = if f.permanent {
                    None
                } else {
                    cfg.retry
                        .next_delay(attempts, Duration::from_millis(age_ms), self.draw())
                        .map(|d| d.max(f.retry_after.unwrap_or_default()))
                };
                match delay {
                    Some(d) => (job.key, Change::Failed { error: f.error }, Some(now + d)),
                    None => {
                        let why = if f.permanent {
                            "not retried: the receiver refused this delivery".to_string()
                        } else if attempts >= cfg.retry.attempts_max {
                            format!(
                                "no attempts left ({attempts} of {})",
                                cfg.retry.attempts_max
                            )
                        } else {
                            "too old to try again (`max_age`)".to_string()
                        };
                        (
                            job.key,
                            Change::DeadLettered {
                                error: format!("{}; {why}", f.error),
                            },
                            None,
                        )
                    }
                }
            }
        };
        let (key, change, again) = change;
        let _ = self
            .recorder
            .send(Recorded::Change(key, change, again, (self.clock)().0));
        rt.wake.notify_one();
    }

    /// Dead letters matching `filter`, oldest first, at most `limit`; and how many match.
    pub fn dead_letters(&self, filter: &Filter, limit: usize) -> (Vec<Entry>, usize) {
        let o = lock(&self.outbox);
        let all: Vec<&Entry> = o
            .dead_letters()
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        let n = all.len();
        (all.into_iter().take(limit).cloned().collect(), n)
    }

    /// A delivery, pending or dead-lettered, with its body (read back from the log for
    /// a dead letter).
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let mut e = lock(&self.outbox).get(key).cloned()?;
        if e.body.is_none() {
            let log = self.log.clone();
            let wanted = vec![(e.lsn, e.outcome, e.key.clone())];
            if let Ok(Ok(mut b)) =
                tokio::task::spawn_blocking(move || load_bodies(&log, wanted)).await
                && !b.is_empty()
            {
                e.body = Some(b.remove(0).1);
            }
        }
        Some(e)
    }

    /// Sends dead letters matching `filter` back to be delivered (same keys, a fresh
    /// attempt budget, history kept), or drops them. Returns the keys.
    pub async fn operate(&self, filter: &Filter, retry: bool) -> Result<Vec<String>, String> {
        let _one = self.ops.lock().await;
        let keys: Vec<String> = {
            let o = lock(&self.outbox);
            o.dead_letters()
                .into_iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.key.clone())
                .collect()
        };
        if retry {
            // Bodies back first, so a retried delivery is ready to send.
            let wanted: Vec<(u64, u32, String)> = {
                let o = lock(&self.outbox);
                keys.iter()
                    .filter_map(|k| o.get(k))
                    .filter(|e| e.body.is_none())
                    .map(|e| (e.lsn, e.outcome, e.key.clone()))
                    .collect()
            };
            let log = self.log.clone();
            let bodies = tokio::task::spawn_blocking(move || load_bodies(&log, wanted))
                .await
                .map_err(|e| e.to_string())??;
            let mut o = lock(&self.outbox);
            for (k, b) in bodies {
                o.set_body(&k, b);
            }
        }
        let change = if retry {
            Change::Retried
        } else {
            Change::Dropped
        };
        for chunk in keys.chunks(10_000) {
            self.record(
                chunk
                    .iter()
                    .map(|k| (k.clone(), change.clone(), None))
                    .collect(),
            )
            .await?;
        }
        if retry {
            for rt in self.sinks() {
                rt.wake.notify_one();
            }
        }
        Ok(keys)
    }

    /// Stops every sender (attempts in flight are made again after the restart), then
    /// records what was handed over.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.recorder.send(Recorded::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        let recorder = lock(&self.recorder_task).take();
        if let Some(t) = recorder {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A delivery's key and body.
pub type Body = (String, Arc<[u8]>);

/// Reads back the bodies of deliveries `(event LSN, outcome, key)` from their events'
/// records, in one pass over the log; blocking. Keys whose record is not there (or is
/// not an event) are left out.
pub fn load_bodies(log: &Log, mut wanted: Vec<(u64, u32, String)>) -> Result<Vec<Body>, String> {
    wanted.sort();
    let Some(first) = wanted.first().map(|w| w.0) else {
        return Ok(Vec::new());
    };
    let last = wanted.last().map_or(first, |w| w.0);
    let mut out = Vec::with_capacity(wanted.len());
    let mut i = 0;
    for rec in log.read_from(first).map_err(|e| e.to_string())? {
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.lsn > last {
            break;
        }
        while i < wanted.len() && wanted[i].0 < rec.lsn {
            i += 1;
        }
        if i >= wanted.len() || wanted[i].0 != rec.lsn || rec.kind != crate::records::KIND_EVENT {
            continue;
        }
        let e = crate::records::decode_event(&rec.payload)
            .map_err(|e| format!("record {}: {e}", rec.lsn))?;
        let origin = Origin::of(&e.event, e.received, e.outcomes.into());
        while i < wanted.len() && wanted[i].0 == rec.lsn {
            let (_, index, key) = &wanted[i];
            if let Some(b) = super::cloudevent::body_of(key, &origin, *index) {
                out.push((key.clone(), Arc::from(b)));
            }
            i += 1;
        }
    }
    Ok(out)
}

/// The settings of a sink only the outbox knows (removed from the hunts file).
fn placeholder(id: &str, version: u64) -> SinkConfig {
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

/// One attempt: POST the CloudEvent, signed when the sink has a secret.
async fn send(
    client: &reqwest::Client,
    cfg: &SinkConfig,
    key: &str,
    attempts: u32,
    body: &Arc<[u8]>,
    now: Timestamp,
) -> Result<(), Failure> {
    let secret = cfg.secret.as_ref().map_err(|var| Failure {
        error: format!("not sent: the signing secret's variable {var} is not set"),
        permanent: true,
        retry_after: None,
    })?;
    let mut req = client
        .post(&cfg.url)
        .timeout(cfg.timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/cloudevents+json; charset=utf-8",
        )
        .header("Idempotency-Key", key)
        .header("Hunt-Attempt", (attempts + 1).to_string());
    if let Some(s) = secret {
        req = req.header(
            signature::HEADER,
            signature::sign(s, now.0.div_euclid(1000), body),
        );
    }
    let resp = req.body(body.to_vec()).send().await.map_err(|e| Failure {
        error: describe(&e, cfg.timeout),
        permanent: false,
        retry_after: None,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    // A little of what the receiver said helps whoever reads the dead letter.
    let said = match tokio::time::timeout(Duration::from_millis(500), resp.bytes()).await {
        Ok(Ok(b)) if !b.is_empty() => {
            let text = String::from_utf8_lossy(&b[..b.len().min(200)])
                .trim()
                .to_string();
            format!(": {text}")
        }
        _ => String::new(),
    };
    let code = status.as_u16();
    let permanent = status.is_client_error() && !matches!(code, 408 | 425 | 429);
    let error = if status.is_redirection() {
        format!("HTTP {status}: redirects are not followed; point the sink at the final URL")
    } else {
        format!("HTTP {status}{said}")
    };
    Err(Failure {
        error,
        permanent: permanent || status.is_redirection(),
        retry_after,
    })
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {} ms (the sink's timeout)",
            timeout.as_millis()
        );
    }
    let mut s = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
