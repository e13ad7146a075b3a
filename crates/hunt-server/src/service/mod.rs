//! The running engine behind the HTTP API: the log, the partition workers, the version
//! in force, and the coordinator that pauses every partition to switch versions or
//! take a snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Event, HuntView};
use hunt_core::plan::Plan;
use hunt_core::time::Timestamp;
use hunt_store::fs::RealFs;
use hunt_store::partition_log::NODE;
use hunt_store::{Durability, Log, LogConfig, LogError, PartitionLog, SnapshotStore, Snapshots};
use tokio::sync::{mpsc, oneshot};

use crate::backlog::Backlog;
use crate::metrics::Metrics;
use crate::notify::deliver::{Notifier, SINK_DLQ_MAX_DEFAULT, SINK_QUEUE_MAX_DEFAULT};
use crate::notify::outbox::Entry;
use crate::partition::{
    Batch, Handle, Msg, Paused, QUEUE_MESSAGES_MORE, Seat, Status, UserView, Worker,
};
use crate::records::{ConfigRecord, KIND_CONFIG, KIND_VERSION, encode_config};
use crate::recover;
use crate::state::{DedupeConfig, HuntCounters, Version, Winner, partition_of};

mod config;
mod open;
mod snapshot;
mod versions;

pub use config::{ConfigAnswer, ConfigError, ConfigOptions};
pub use open::{LocalLog, Started, lock_data_dir, open, render_report};
pub use versions::VersionEntry;

/// Where the engine keeps its data and how it runs (not the HTTP side).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub partitions: usize,
    pub dedupe: DedupeConfig,
    /// Events admitted and not yet answered, over all partitions; beyond it, 503.
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
    /// A log given from outside (the cluster's, on NATS JetStream) instead of the local
    /// one in the data directory, which then keeps only the snapshots.
    pub provided_log: Option<ProvidedLog>,
    /// Put the hunts file given at start in force even when the log already has a
    /// version in force (`--apply-config`). Without it, the file only starts an empty
    /// log, and a restart keeps the version in force, which may have come from
    /// `PUT /v1/config`. Never on a cluster: there it only starts a new cluster.
    pub apply_hunts_file: bool,
    /// The hunts file to start with when none is given and the log holds no version
    /// yet (`hunt serve` with no flags: the embedded example), as (name, text).
    pub starter_hunts: Option<(String, String)>,
    /// On a cluster whose partitions are spread over nodes: the partitions this node
    /// applies, and where the others' events go (`None`: every partition here).
    pub spread: Option<crate::route::Spread>,
}

/// A partition log given to the server instead of its local one.
#[derive(Clone)]
pub struct ProvidedLog {
    pub log: Arc<dyn PartitionLog>,
    /// What it is, for the start's log line (e.g. "JetStream stream HUNT_shop").
    pub name: String,
    /// Where the snapshots go with it (the cluster's object store), so that a node taking
    /// the partitions over starts from the last owner's; `None`: the data directory.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Where each partition's own snapshot goes (ADR 0015): on a node sharing the
    /// partitions with others, its snapshots are its partitions', one by one.
    pub part_snapshots: Option<Arc<dyn hunt_store::PartSnapshots>>,
    /// Until when this node owns the log's partitions by its leases; past it, nothing
    /// is answered (`None`: owned for as long as the process runs).
    pub tenure: Option<Arc<crate::tenure::Tenure>>,
    /// The figures that come with it, on `/metrics`.
    pub metrics: Option<Arc<dyn crate::metrics::MetricsSource>>,
    /// Where the pools' codes and the hunts' winner slots come from, when other nodes
    /// may grant from the same pools (ADR 0012); `None`: this process's own counters.
    pub escrow: Option<Arc<dyn crate::escrow::EscrowBackend>>,
    /// Grants made through the escrow (counted here, written by `metrics`).
    pub escrow_grants: Arc<AtomicU64>,
    /// The cluster's nodes and partitions, for `GET /v1/cluster`.
    pub cluster_view: Option<crate::cluster_status::SharedClusterView>,
}

impl std::fmt::Debug for ProvidedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedLog")
            .field("name", &self.name)
            .finish()
    }
}

/// Default partitions: one per core is enough; more keeps a hot customer's partition
/// from holding up others.
pub const PARTITIONS_DEFAULT: usize = 8;
/// Default backlog bound.
pub const BACKLOG_EVENTS_DEFAULT: usize = 200_000;
/// Default dedupe window bound, over all partitions.
pub const DEDUPE_ENTRIES_DEFAULT: usize = 10_000_000;
/// Default snapshot interval. A snapshot stops each partition, one at a time, only to
/// share its state (docs/adr/0010-snapshots-per-partition-without-stopping.md), but
/// writing it costs a core for seconds, so not too often; each restart replays the log
/// after the last one.
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
            provided_log: None,
            apply_hunts_file: false,
            starter_hunts: None,
            spread: None,
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
    #[error(transparent)]
    Backlog(#[from] crate::backlog::Full),
    #[error("the event log stopped ({0}); the server is shutting down to recover")]
    Stopped(Stopped),
    /// The customer's partition is another node's (partitions spread over nodes), and
    /// this node was asked not to route (a query another node routed here).
    #[error("partition {0} is owned by another node; ask that node")]
    NotOwner(u32),
    /// The customer's partition is another node's, and that node could not be asked
    /// (no owner answering, the partition moving, or no answer in time).
    #[error("partition {partition}'s owner could not answer ({why}); retry shortly")]
    Moving { partition: u32, why: String },
}

/// The hunt-wide figures: this node's, and on a cluster whose partitions are spread
/// over nodes, every other node's share summed in.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Per hunt.
    pub stats: BTreeMap<Arc<str>, HuntCounters>,
    /// The asked hunt's first winners, in grant order.
    pub winners: Vec<Winner>,
    /// How many winners the asked hunt has.
    pub winners_total: u64,
    /// Each pool of the version in force: (pool, size, remaining).
    pub pools: Vec<(Arc<str>, u64, u64)>,
    /// The nodes that did not answer in time, whose shares are missing.
    pub partial: Vec<String>,
    /// Every node's counters summed, when asked.
    pub counters: Option<crate::route::Counters>,
}

pub struct Service {
    pub config: EngineConfig,
    partitions: Vec<Handle>,
    log: Arc<dyn PartitionLog>,
    snapshots: Arc<dyn SnapshotStore>,
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
    workers: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Itself, for work it starts in the background.
    me: std::sync::Weak<Service>,
    /// Every partition's queue, for give-backs asked by other nodes.
    peers: Arc<crate::partition::Peers>,
    /// The hunts file's versions read from the log so far (`versions.rs`).
    versions: tokio::sync::Mutex<versions::VersionIndex>,
    /// On a cluster whose partitions are spread over nodes, those this node applies
    /// now (a hand-off changes them, ADR 0015); `None`: every partition.
    owned: RwLock<Option<std::collections::BTreeSet<u32>>>,
    /// On a cluster whose partitions are spread over nodes, the pools and dead letters
    /// as every node answered last (`figures`), for `/metrics` and the alerts.
    gathered: RwLock<Option<ClusterFigures>>,
    /// Each other node's last answer to a gather of figures (its figures per hunt,
    /// pools' counts and counters), standing in for it when it misses one.
    last_shares: parking_lot::Mutex<BTreeMap<String, crate::route::Share>>,
}

/// The cluster-wide figures a node sharing the partitions keeps from its last gather.
#[derive(Debug, Clone, Default)]
struct ClusterFigures {
    /// (pool, size, remaining).
    pools: Vec<(Arc<str>, u64, u64)>,
    /// Dead letters per sink, when counters were gathered.
    dead_letters: Option<BTreeMap<Arc<str>, u64>>,
}

/// The service's tasks go with it: dropped without a graceful shutdown (a killed
/// server), its workers and the notifier stop at once.
impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one partition's events to its owner; an owner that cannot be reached refuses
/// them for a retry, nothing recorded.
async fn routed(
    router: Arc<dyn crate::route::Router>,
    p: u32,
    items: Vec<(usize, Event)>,
) -> Vec<(usize, String, Status)> {
    let ids: Vec<(usize, String)> = items.iter().map(|(i, e)| (*i, e.id.clone())).collect();
    match router.events(p, items).await {
        // Every event sent has one answer: one the router lost is refused for a retry.
        Ok(mut s) => {
            let answered: std::collections::BTreeSet<usize> = s.iter().map(|a| a.0).collect();
            for (i, id) in ids {
                if !answered.contains(&i) {
                    let why = format!("partition {p}'s owner gave no answer for it");
                    s.push((i, id, Status::Moving(why)));
                }
            }
            s
        }
        Err(why) => ids
            .into_iter()
            .map(|(i, id)| (i, id, Status::Moving(why.clone())))
            .collect(),
    }
}

/// The wall clock in milliseconds.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}

impl Service {
    /// Starts the partition workers on the current runtime.
    pub fn start(
        config: EngineConfig,
        log: LocalLog,
        snapshots: Arc<dyn SnapshotStore>,
        recovered: recover::Recovered,
    ) -> Result<Arc<Service>, String> {
        let metrics = Arc::new(Metrics::default());
        if let Some(local) = log.local() {
            local.set_observer(metrics.clone());
        }
        let log: Arc<dyn PartitionLog> = Arc::new(log);
        let version = Arc::new(recovered.version.expect("open() ensures a version"));
        // Events read after the snapshot count towards the next one: a start (or a
        // takeover on a cluster) that read a long tail snapshots soon, so that the next
        // one does not read it again.
        let last_read = recovered.report.last_lsn;
        let tail = recovered.report.events;
        // A node sharing the partitions delivers only those it applies: the others'
        // deliveries are their owners' (a whole rebuild gives every partition's).
        let mut outbox = recovered.outbox;
        if let Some(s) = &config.spread {
            for p in 0..config.partitions as u32 {
                if !s.owned.contains(&p) {
                    outbox.take_partition(p);
                }
            }
        }
        let notifier = Notifier::start(
            log.clone(),
            outbox,
            &version,
            now,
            config.sink_queue_max,
            config.sink_dlq_max,
        )?;
        let mut partitions = Vec::new();
        let mut workers = Vec::new();
        let peers = Arc::new(crate::partition::Peers::new(
            config.spread.as_ref().map(|s| s.router.clone()),
        ));
        let backlog = Arc::new(Backlog::new(
            recovered.states.len(),
            config.backlog_events_max,
        ));
        let mut behind = recovered.behind;
        let mut switching = Vec::new();
        for (p, state) in recovered.states.into_iter().enumerate() {
            let room = config
                .backlog_events_max
                .saturating_add(QUEUE_MESSAGES_MORE)
                .min(tokio::sync::Semaphore::MAX_PERMITS);
            let (tx, rx) = mpsc::channel(room);
            // A partition a switch by markers did not reach applies the version of
            // its last marker, and puts the newest in force before anything else. On
            // a cluster every partition is asked: one whose marker is durable but
            // not yet counted by the pools (a stop in between) is counted now.
            let applies = behind.remove(&(p as u32));
            // Only a partition this node applies: another's marker is its owner's to
            // write, and its adoption here puts the newest version in force.
            let mine = config
                .spread
                .as_ref()
                .is_none_or(|s| s.owned.contains(&(p as u32)));
            if mine && (applies.is_some() || version.escrow.is_some()) {
                let (reply, done) = oneshot::channel();
                let _ = tx.try_send(Msg::Switch {
                    version: version.clone(),
                    reply,
                });
                switching.push((p as u32, done));
            }
            let applies = applies.unwrap_or_else(|| version.clone());
            let w = Worker::new(
                state,
                applies,
                Seat {
                    partition: p as u32,
                    log: log.clone(),
                    peers: peers.clone(),
                    escrow: config
                        .provided_log
                        .as_ref()
                        .is_some_and(|l| l.escrow.is_some()),
                },
                backlog.clone(),
                rx,
                now,
                Some(notifier.sender()),
            );
            workers.push(tokio::spawn(w.run()));
            partitions.push(Handle { tx });
        }
        peers.set(partitions.iter().map(|h: &Handle| h.tx.clone()).collect());
        let peers_kept = peers.clone();
        let (fatal, _) = tokio::sync::watch::channel(None);
        let spread_owned = config.spread.as_ref().map(|s| s.owned.clone());
        let service = Arc::new_cyclic(|me| Service {
            me: me.clone(),
            config,
            partitions,
            log,
            snapshots,
            version: RwLock::new(version),
            coordinator: tokio::sync::Mutex::new(()),
            metrics,
            backlog,
            accepted_since_snapshot: AtomicU64::new(tail),
            fatal,
            closed: AtomicBool::new(false),
            workers: parking_lot::Mutex::new(workers),
            notifier,
            peers: peers_kept,
            versions: tokio::sync::Mutex::default(),
            owned: RwLock::new(spread_owned),
            gathered: RwLock::new(None),
            last_shares: parking_lot::Mutex::new(BTreeMap::new()),
        });
        if service.config.spread.is_some() {
            service.follow_versions(last_read + 1);
        }
        if !switching.is_empty() {
            let me = service.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for (p, done) in switching {
                    if !matches!(done.await, Ok(Ok(()))) {
                        pending.push(p);
                    }
                }
                if !pending.is_empty() {
                    tracing::warn!(
                        version = me.version().record.version,
                        pending = pending.len(),
                        "partitions have not put the version in force yet: asked again every second"
                    );
                }
                if !pending.is_empty() {
                    let v = me.version();
                    me.keep_switching(v, pending);
                }
            });
        }
        if tail >= service.config.snapshot_every_events {
            service.snapshot_in_background();
        }
        Ok(service)
    }

    pub fn version(&self) -> Arc<Version> {
        self.version.read().clone()
    }

    /// Until when this node owns its partitions by lease (on a cluster).
    pub fn tenure(&self) -> Option<&Arc<crate::tenure::Tenure>> {
        self.config
            .provided_log
            .as_ref()
            .and_then(|p| p.tenure.as_ref())
    }

    /// Resolves when the log has failed, with why.
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn fail(&self, why: &str) {
        tracing::error!(error = why, "the event log failed: stopping (fail-stop)");
        self.fatal.send_replace(Some(why.to_string()));
    }

    /// Events admitted and not yet answered, over all partitions.
    pub fn backlog_total(&self) -> usize {
        self.backlog.total()
    }

    /// Queued events per partition.
    pub fn backlog(&self) -> Vec<usize> {
        self.backlog.per_partition()
    }

    /// Whether this node applies partition `p` (on a cluster whose partitions are
    /// spread over nodes, only those it owns).
    pub fn owns(&self, p: usize) -> bool {
        self.owned
            .read()
            .as_ref()
            .is_none_or(|o| o.contains(&(p as u32)))
    }

    /// Gives partition `n` up (a graceful hand-off, ADR 0015): from now on its events
    /// go through the router to whoever owns it next (refused `moving` until someone
    /// does); the rounds it took before are answered and durable when this returns,
    /// so that the next owner's rebuild holds them. Its deliveries leave the outbox:
    /// the next owner rebuilds and sends them (an attempt in flight here may be made
    /// again there, with the same key).
    pub async fn leave(&self, n: u32) -> Result<(), String> {
        let h = self
            .partitions
            .get(n as usize)
            .ok_or_else(|| format!("no partition {n}"))?;
        // Not while a snapshot of it is being taken: one begun before would be saved
        // after the next owner's, without the deliveries this node lets go.
        let _one = self.coordinator.lock().await;
        match &mut *self.owned.write() {
            Some(o) => {
                o.remove(&n);
            }
            None => return Err("this node is not one of several sharing the partitions".into()),
        }
        let (reply, rx) = oneshot::channel();
        h.tx.send(Msg::Leave { reply })
            .await
            .map_err(|_| Stopped::Partitions.to_string())?;
        rx.await.map_err(|_| Stopped::Partition.to_string())??;
        self.notifier.release_partition(n).await;
        Ok(())
    }

    /// Takes partition `n` over from a rebuild of it alone ([`recover::recover_partition`],
    /// after its previous owner left or its lease lapsed): its state goes to its worker,
    /// which applies the version of its last marker and then the newest, and this
    /// node applies its events from now on.
    pub async fn adopt(&self, n: u32, rebuilt: recover::RecoveredPartition) -> Result<(), String> {
        let h = self
            .partitions
            .get(n as usize)
            .ok_or_else(|| format!("no partition {n}"))?;
        if self.owned.read().is_none() {
            return Err("this node is not one of several sharing the partitions".into());
        }
        let newest = self.version();
        // A partition behind grants from its own version's accounts until it has
        // put the newest in force (never from this process's counters).
        let applies = match &rebuilt.behind {
            Some(old) => {
                let mut again = Version::compile(old.record.clone())?;
                if let Some(p) = &self.config.provided_log
                    && let Some(backend) = &p.escrow
                {
                    let grants: crate::escrow::PartitionGrants<'_> =
                        vec![(n, rebuilt.state.grants().collect())];
                    crate::escrow::attach_recorded(
                        backend.clone(),
                        &mut again,
                        &grants,
                        p.escrow_grants.clone(),
                    )
                    .await?;
                }
                Arc::new(again)
            }
            None => newest.clone(),
        };
        let (reply, rx) = oneshot::channel();
        h.tx.send(Msg::Adopt {
            state: Box::new(rebuilt.state),
            version: applies.clone(),
            reply,
        })
        .await
        .map_err(|_| Stopped::Partitions.to_string())?;
        rx.await.map_err(|_| Stopped::Partition.to_string())?;
        self.notifier
            .adopt_partition(rebuilt.outbox.entries().cloned().collect())
            .await;
        // Behind, the newest goes in force; in force already, the pools count its
        // marker (a hand-off right after a switch).
        let pending = self.put_in_force(&newest, &[n], config::SWITCH_WAIT).await;
        if !pending.is_empty() {
            self.keep_switching(newest, pending);
        }
        if let Some(o) = &mut *self.owned.write() {
            o.insert(n);
        }
        Ok(())
    }

    /// Events each partition has taken from its queue since the start.
    pub fn applied_per_partition(&self) -> Vec<u64> {
        self.backlog.applied_per_partition()
    }

    /// Applies `events` (each with its index in the request) and waits until every
    /// record behind the answers is durable. Events of partitions other nodes own go
    /// to them through the router.
    pub async fn ingest(
        &self,
        events: Vec<(usize, Event)>,
    ) -> Result<Vec<(usize, String, Status)>, IngestError> {
        self.ingest_with(events, true).await
    }

    /// Applies events another node routed here (all of partitions this node should
    /// own): an event of a partition it does not own is refused for a retry, never
    /// sent on.
    pub async fn ingest_routed(
        &self,
        events: Vec<(usize, Event)>,
    ) -> Result<Vec<(usize, String, Status)>, IngestError> {
        self.ingest_with(events, false).await
    }

    /// Asks this node's partitions to give back what they hold of the escrow account
    /// `key` (a partition on another node found it empty).
    pub fn give_back(&self, key: &str) {
        self.peers.give_back(None, key);
    }

    async fn ingest_with(
        &self,
        events: Vec<(usize, Event)>,
        route: bool,
    ) -> Result<Vec<(usize, String, Status)>, IngestError> {
        let n = events.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let admitted = self.backlog.admit(n)?;
        let parts = self.partitions.len();
        let mut groups: Vec<Vec<(usize, Event)>> = (0..parts).map(|_| Vec::new()).collect();
        for (i, e) in events {
            groups[partition_of(&e.user, parts)].push((i, e));
        }
        let mut waits = Vec::new();
        let mut elsewhere = tokio::task::JoinSet::new();
        let mut statuses = Vec::with_capacity(n);
        for (p, items) in groups.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            if !self.owns(p) {
                match (&self.config.spread, route) {
                    (Some(s), true) => {
                        self.metrics
                            .routed
                            .fetch_add(items.len() as u64, Ordering::Relaxed);
                        elsewhere.spawn(routed(s.router.clone(), p as u32, items));
                    }
                    _ => statuses.extend(items.into_iter().map(|(i, e)| {
                        let why = format!("partition {p} is not owned by this node");
                        (i, e.id, Status::Moving(why))
                    })),
                }
                continue;
            }
            let (reply, rx) = oneshot::channel();
            // Room first, then counted and sent at once: a request dropped while it
            // waits for room has counted nothing in the partition's queue.
            let Ok(room) = self.partitions[p].tx.reserve().await else {
                return Err(IngestError::Stopped(Stopped::Partitions));
            };
            self.backlog.queued(p, items.len());
            room.send(Msg::Events(Batch { items, reply }));
            waits.push(rx);
        }
        // Other nodes' answers come back durable there (and counted there).
        let mut routed_out = Vec::new();
        while let Some(answered) = elsewhere.join_next().await {
            routed_out.extend(answered.map_err(|_| IngestError::Stopped(Stopped::Partition))?);
        }
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
        // Applied by this node's partitions: what its figures and snapshots count.
        let accepted = statuses
            .iter()
            .filter(|(_, _, s)| matches!(s, Status::Accepted(_)))
            .count() as u64;
        statuses.extend(routed_out);
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

    fn self_arc(&self) -> Option<Arc<Service>> {
        self.me.upgrade()
    }

    /// One customer, as durable: waits until what the view shows is in the log. A
    /// customer of another node's partition is asked of that node through the router;
    /// the hunts they may see at `hunts_at` are then laid out here, from their state.
    pub async fn user(
        &self,
        user: &str,
        hunts_at: Option<Timestamp>,
    ) -> Result<(Option<UserView>, Vec<HuntView>), IngestError> {
        let p = partition_of(user, self.partitions.len());
        let router = match &self.config.spread {
            Some(s) if !self.owns(p) => s.router.clone(),
            _ => return self.user_here(user, hunts_at).await,
        };
        let view = router
            .user(p as u32, user)
            .await
            .map_err(|why| IngestError::Moving {
                partition: p as u32,
                why,
            })?;
        let hunts = match hunts_at {
            Some(now) => {
                let none = hunt_core::engine::UserState::default();
                let state = view.as_ref().map_or(&none, |v| &v.state);
                self.version().engine.visible_hunts(state, user, now)
            }
            None => Vec::new(),
        };
        Ok((view, hunts))
    }

    /// A customer another node asked about (of a partition this node should own): one
    /// of a partition it does not own is refused, never asked on.
    pub async fn user_routed(&self, user: &str) -> Result<Option<UserView>, IngestError> {
        Ok(self.user_here(user, None).await?.0)
    }

    async fn user_here(
        &self,
        user: &str,
        hunts_at: Option<Timestamp>,
    ) -> Result<(Option<UserView>, Vec<HuntView>), IngestError> {
        let p = partition_of(user, self.partitions.len());
        if !self.owns(p) {
            return Err(IngestError::NotOwner(p as u32));
        }
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
        let (total, winners, count, _) = self.stats_and_holdings(winners_of).await;
        (total, winners, count)
    }

    /// The same, with the codes the partitions' customers hold per pool id.
    async fn stats_and_holdings(
        &self,
        winners_of: Option<(&str, usize)>,
    ) -> (
        BTreeMap<Arc<str>, HuntCounters>,
        Vec<Winner>,
        u64,
        BTreeMap<Arc<str>, u64>,
    ) {
        let mut waits = Vec::new();
        // The partitions this node applies: one it handed over keeps its old state
        // until it is taken back, and counts on its new owner.
        for (p, h) in self.partitions.iter().enumerate() {
            if !self.owns(p) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let winners_of = winners_of.map(|(h, l)| (Arc::from(h), l));
            if h.tx.send(Msg::Stats { winners_of, reply }).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut total: BTreeMap<Arc<str>, HuntCounters> = BTreeMap::new();
        let (mut winners, mut count) = (Vec::new(), 0);
        let mut held: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for rx in waits {
            if let Ok((stats, w, n, h)) = rx.await {
                for (hunt, c) in stats {
                    total.entry(hunt).or_default().add(&c);
                }
                winners.extend(w);
                count += n;
                for (pool, n) in h {
                    *held.entry(pool).or_default() += n;
                }
            }
        }
        winners.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.user.cmp(&b.user)));
        winners.truncate(winners_of.map_or(0, |(_, l)| l));
        (total, winners, count, held)
    }

    /// This node's share of the hunt-wide figures (what another node gathers).
    pub async fn share(&self, ask: &crate::route::Ask) -> crate::route::Share {
        let mut share = crate::route::Share::default();
        // A plan or dead letters are asked alone: no figures are counted for them.
        if let Some(text) = &ask.plan_for {
            if let Ok((new, _)) = Catalog::load("the hunts file of another node's plan", text) {
                let old = self.version();
                if let Ok((plan, grants)) =
                    self.count_plan(old.catalog(), &Arc::new(new), None).await
                {
                    share.plan = Some(plan);
                    share.held_codes = grants.into_iter().flat_map(|(_, g)| g).collect();
                }
            }
            return share;
        }
        if ask.counters_alone {
            share.counters = Some(self.counters());
            return share;
        }
        if let Some(hunt) = &ask.completion_times_of {
            share.completion_ms = self.completion_times_here(hunt).await;
            return share;
        }
        if let Some(d) = &ask.dead_letters {
            match d.act {
                None => (share.dead, share.dead_total) = self.dead_letters_here(d).await,
                Some(retry) => match self.notifier.operate(&d.filter, retry).await {
                    Ok(keys) => share.acted = keys,
                    Err(e) => share.act_failed = Some(e),
                },
            }
            return share;
        }
        let winners_of = ask.winners_of.as_ref().map(|(h, l)| (h.as_str(), *l));
        let (stats, winners, winners_total, held) = self.stats_and_holdings(winners_of).await;
        let v = self.version();
        // Sharing the partitions, the codes held by the customers of those this node
        // applies: a partition counts on its owner alone, whoever granted its codes
        // (a node that gave a partition away, or died, no longer counts its grants).
        // Else the node's own pools' count.
        let spread = self.config.spread.is_some();
        let pools_taken = v
            .catalog()
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = if spread {
                    held.get(&p.id).copied().unwrap_or(0)
                } else {
                    v.taken(i)
                };
                (p.id.clone(), n)
            })
            .collect();
        crate::route::Share {
            stats,
            winners,
            winners_total,
            pools_taken,
            in_force: self.in_force().await,
            counters: ask.counters.then(|| self.counters()),
            ..share
        }
    }

    /// This node's dead letters as `d` asks: the CloudEvent only of one asked by id.
    async fn dead_letters_here(&self, d: &crate::route::DeadAsk) -> (Vec<Entry>, usize) {
        if let Some(key) = &d.filter.key {
            let e = self.notifier.get(key).await.filter(|e| d.filter.matches(e));
            let n = usize::from(e.is_some());
            return (e.into_iter().collect(), n);
        }
        let (mut entries, total) = self.notifier.dead_letters(&d.filter, d.limit);
        for e in &mut entries {
            e.body = None;
        }
        (entries, total)
    }

    /// The dead letters matching `filter`: this node's and, on a cluster whose
    /// partitions are spread over nodes, every other node's (gathered); the first
    /// `limit` in the log's order (with the CloudEvent when asked by id), how many in
    /// all, and the nodes that did not answer in time.
    pub async fn dead_letters(
        &self,
        filter: &crate::notify::outbox::Filter,
        limit: usize,
    ) -> (Vec<Entry>, usize, Vec<String>) {
        let ask = crate::route::DeadAsk {
            filter: filter.clone(),
            limit,
            act: None,
        };
        let (mut entries, mut total) = self.dead_letters_here(&ask).await;
        let mut missing = Vec::new();
        if let Some(spread) = &self.config.spread {
            let gathered = spread
                .router
                .gather(&crate::route::Ask {
                    dead_letters: Some(ask),
                    ..Default::default()
                })
                .await;
            for share in gathered.shares {
                entries.extend(share.dead);
                total += share.dead_total;
            }
            missing = gathered.missing;
            // The log's order; the partition decides between logs whose positions
            // overlap (nodes with logs of their own, in tests).
            entries.sort_by_key(|e| (e.lsn, e.outcome, e.partition, e.sink.clone()));
            entries.truncate(limit);
        }
        (entries, total, missing)
    }

    /// Retries (`retry`) or drops the dead letters matching `filter`, here and, on a
    /// cluster whose partitions are spread over nodes, on every other node: their
    /// ids, and the nodes that did not answer in time (whose dead letters may or may
    /// not have been acted on). If a node could not act (its log stopped), the first
    /// such failure, after every node was asked.
    pub async fn operate_dead_letters(
        &self,
        filter: &crate::notify::outbox::Filter,
        retry: bool,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        // Here and on every other node, whatever one of them answers: a failure here
        // does not keep the others' dead letters from being acted on.
        let here = self.notifier.operate(filter, retry).await;
        let mut failed = here.as_ref().err().cloned();
        let mut keys = here.unwrap_or_default();
        let mut missing = Vec::new();
        if let Some(spread) = &self.config.spread {
            let gathered = spread
                .router
                .gather(&crate::route::Ask {
                    dead_letters: Some(crate::route::DeadAsk {
                        filter: filter.clone(),
                        limit: 0,
                        act: Some(retry),
                    }),
                    ..Default::default()
                })
                .await;
            for share in gathered.shares {
                if let Some(why) = share.act_failed {
                    failed.get_or_insert(why);
                }
                keys.extend(share.acted);
            }
            missing = gathered.missing;
        }
        match failed {
            Some(why) => Err(why),
            None => Ok((keys, missing)),
        }
    }

    /// The version each partition this node applies is applying.
    pub async fn in_force(&self) -> BTreeMap<u32, u64> {
        let mut waits = Vec::new();
        for (p, h) in self.partitions.iter().enumerate() {
            if !self.owns(p) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            if h.tx.send(Msg::InForce { reply }).await.is_ok() {
                waits.push((p as u32, rx));
            }
        }
        let mut out = BTreeMap::new();
        for (p, rx) in waits {
            if let Ok(v) = rx.await {
                out.insert(p, v);
            }
        }
        out
    }

    /// The hunt-wide figures: this node's share, and on a cluster whose partitions are
    /// spread over nodes, every other node's gathered through the router and summed
    /// (each as of its answer; a node that does not answer in time is named in
    /// [`Figures::partial`]).
    pub async fn figures(&self, ask: &crate::route::Ask) -> Figures {
        let mine = self.share(ask).await;
        let gathered = match &self.config.spread {
            Some(s) => self.with_stand_ins(ask, s.router.gather(ask).await),
            None => crate::route::Gathered::default(),
        };
        let mut f = Figures {
            partial: gathered.missing,
            ..Figures::default()
        };
        let mut taken: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for share in std::iter::once(mine).chain(gathered.shares) {
            if let Some(c) = &share.counters {
                f.counters.get_or_insert_with(Default::default).add(c);
            }
            for (hunt, c) in share.stats {
                f.stats.entry(hunt).or_default().add(&c);
            }
            f.winners.extend(share.winners);
            f.winners_total += share.winners_total;
            for (pool, n) in share.pools_taken {
                *taken.entry(pool).or_default() += n;
            }
        }
        f.winners
            .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.user.cmp(&b.user)));
        f.winners
            .truncate(ask.winners_of.as_ref().map_or(0, |(_, l)| *l));
        f.pools = self
            .version()
            .catalog()
            .pools
            .iter()
            .map(|p| {
                let used = taken.get(&p.id).copied().unwrap_or(0);
                (p.id.clone(), p.size(), p.size().saturating_sub(used))
            })
            .collect();
        f.partial.sort();
        // Kept for /metrics and the alerts: a gather every node answered, or the
        // history's, where a node that missed it counts with its last answer.
        if self.config.spread.is_some() && (ask.counters || f.partial.is_empty()) {
            let mut g = self.gathered.write();
            let dead_letters = match &f.counters {
                Some(c) => Some(
                    c.sinks
                        .iter()
                        .map(|s| (s.sink.clone(), s.dead_letters))
                        .collect(),
                ),
                None => g.as_ref().and_then(|g| g.dead_letters.clone()),
            };
            *g = Some(ClusterFigures {
                pools: f.pools.clone(),
                dead_letters,
            });
        }
        f
    }

    /// Every node's counters summed: this node's, and on a cluster whose partitions are
    /// spread over nodes every other node's (gathered, counters alone); a node that
    /// does not answer in time counts with its last answer's and is named.
    pub async fn counters_everywhere(&self) -> (crate::route::Counters, Vec<String>) {
        let mut c = self.counters();
        let Some(spread) = &self.config.spread else {
            return (c, Vec::new());
        };
        let ask = crate::route::Ask {
            counters_alone: true,
            ..Default::default()
        };
        let gathered = self.with_stand_ins(&ask, spread.router.gather(&ask).await);
        for share in &gathered.shares {
            if let Some(theirs) = &share.counters {
                c.add(theirs);
            }
        }
        // Kept for the dead-letter alerts, with the pools as last gathered.
        let dead = c.sinks.iter().map(|s| (s.sink.clone(), s.dead_letters));
        let mut kept = self.gathered.write();
        kept.get_or_insert_with(|| ClusterFigures {
            pools: self.pools_here(),
            dead_letters: None,
        })
        .dead_letters = Some(dead.collect());
        drop(kept);
        let mut missing = gathered.missing;
        missing.sort();
        (c, missing)
    }

    /// `gathered` for `ask`, each node that answered remembered (its figures per hunt,
    /// pools' counts and counters). For the counters (the dashboard's history and
    /// reading), each live node that did not answer in time is stood in for by its last
    /// answer, so that a sum over the nodes does not drop and jump back by its whole
    /// share; it stays named as missing. Other figures go without it.
    fn with_stand_ins(
        &self,
        ask: &crate::route::Ask,
        mut gathered: crate::route::Gathered,
    ) -> crate::route::Gathered {
        use crate::route::Share;
        let mut last = self.last_shares.lock();
        for share in &gathered.shares {
            if share.node.is_empty() {
                continue;
            }
            let kept = last.entry(share.node.clone()).or_insert_with(|| Share {
                node: share.node.clone(),
                ..Share::default()
            });
            if share.counters.is_some() {
                kept.counters = share.counters.clone();
            }
            if !ask.counters_alone {
                kept.stats = share.stats.clone();
                kept.pools_taken = share.pools_taken.clone();
            }
        }
        let answered: std::collections::BTreeSet<&str> =
            gathered.shares.iter().map(|s| s.node.as_str()).collect();
        let stand_ins: Vec<Share> = if ask.counters || ask.counters_alone {
            gathered
                .missing
                .iter()
                .filter_map(|m| last.get(m))
                .map(|kept| Share {
                    node: kept.node.clone(),
                    stats: kept.stats.clone(),
                    pools_taken: kept.pools_taken.clone(),
                    counters: kept.counters.clone(),
                    ..Share::default()
                })
                .collect()
        } else {
            Vec::new()
        };
        // A node neither answering nor missing has left the cluster.
        let missing = &gathered.missing;
        last.retain(|node, _| answered.contains(node.as_str()) || missing.contains(node));
        drop(last);
        gathered.shares.extend(stand_ins);
        gathered
    }

    /// The last completions' times of `hunt` in ms, over every partition (each keeps
    /// its last few hundred; see `state/completion.rs`): on a cluster whose partitions
    /// are spread over nodes, every node's gathered, with the nodes that did not answer.
    pub async fn completion_times(&self, hunt: &str) -> (Vec<i64>, Vec<String>) {
        let mut all = self.completion_times_here(hunt).await;
        let Some(spread) = &self.config.spread else {
            return (all, Vec::new());
        };
        let ask = crate::route::Ask {
            completion_times_of: Some(hunt.to_string()),
            ..Default::default()
        };
        let gathered = spread.router.gather(&ask).await;
        for share in gathered.shares {
            all.extend(share.completion_ms);
        }
        (all, gathered.missing)
    }

    /// The same, over this node's partitions.
    async fn completion_times_here(&self, hunt: &str) -> Vec<i64> {
        let hunt: Arc<str> = Arc::from(hunt);
        let mut waits = Vec::new();
        for (p, h) in self.partitions.iter().enumerate() {
            // One handed over keeps its old state, and counts on its new owner.
            if !self.owns(p) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let msg = Msg::CompletionTimes {
                hunt: hunt.clone(),
                reply,
            };
            if h.tx.send(msg).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut all = Vec::new();
        for rx in waits {
            if let Ok(ms) = rx.await {
                all.extend(ms);
            }
        }
        all
    }

    /// Pauses every partition between rounds; each hands over its grants. Send the
    /// version to go on with through the returned senders.
    async fn pause_all(
        &self,
    ) -> Result<(Vec<Paused>, Vec<oneshot::Sender<Arc<Version>>>), Stopped> {
        let mut waits = Vec::new();
        let mut resumes = Vec::new();
        for h in &self.partitions {
            let (reply, rx) = oneshot::channel();
            let (resume_tx, resume) = oneshot::channel();
            h.tx.send(Msg::Pause { reply, resume })
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

    /// Stops the workers and the notifier where they are, as a crash would: no final
    /// snapshot, nothing more recorded; a later [`Service::shutdown`] does nothing.
    pub fn kill(&self) {
        self.closed.store(true, Ordering::Release);
        for w in self.workers.lock().drain(..) {
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
        let workers = std::mem::take(&mut *self.workers.lock());
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

    /// Remaining codes per pool of the version in force: (pool, size, remaining). On a
    /// cluster whose partitions are spread over nodes, the cluster's as every node
    /// answered the last gather (the dashboard's history gathers every 5 s); before
    /// the first, this node's partitions' grants alone.
    pub fn pools(&self) -> Vec<(Arc<str>, u64, u64)> {
        if let Some(g) = self.gathered.read().as_ref() {
            return g.pools.clone();
        }
        self.pools_here()
    }

    /// The dead letters of `sink`: on a cluster whose partitions are spread over
    /// nodes, every node's as last gathered with counters (before that, this node's).
    pub fn dead_letter_count(&self, sink: &str) -> u64 {
        if let Some(n) = self
            .gathered
            .read()
            .as_ref()
            .and_then(|g| g.dead_letters.as_ref())
            .map(|d| d.get(sink).copied().unwrap_or(0))
        {
            return n;
        }
        self.notifier.counts(sink).1 as u64
    }

    /// This node's counters (on one node, the whole engine's).
    pub fn counters(&self) -> crate::route::Counters {
        use crate::notify::breaker::State as B;
        let at = std::time::Instant::now();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (ack, ack_count) = self.metrics.ack_seconds.counts();
        let sinks = self
            .notifier
            .sinks()
            .iter()
            .map(|rt| {
                let (queue, dead) = self.notifier.counts(&rt.id);
                crate::route::SinkCounts {
                    sink: rt.id.clone(),
                    breaker: match rt.breaker_state() {
                        B::Closed => crate::route::Breaker::Closed,
                        B::HalfOpen => crate::route::Breaker::HalfOpen,
                        B::Open => crate::route::Breaker::Open,
                    },
                    unhealthy_for_s: rt.open_for(at).map(|d| d.as_secs_f64()),
                    queue: queue as u64,
                    in_flight: load(&rt.metrics.in_flight),
                    dead_letters: dead as u64,
                    delivered: load(&rt.metrics.delivered),
                    failed: load(&rt.metrics.failed),
                }
            })
            .collect();
        crate::route::Counters {
            accepted: load(&self.metrics.accepted),
            ack,
            ack_count,
            backlog: self.backlog().into_iter().map(|n| n as u64).collect(),
            applied: self.applied_per_partition(),
            sinks,
        }
    }

    /// Remaining codes per pool of the version in force, from this node's partitions'
    /// grants alone.
    fn pools_here(&self) -> Vec<(Arc<str>, u64, u64)> {
        let v = self.version();
        v.catalog()
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), p.size(), p.size().saturating_sub(v.taken(i))))
            .collect()
    }
}
