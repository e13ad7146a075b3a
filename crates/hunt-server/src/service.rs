//! The running engine behind the HTTP API: the log, the partition workers, the version
//! in force, and the coordinator that pauses every partition to switch versions or
//! take a snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Event, HuntView};
use hunt_core::plan::Plan;
use hunt_core::time::Timestamp;
use hunt_store::fs::RealFs;
use hunt_store::partition_log::NODE;
use hunt_store::{Durability, Log, LogConfig, LogError, PartitionLog, Snapshots};
use tokio::sync::{mpsc, oneshot};

use crate::backlog::Backlog;
use crate::metrics::Metrics;
use crate::notify::deliver::{Notifier, SINK_DLQ_MAX_DEFAULT, SINK_QUEUE_MAX_DEFAULT};
use crate::partition::{
    Batch, Handle, Msg, Paused, QUEUE_MESSAGES_MORE, Seat, Status, UserView, Worker,
};
use crate::records::{ConfigRecord, KIND_CONFIG, encode_config};
use crate::recover;
use crate::state::{DedupeConfig, HuntCounters, Version, Winner, partition_of};

/// Where the engine keeps its data and how it runs (not the HTTP side).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub partitions: usize,
    pub dedupe: DedupeConfig,
    /// Events admitted but not yet applied, over all partitions; beyond it, 503.
    pub backlog_events_max: usize,
    /// A snapshot after this many accepted events (and at shutdown).
    pub snapshot_every_events: u64,
    pub durability: Durability,
    /// Open a damaged log by moving the damage aside (see the log's guarantees).
    pub repair: bool,
    /// The most deliveries one sink may have waiting.
    pub sink_queue_max: usize,
    /// The most dead letters one sink keeps.
    pub sink_dlq_max: usize,
}

/// Default partitions: one per core is enough; more keeps a hot customer's partition
/// from holding up others.
pub const PARTITIONS_DEFAULT: usize = 8;
/// Default backlog bound.
pub const BACKLOG_EVENTS_DEFAULT: usize = 200_000;
/// Default dedupe window bound, over all partitions.
pub const DEDUPE_ENTRIES_DEFAULT: usize = 10_000_000;
/// Default snapshot interval. Each snapshot pauses every partition while it copies its
/// state (about 0.3-0.5 s under load with ~1 M events of state on two cores), so not
/// too often; each restart replays the log after the last one (about 250 k events/s).
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 5_000_000;

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            partitions: PARTITIONS_DEFAULT,
            dedupe: DedupeConfig {
                window: hunt_core::dedupe::WINDOW_DEFAULT,
                entries_max: DEDUPE_ENTRIES_DEFAULT,
            },
            backlog_events_max: BACKLOG_EVENTS_DEFAULT,
            snapshot_every_events: SNAPSHOT_EVERY_DEFAULT,
            durability: Durability::Fsync,
            repair: false,
            sink_queue_max: SINK_QUEUE_MAX_DEFAULT,
            sink_dlq_max: SINK_DLQ_MAX_DEFAULT,
        }
    }
}

/// Why the service stopped taking events and changes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Stopped {
    /// The log refused a round (a failed write or sync, or a closed log).
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the partitions have stopped")]
    Partitions,
    #[error("a partition stopped")]
    Partition,
    #[error("the server is stopping")]
    Stopping,
    #[error("the version switch failed: {0}")]
    Switch(String),
    /// The new version could not be built from what the partitions handed over.
    #[error("{0}")]
    Version(String),
}

/// Why events of a request were not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("the backlog holds {queued} events, over its limit of {limit}; retry later")]
    Backlog { queued: usize, limit: usize },
    #[error("the event log stopped ({0}); the server is shutting down to recover")]
    Stopped(Stopped),
}

/// Why a new hunts file was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the hunts file has errors")]
    Invalid(Box<hunt_core::diag::Report>),
    #[error("{} of the file's test cases failed", .0.len())]
    TestsFailed(Vec<hunt_core::testing::CaseResult>),
    #[error("the new version cannot be put in force safely")]
    Unsafe(Box<Plan>),
    /// A bug while checking the file (a test case or a partition's count panicked).
    #[error("{0}")]
    Internal(String),
    #[error("the event log stopped ({0})")]
    Stopped(Stopped),
}

/// How a new hunts file is to be taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigOptions {
    /// Only say what it would change, and to how many customers; switch nothing.
    pub dry_run: bool,
    /// Do not run the file's own test cases first.
    pub skip_tests: bool,
}

/// What taking a hunts file came to.
#[derive(Debug)]
pub enum ConfigAnswer {
    /// The file is the version in force: nothing recorded.
    Unchanged(ConfigRecord),
    /// A dry run: the changes, with the customers each touches.
    Planned(Box<Plan>),
    /// Recorded and in force, with the changes it made.
    Switched(ConfigRecord, Box<Plan>),
}

pub struct Service {
    pub config: EngineConfig,
    partitions: Vec<Handle>,
    log: Arc<dyn PartitionLog>,
    snapshots: Arc<Snapshots>,
    version: RwLock<Arc<Version>>,
    /// One pause of all partitions at a time (version switches, snapshots).
    coordinator: tokio::sync::Mutex<()>,
    pub metrics: Arc<Metrics>,
    /// Deliveries to the sinks.
    pub notifier: Arc<Notifier>,
    backlog: Arc<Backlog>,
    accepted_since_snapshot: AtomicU64,
    /// Set when the log failed: the server stops (fail-stop).
    fatal: tokio::sync::watch::Sender<Option<String>>,
    closed: AtomicBool,
    workers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Itself, for work it starts in the background.
    me: std::sync::Weak<Service>,
}

/// The service's tasks go with it: dropped without a graceful shutdown (a killed
/// server), its workers and the notifier stop at once.
impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What starting found.
pub struct Started {
    pub log_report: hunt_store::OpenReport,
    /// The version recorded at start, if the given file differed from the one in force.
    pub recorded_version: Option<u64>,
}

/// The wall clock in milliseconds.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}

/// Takes the data directory for this process alone (created if missing): a second
/// server, or `hunt replay`, on the same directory is refused instead of both writing.
/// The lock lasts as long as the returned file is open.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another hunt process (a running server?); stop it first",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Opens the log and rebuilds the projections; blocking. `hunts` is the hunts file
/// given at start (name, text): recorded as a new version when it differs from the one
/// in force.
pub fn open(
    config: &EngineConfig,
    hunts: Option<(String, String)>,
    closed: tokio::sync::watch::Sender<bool>,
    progress: &mut dyn FnMut(u64),
) -> Result<(LocalLog, Snapshots, recover::Recovered, Started), String> {
    let lock = lock_data_dir(&config.data_dir)?;
    let fs = Arc::new(RealFs);
    let mut lc = LogConfig::new(&config.data_dir);
    lc.durability = config.durability;
    lc.repair = config.repair;
    let (log, log_report) = Log::open(fs.clone(), lc).map_err(|e| e.to_string())?;
    let snapshots = Snapshots::open(fs, &config.data_dir).map_err(|e| e.to_string())?;
    let mut recovered = recover::recover(
        &log,
        Some(&snapshots),
        config.partitions.max(1),
        config.dedupe,
        progress,
    )?;
    let mut recorded_version = None;
    if let Some((name, text)) = hunts {
        let same = recovered
            .version
            .as_ref()
            .is_some_and(|v| v.record.text == text);
        if !same {
            if let Err(report) = Catalog::load(&name, &text) {
                return Err(render_report(&report));
            }
            let record = ConfigRecord {
                version: recovered
                    .version
                    .as_ref()
                    .map_or(1, |v| v.record.version + 1),
                name,
                text,
                at: now().0,
            };
            let mut v = Version::compile(record.clone())?;
            let refusals = hunt_core::plan::refusals(
                v.catalog(),
                recovered.states.iter().flat_map(|s| s.grants()),
            );
            if !refusals.is_empty() {
                let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
                return Err(format!(
                    "{} cannot be put in force safely: {}; start without --config to go on \
                     with the version in force",
                    record.name,
                    reasons.join("; ")
                ));
            }
            v.restore_pools(recovered.states.iter().flat_map(|s| s.grants()))?;
            log.append(KIND_CONFIG, &encode_config(&record))
                .map_err(|e| e.to_string())?;
            recorded_version = Some(record.version);
            recovered.version = Some(v);
        }
    }
    if recovered.version.is_none() {
        return Err(
            "no hunts file: the log holds no version yet, so start with --config FILE".into(),
        );
    }
    Ok((
        LocalLog::new(log, lock, closed),
        snapshots,
        recovered,
        Started {
            log_report,
            recorded_version,
        },
    ))
}

/// A hunts file's errors as text, for a start that cannot go on.
pub fn render_report(report: &hunt_core::diag::Report) -> String {
    let mut s = format!("{} has {} error(s):", report.name, report.errors());
    for d in report.diagnostics() {
        s.push_str("\n  ");
        s.push_str(&d.to_string());
    }
    s
}

/// The local log as the service holds it, with the data directory's lock. When the
/// last reference goes, the log closes (writing what it was given), then the directory
/// is let go, then `closed` is told: in that order, so a next start on the directory
/// can wait for the signal instead of a timer.
pub struct LocalLog {
    log: Option<Log>,
    lock: Option<std::fs::File>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl LocalLog {
    pub fn new(
        log: Log,
        lock: std::fs::File,
        closed: tokio::sync::watch::Sender<bool>,
    ) -> LocalLog {
        LocalLog {
            log: Some(log),
            lock: Some(lock),
            closed,
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("open until dropped")
    }
}

impl PartitionLog for LocalLog {
    fn submit(
        &self,
        partition: u32,
        records: Vec<(u8, Vec<u8>)>,
    ) -> hunt_store::partition_log::Submitting<'_> {
        PartitionLog::submit(self.log(), partition, records)
    }

    fn read(
        &self,
        partitions: hunt_store::Partitions,
        from: hunt_store::Lsn,
    ) -> Result<hunt_store::partition_log::Records, LogError> {
        PartitionLog::read(self.log(), partitions, from)
    }

    fn durable(&self) -> hunt_store::Lsn {
        PartitionLog::durable(self.log())
    }

    fn stopped(&self) -> Option<LogError> {
        PartitionLog::stopped(self.log())
    }
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        drop(self.log.take());
        drop(self.lock.take());
        self.closed.send_replace(true);
    }
}

impl Service {
    /// Starts the partition workers on the current runtime.
    pub fn start(
        config: EngineConfig,
        log: LocalLog,
        snapshots: Snapshots,
        recovered: recover::Recovered,
    ) -> Result<Arc<Service>, String> {
        let metrics = Arc::new(Metrics::default());
        log.log().set_observer(metrics.clone());
        let log: Arc<dyn PartitionLog> = Arc::new(log);
        let version = Arc::new(recovered.version.expect("open() ensures a version"));
        let notifier = Notifier::start(
            log.clone(),
            recovered.outbox,
            &version,
            now,
            config.sink_queue_max,
            config.sink_dlq_max,
        )?;
        let mut partitions = Vec::new();
        let mut workers = Vec::new();
        let backlog = Arc::new(Backlog::new(
            recovered.states.len(),
            config.backlog_events_max,
        ));
        for (p, state) in recovered.states.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(config.backlog_events_max + QUEUE_MESSAGES_MORE);
            let w = Worker::new(
                state,
                version.clone(),
                Seat {
                    partition: p as u32,
                    log: log.clone(),
                },
                backlog.clone(),
                rx,
                now,
                Some(notifier.sender()),
            );
            workers.push(tokio::spawn(w.run()));
            partitions.push(Handle { tx });
        }
        let (fatal, _) = tokio::sync::watch::channel(None);
        Ok(Arc::new_cyclic(|me| Service {
            me: me.clone(),
            config,
            partitions,
            log,
            snapshots: Arc::new(snapshots),
            version: RwLock::new(version),
            coordinator: tokio::sync::Mutex::new(()),
            metrics,
            backlog,
            accepted_since_snapshot: AtomicU64::new(0),
            fatal,
            closed: AtomicBool::new(false),
            workers: std::sync::Mutex::new(workers),
            notifier,
        }))
    }

    pub fn version(&self) -> Arc<Version> {
        self.version
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves when the log has failed, with why.
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn fail(&self, why: &str) {
        tracing::error!(error = why, "the event log failed: stopping (fail-stop)");
        self.fatal.send_replace(Some(why.to_string()));
    }

    /// Events admitted and not yet applied, over all partitions.
    pub fn backlog_total(&self) -> usize {
        self.backlog.total()
    }

    /// Queued events per partition.
    pub fn backlog(&self) -> Vec<usize> {
        self.backlog.per_partition()
    }

    /// Applies `events` (each with its index in the request) and waits until every
    /// record behind the answers is durable.
    pub async fn ingest(
        &self,
        events: Vec<(usize, Event)>,
    ) -> Result<Vec<(usize, String, Status)>, IngestError> {
        let n = events.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let admitted = self.backlog.admit(n).map_err(|f| IngestError::Backlog {
            queued: f.queued,
            limit: f.limit,
        })?;
        let parts = self.partitions.len();
        let mut groups: Vec<Vec<(usize, Event)>> = (0..parts).map(|_| Vec::new()).collect();
        for (i, e) in events {
            groups[partition_of(&e.user, parts)].push((i, e));
        }
        let mut waits = Vec::new();
        for (p, items) in groups.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let k = items.len();
            self.backlog.queued(p, k);
            let msg = Msg::Events(Batch { items, reply });
            if self.partitions[p].tx.send(msg).await.is_err() {
                self.backlog.applied(p, k);
                return Err(IngestError::Stopped(Stopped::Partitions));
            }
            waits.push(rx);
        }
        let mut statuses = Vec::with_capacity(n);
        let mut tickets = Vec::new();
        let mut failure = None;
        for rx in waits {
            match rx.await {
                Ok(Ok(a)) => {
                    statuses.extend(a.statuses);
                    tickets.extend(a.ticket);
                }
                Ok(Err(e)) => failure = Some(Stopped::Log(e)),
                Err(_) => failure = Some(Stopped::Partition),
            }
        }
        // Applied (or failed): no longer queued.
        drop(admitted);
        if let Some(e) = failure {
            self.fail(&e.to_string());
            return Err(IngestError::Stopped(e));
        }
        for t in tickets {
            if let Err(e) = t.await {
                self.fail(&e.to_string());
                return Err(IngestError::Stopped(e.into()));
            }
        }
        let accepted = statuses
            .iter()
            .filter(|(_, _, s)| matches!(s, Status::Accepted(_)))
            .count() as u64;
        self.metrics.accepted.fetch_add(accepted, Ordering::Relaxed);
        let since = self
            .accepted_since_snapshot
            .fetch_add(accepted, Ordering::Relaxed);
        if since + accepted >= self.config.snapshot_every_events
            && since < self.config.snapshot_every_events
        {
            self.snapshot_in_background();
        }
        statuses.sort_by_key(|(i, _, _)| *i);
        Ok(statuses)
    }

    fn snapshot_in_background(&self) {
        // The service is held in an Arc by every caller; the snapshot runs on its own.
        let me = self.self_arc();
        if let Some(me) = me {
            tokio::spawn(async move {
                if let Err(e) = me.snapshot().await {
                    tracing::warn!(error = %e, "snapshot failed");
                }
            });
        }
    }

    fn self_arc(&self) -> Option<Arc<Service>> {
        self.me.upgrade()
    }

    /// One customer, as durable: waits until what the view shows is in the log.
    pub async fn user(
        &self,
        user: &str,
        hunts_at: Option<Timestamp>,
    ) -> Result<(Option<UserView>, Vec<HuntView>), IngestError> {
        let p = partition_of(user, self.partitions.len());
        let (reply, rx) = oneshot::channel();
        self.partitions[p]
            .tx
            .send(Msg::User {
                user: user.to_string(),
                hunts_at,
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped(Stopped::Partitions))?;
        let (view, hunts, ticket) = rx
            .await
            .map_err(|_| IngestError::Stopped(Stopped::Partition))?;
        if let Some(t) = ticket {
            t.await.map_err(|e| IngestError::Stopped(e.into()))?;
        }
        Ok((view, hunts))
    }

    /// Figures per hunt, summed over partitions; with `winners_of`, also that hunt's
    /// first `limit` winners in grant order and how many it has.
    pub async fn stats(
        &self,
        winners_of: Option<(&str, usize)>,
    ) -> (BTreeMap<Arc<str>, HuntCounters>, Vec<Winner>, u64) {
        let mut waits = Vec::new();
        for h in &self.partitions {
            let (reply, rx) = oneshot::channel();
            let winners_of = winners_of.map(|(h, l)| (Arc::from(h), l));
            if h.tx.send(Msg::Stats { winners_of, reply }).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut total: BTreeMap<Arc<str>, HuntCounters> = BTreeMap::new();
        let (mut winners, mut count) = (Vec::new(), 0);
        for rx in waits {
            if let Ok((stats, w, n)) = rx.await {
                for (hunt, c) in stats {
                    total.entry(hunt).or_default().add(&c);
                }
                winners.extend(w);
                count += n;
            }
        }
        winners.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.user.cmp(&b.user)));
        winners.truncate(winners_of.map_or(0, |(_, l)| l));
        (total, winners, count)
    }

    /// Pauses every partition between rounds; each hands over its grants (and its
    /// snapshot part). Send the version to go on with through the returned senders.
    async fn pause_all(
        &self,
        snapshot: bool,
    ) -> Result<(Vec<Paused>, Vec<oneshot::Sender<Arc<Version>>>), Stopped> {
        let mut waits = Vec::new();
        let mut resumes = Vec::new();
        for h in &self.partitions {
            let (reply, rx) = oneshot::channel();
            let (resume_tx, resume) = oneshot::channel();
            h.tx.send(Msg::Pause {
                snapshot,
                reply,
                resume,
            })
            .await
            .map_err(|_| Stopped::Partitions)?;
            waits.push(rx);
            resumes.push(resume_tx);
        }
        let mut paused = Vec::new();
        for rx in waits {
            paused.push(rx.await.map_err(|_| Stopped::Partition)?);
        }
        Ok((paused, resumes))
    }

    /// Validates a new hunts file, runs its test cases, and records and puts it in force
    /// (or, in a dry run, says what it would change); all partitions switch between the
    /// same two records of the log. A file identical to the version in force is not
    /// recorded again.
    pub async fn put_config(
        &self,
        name: &str,
        text: &str,
        options: ConfigOptions,
    ) -> Result<ConfigAnswer, ConfigError> {
        let catalog = match Catalog::load(name, text) {
            Ok((c, _)) => Arc::new(c),
            Err(r) => return Err(ConfigError::Invalid(Box::new(r))),
        };
        if self.version().record.text == text {
            // Checked again under the coordinator's lock; here it saves running the tests.
            return self.unchanged(options);
        }
        if !options.skip_tests && !catalog.tests.is_empty() {
            let c = catalog.clone();
            let failed: Vec<_> = tokio::task::spawn_blocking(move || {
                c.tests
                    .iter()
                    .map(|case| hunt_core::testing::run_case(&c, case))
                    .filter(|r| !r.passed)
                    .collect()
            })
            .await
            .map_err(|e| ConfigError::Internal(format!("the test cases did not run: {e}")))?;
            if !failed.is_empty() {
                return Err(ConfigError::TestsFailed(failed));
            }
        }
        // The switch runs on its own task: if the admin's request is dropped half-way
        // (its client went away), the partitions must still all resume on the version
        // the log records.
        let me = self
            .self_arc()
            .ok_or(ConfigError::Stopped(Stopped::Stopping))?;
        let (name, text) = (name.to_string(), text.to_string());
        tokio::spawn(async move {
            if options.dry_run {
                me.plan_version(catalog, &text).await
            } else {
                me.switch_version(&name, &text).await
            }
        })
        .await
        .map_err(|e| ConfigError::Stopped(Stopped::Switch(e.to_string())))?
    }

    /// The answer for a file identical to the version in force.
    fn unchanged(&self, options: ConfigOptions) -> Result<ConfigAnswer, ConfigError> {
        Ok(if options.dry_run {
            ConfigAnswer::Planned(Box::default())
        } else {
            ConfigAnswer::Unchanged(self.version().record.clone())
        })
    }

    /// What `new` would change, with the customers each change touches, counted by each
    /// partition between its rounds; refused if the codes granted do not fit it.
    async fn plan_version(
        &self,
        new: Arc<Catalog>,
        text: &str,
    ) -> Result<ConfigAnswer, ConfigError> {
        let _one = self.coordinator.lock().await;
        let old = self.version();
        if old.record.text == text {
            return self.unchanged(ConfigOptions {
                dry_run: true,
                skip_tests: true,
            });
        }
        let template = Plan::new(old.catalog(), &new);
        let mut waits = Vec::new();
        for h in &self.partitions {
            let (reply, rx) = oneshot::channel();
            h.tx.send(Msg::Plan {
                new: new.clone(),
                plan: template.clone(),
                reply,
            })
            .await
            .map_err(|_| ConfigError::Stopped(Stopped::Partitions))?;
            waits.push(rx);
        }
        let mut plan = template.clone();
        let mut grants = Vec::new();
        for rx in waits {
            let (part, g) = rx
                .await
                .map_err(|_| ConfigError::Stopped(Stopped::Partition))?
                .map_err(ConfigError::Internal)?;
            plan.add_counts(&part);
            grants.extend(g);
        }
        plan.check_grants(
            &new,
            grants
                .iter()
                .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str())),
        );
        if plan.refusals.is_empty() {
            Ok(ConfigAnswer::Planned(Box::new(plan)))
        } else {
            Err(ConfigError::Unsafe(Box::new(plan)))
        }
    }

    async fn switch_version(&self, name: &str, text: &str) -> Result<ConfigAnswer, ConfigError> {
        let _one = self.coordinator.lock().await;
        if self.version().record.text == text {
            return self.unchanged(ConfigOptions::default());
        }
        let (paused, resumes) = self.pause_all(false).await.map_err(ConfigError::Stopped)?;
        let old = self.version();
        let record = ConfigRecord {
            version: old.record.version + 1,
            name: name.to_string(),
            text: text.to_string(),
            at: now().0,
        };
        let result = async {
            let mut v = Version::compile(record.clone())
                .map_err(|e| ConfigError::Stopped(Stopped::Version(e)))?;
            let grants = || {
                paused
                    .iter()
                    .flat_map(|p| &p.grants)
                    .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str()))
            };
            let mut plan = Plan::new(old.catalog(), v.catalog());
            plan.check_grants(v.catalog(), grants());
            if !plan.refusals.is_empty() {
                return Err(ConfigError::Unsafe(Box::new(plan)));
            }
            v.restore_pools(grants())
                .map_err(|e| ConfigError::Stopped(Stopped::Version(e)))?;
            let ticket = self
                .log
                .submit(NODE, vec![(KIND_CONFIG, encode_config(&record))])
                .await
                .map_err(|e| ConfigError::Stopped(e.into()))?;
            ticket.await.map_err(|e| ConfigError::Stopped(e.into()))?;
            Ok((Arc::new(v), plan))
        }
        .await;
        let next = match &result {
            Ok((v, _)) => v.clone(),
            Err(_) => old,
        };
        *self.version.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        for r in resumes {
            let _ = r.send(next.clone());
        }
        match result {
            Ok((_, plan)) => {
                tracing::info!(
                    version = record.version,
                    name,
                    changes = plan.changes.len(),
                    "hunts file version in force"
                );
                self.notifier.configure(&self.version());
                Ok(ConfigAnswer::Switched(record, Box::new(plan)))
            }
            Err(e) => {
                if let ConfigError::Stopped(why) = &e {
                    self.fail(&why.to_string());
                }
                Err(e)
            }
        }
    }

    /// Takes a snapshot of every projection at one LSN; returns it.
    pub async fn snapshot(&self) -> Result<u64, String> {
        let _one = self.coordinator.lock().await;
        let started = std::time::Instant::now();
        let (paused, resumes) = self.pause_all(true).await.map_err(|e| e.to_string())?;
        let version = self.version();
        // Everything applied so far must be durable before the snapshot claims it.
        let mut wait_err = None;
        for p in &paused {
            if let Some(t) = &p.ticket
                && let Err(e) = t.clone().await
            {
                wait_err = Some(e.to_string());
            }
        }
        // Every delivery owed by the events so far queued, no delivery change half
        // done: the outbox is then exactly what the log holds up to `lsn`.
        self.notifier.barrier().await;
        let (outbox, lsn) = self.notifier.copy_for_snapshot(|| self.log.durable()).await;
        for r in resumes {
            let _ = r.send(version.clone());
        }
        let paused_ms = started.elapsed().as_millis() as u64;
        if let Some(e) = wait_err {
            return Err(e);
        }
        self.accepted_since_snapshot.store(0, Ordering::Relaxed);
        let copies: Vec<_> = paused.into_iter().filter_map(|p| p.snapshot).collect();
        let snaps = self.snapshots.clone();
        let record = version.record.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let payload = crate::snapshot::encode(&record, &copies, &outbox);
            snaps.save(lsn, &payload).map(|()| payload.len())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        tracing::info!(
            lsn,
            bytes,
            paused_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        Ok(lsn)
    }

    /// Stops the workers and the notifier where they are, as a crash would: no final
    /// snapshot, nothing more recorded; a later [`Service::shutdown`] does nothing.
    pub fn kill(&self) {
        self.closed.store(true, Ordering::Release);
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            w.abort();
        }
        self.notifier.abort();
    }

    /// Takes a last snapshot and stops the workers; the log is closed when the last
    /// reference to it goes.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.fatal.borrow().is_none()
            && let Err(e) = self.snapshot().await
        {
            tracing::warn!(error = %e, "final snapshot failed; the next start replays the log");
        }
        self.notifier.shutdown().await;
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in &workers {
            w.abort();
        }
        // Wait until they are gone: each holds the log, which must be closed before the
        // data directory's lock is let go.
        for w in workers {
            let _ = w.await;
        }
    }

    /// The log's durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.log.durable()
    }

    /// Remaining codes per pool of the version in force: (pool, size, remaining).
    pub fn pools(&self) -> Vec<(Arc<str>, u64, u64)> {
        let v = self.version();
        v.catalog()
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.id.clone(),
                    p.size(),
                    p.size().saturating_sub(v.pools.taken(i)),
                )
            })
            .collect()
    }
}
