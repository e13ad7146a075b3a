//! Delivery: the outbox at run time and one sender per sink.
//!
//! The partitions hand each round's outcomes that go to sinks to the dispatcher with
//! the round's log ticket; the dispatcher waits until those records are durable, then
//! queues the deliveries (so nothing is sent that a crash could take back). Each sink
//! has its own sender task and its own queue in the outbox: a sink that hangs fills its
//! own queue and nothing else: the dispatcher never waits on a sink, and the partitions
//! wait on the dispatcher only when it is `DISPATCH_ROUNDS_MAX` rounds behind (after
//! they answered the round).
//!
//! Every change of a delivery's state is a record in the log, made durable before the
//! outbox in memory changes: a restart rebuilds the outbox from the snapshot and the
//! log and resumes every pending delivery. A snapshot takes the outbox while holding
//! the `gate` for writing, so it sees every change written so far and no change is half
//! done (written but not yet applied) at its LSN.
//!
//! Here: the `Notifier` that owns the outbox, its start, the sinks' configuration and
//! its stop. `sink.rs`: one sink at run time. `dispatcher.rs`: rounds into deliveries.
//! `recorder.rs`: changes into the log. `sender.rs`: attempts. `dead_letters.rs`: the
//! operators' side of the dead-letter queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hunt_core::catalog::Sink;
use hunt_core::time::Timestamp;
use hunt_store::partition_log::{NODE, Partitions};
use hunt_store::{Lsn, PartitionLog, Span, Ticket};
use parking_lot::{Mutex, RwLock};
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

mod dead_letters;
mod dispatcher;
mod recorder;
mod sender;
mod sink;

use sink::placeholder;
pub use sink::{LiveSink, SinkConfig, SinkMetrics};

/// Rounds handed over by the partitions and not yet queued as deliveries: past this a
/// partition waits for the dispatcher (which waits for the log, the outbox's gate and
/// room at the recorder, never for a sink).
pub const DISPATCH_ROUNDS_MAX: usize = 1024;
/// Delivery changes waiting to be recorded: past this a sender waits for the recorder.
pub const RECORDER_CHANGES_MAX: usize = 65_536;

/// What a partition hands over after a round: the round's ticket (which says where its
/// records are), and the events among them whose outcomes go to sinks.
pub struct Round {
    pub partition: u32,
    pub ticket: Ticket,
    pub version: Arc<Version>,
    /// (index of the event's record in the round, what to tell).
    pub items: Vec<(usize, Origin)>,
}

/// Where a partition hands its rounds: the dispatcher's queue, and the record of its
/// rounds submitted and not yet queued as deliveries.
#[derive(Clone)]
pub struct DispatchHandle {
    pub tx: mpsc::Sender<Dispatch>,
    pub in_flight: Arc<RoundsInFlight>,
}

/// Per partition: the rounds with deliveries it has submitted that the dispatcher has
/// not queued yet (each with the log's durable position when it was submitted, below
/// which none of its records can be), and the last position of its last round queued.
/// This is how a snapshot learns, without stopping any partition, up to where the
/// outbox holds each partition's deliveries.
#[derive(Default)]
pub struct RoundsInFlight {
    parts: Mutex<HashMap<u32, InFlight>>,
}

#[derive(Default)]
struct InFlight {
    floors: std::collections::VecDeque<Lsn>,
    queued_through: Lsn,
}

impl RoundsInFlight {
    /// A round with deliveries is about to be submitted, when the log is durable up to
    /// `floor` (so its records come after it). Call before submitting.
    pub fn submitting(&self, partition: u32, floor: Lsn) {
        self.parts
            .lock()
            .entry(partition)
            .or_default()
            .floors
            .push_back(floor);
    }

    /// The round just announced was refused by the log: it will never be queued.
    pub fn withdrawn(&self, partition: u32) {
        if let Some(p) = self.parts.lock().get_mut(&partition) {
            p.floors.pop_back();
        }
    }

    /// The partition's oldest round in flight is queued (`through`: its last position)
    /// or dropped (`None`, its records failed).
    fn done(&self, partition: u32, through: Option<Lsn>) {
        if let Some(p) = self.parts.lock().get_mut(&partition) {
            p.floors.pop_front();
            if let Some(t) = through {
                p.queued_through = p.queued_through.max(t);
            }
        }
    }

    /// Up to where the outbox holds `partition`'s deliveries, with the log durable up
    /// to `durable` and nothing being queued: past its last round queued, and up to its
    /// oldest round in flight (or, with none, up to `durable`: any record of it at or
    /// below that was submitted before and so was queued).
    fn cover(&self, partition: u32, durable: Lsn) -> Lsn {
        let parts = self.parts.lock();
        let Some(p) = parts.get(&partition) else {
            return durable;
        };
        p.queued_through
            .max(p.floors.front().copied().unwrap_or(durable))
    }
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
    log: Arc<dyn PartitionLog>,
    /// Held for reading while a change is written and applied; for writing by a
    /// snapshot.
    gate: tokio::sync::RwLock<()>,
    /// One operator action (retry, drop) at a time.
    ops: tokio::sync::Mutex<()>,
    outbox: Mutex<Outbox>,
    sinks: RwLock<HashMap<Arc<str>, Arc<LiveSink>>>,
    client: reqwest::Client,
    tx: mpsc::Sender<Dispatch>,
    in_flight: Arc<RoundsInFlight>,
    recorder: mpsc::Sender<Recorded>,
    clock: fn() -> Timestamp,
    rng: AtomicU64,
    pub queue_max: usize,
    /// The most dead letters one sink keeps.
    pub dlq_max: usize,
    closed: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    recorder_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    me: std::sync::Weak<Notifier>,
    /// The keys of deliveries whose partition went to another node: a change an
    /// attempt in flight brings back is not recorded here (the new owner sends it
    /// again, with the same key; delivery is at least once).
    released: Mutex<std::collections::HashSet<String>>,
}

/// Why an attempt failed.
struct Failure {
    error: String,
    /// The receiver refused the delivery itself (a 4xx other than 408, 425 or 429):
    /// trying again would not help, and the receiver is up.
    permanent: bool,
    /// Nothing reached the receiver (the signing secret is missing): the dead letter
    /// must not blame it.
    unsent: bool,
    retry_after: Option<Duration>,
}

impl Notifier {
    /// Starts the dispatcher and a sender per sink of `version`, resuming `outbox`.
    pub fn start(
        log: Arc<dyn PartitionLog>,
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
        let (tx, rx) = mpsc::channel(DISPATCH_ROUNDS_MAX);
        let (recorder, recorder_rx) = mpsc::channel(RECORDER_CHANGES_MAX);
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8) | 1;
        let n = Arc::new_cyclic(|me| Notifier {
            log,
            gate: tokio::sync::RwLock::new(()),
            ops: tokio::sync::Mutex::new(()),
            outbox: Mutex::new(outbox),
            sinks: RwLock::new(HashMap::new()),
            client,
            tx,
            in_flight: Arc::default(),
            recorder,
            clock,
            rng: AtomicU64::new(seed),
            queue_max,
            dlq_max,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            recorder_task: Mutex::new(None),
            me: me.clone(),
            released: Mutex::default(),
        });
        let d = tokio::spawn(n.clone().dispatcher(rx));
        *n.recorder_task.lock() = Some(tokio::spawn(n.clone().recorder(recorder_rx)));
        n.tasks.lock().push(d);
        n.configure(version);
        Ok(n)
    }

    fn me(&self) -> Arc<Notifier> {
        self.me.upgrade().expect("a notifier in use is held")
    }

    /// Where partitions send their rounds.
    pub fn sender(&self) -> DispatchHandle {
        DispatchHandle {
            tx: self.tx.clone(),
            in_flight: self.in_flight.clone(),
        }
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
        wanted.extend(self.outbox.lock().sinks().cloned());
        let mut sinks = self.sinks.write();
        for id in wanted {
            let declared = catalog.sinks.iter().find(|s| s.id == id);
            let rt = match sinks.get(&id) {
                Some(rt) => rt.clone(),
                None => {
                    let Some(s) = declared else {
                        // Only in the outbox: a sender that dead-letters them.
                        let rt = self.new_sink(&id, placeholder(&id, v));
                        *rt.removed.lock() = Some(v);
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
                    *rt.config.write() = Arc::new(cfg);
                    *rt.removed.lock() = None;
                }
                None => *rt.removed.lock() = Some(v),
            }
            rt.wake.notify_one();
        }
        for (id, rt) in sinks.iter() {
            if !catalog.sinks.iter().any(|s| &s.id == id) {
                *rt.removed.lock() = Some(v);
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
        self.tasks.lock().push(h);
    }

    /// The sinks, by id.
    pub fn sinks(&self) -> Vec<Arc<LiveSink>> {
        let mut v: Vec<_> = self.sinks.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// (pending, dead letters) of one sink.
    pub fn counts(&self, sink: &str) -> (usize, usize) {
        let o = self.outbox.lock();
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
        if self.tx.send(Dispatch::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Lets `partition`'s deliveries go (it goes to another node, which rebuilds them
    /// from the log and sends them): the rounds handed over before are queued first,
    /// then, with no change half done, its entries leave the outbox. An attempt in
    /// flight for one of them finishes, but its outcome is not recorded here.
    pub async fn release_partition(&self, partition: u32) -> usize {
        self.barrier().await;
        let _quiet = self.gate.write().await;
        let taken = self.outbox.lock().take_partition(partition);
        self.released
            .lock()
            .extend(taken.iter().map(|e| e.key.clone()));
        taken.len()
    }

    /// Takes over `entries`, a partition's deliveries rebuilt from the log (this node
    /// takes the partition over), and wakes their sinks.
    pub async fn adopt_partition(&self, entries: Vec<Entry>) {
        let mut touched: Vec<Arc<str>> = Vec::new();
        {
            let _quiet = self.gate.write().await;
            let mut released = self.released.lock();
            let mut o = self.outbox.lock();
            for e in entries {
                released.remove(&e.key);
                if e.dead_at.is_none() && !touched.contains(&e.sink) {
                    touched.push(e.sink.clone());
                }
                o.restore(e);
            }
        }
        let sinks = self.sinks.read();
        for id in touched {
            if let Some(rt) = sinks.get(&id) {
                rt.wake.notify_one();
            }
        }
    }

    /// Every entry, with the outbox quiet (no change half done, no round half queued),
    /// and how far it reaches into the log: for each of `partitions`, up to where it
    /// holds that partition's deliveries; and up to where it holds every change of a
    /// delivery's state (the log's durable position: each change is durable before it
    /// is applied).
    pub async fn copy_for_snapshot(&self, partitions: usize) -> (Vec<Entry>, Vec<Lsn>, Lsn) {
        let _quiet = self.gate.write().await;
        let durable = self.log.durable();
        let deliveries = (0..partitions as u32)
            .map(|p| self.in_flight.cover(p, durable))
            .collect();
        (
            self.outbox.lock().entries().cloned().collect(),
            deliveries,
            durable,
        )
    }

    /// Stops every sender (attempts in flight are made again after the restart), then
    /// records what was handed over.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.recorder.send(Recorded::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        let recorder = self.recorder_task.lock().take();
        if let Some(t) = recorder {
            t.abort();
            let _ = t.await;
        }
    }

    /// Stops every task at once, recording nothing more (as a crash would).
    pub fn abort(&self) {
        self.closed.store(true, Ordering::Release);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        if let Some(t) = self.recorder_task.lock().take() {
            t.abort();
        }
    }
}

/// A delivery's key and body.
pub type Body = (String, Arc<[u8]>);

/// Reads back the bodies of deliveries `(event LSN, outcome, key)` from their events'
/// records, in one pass over the log; blocking. Keys whose record is not there (or is
/// not an event) are left out.
pub fn load_bodies(
    log: &dyn PartitionLog,
    mut wanted: Vec<(u64, u32, String)>,
) -> Result<Vec<Body>, String> {
    wanted.sort();
    let Some(first) = wanted.first().map(|w| w.0) else {
        return Ok(Vec::new());
    };
    let last = wanted.last().map_or(first, |w| w.0);
    let mut out = Vec::with_capacity(wanted.len());
    let mut i = 0;
    for rec in log
        .read(Partitions::All, first)
        .map_err(|e| e.to_string())?
    {
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
