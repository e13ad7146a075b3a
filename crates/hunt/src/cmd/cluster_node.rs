//! `hunt serve --cluster`: the node's side of the cluster (docs/cluster.md).
//!
//! A node connects and checks the cluster ([`hunt_cluster::Cluster::connect`]), then
//! waits as a standby until every partition's lease (and the node records' lease) is
//! free: never taken, released, or lapsed. It takes them all, appends a takeover
//! marker to each subject after reading its end, and only then rebuilds the state from
//! the stream and serves. While serving it renews every lease. It answers only while
//! its last confirmed renewal is recent enough that no other node can have taken a
//! lease ([`Tenure`]); past that, every answer is a 503 until a renewal is confirmed
//! (the bucket may just have lost its leader). A renewal refused, because another node
//! took the lease, or an append the stream refuses as fenced, stops it (fail-stop):
//! the partitions are another node's now.
//!
//! All partitions go together: the pools' counters are shared by the partitions of one
//! process (ADR 0004), so two nodes must never own partitions at once. Spreading them
//! over several active nodes needs the pools' escrow of the scale-out issue.

use std::time::{Duration, Instant};

use hunt_cluster::{
    Cluster, ClusterConfig, Held, JetStreamLog, Lapses, Leases, Member, Members, ObjectSnapshots,
};
use hunt_server::tenure::{Stamp, Tenure};
use hunt_store::partition_log::NODE;

/// The cluster's flags of `hunt serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Run on a NATS JetStream cluster instead of the local log: its servers' client
    /// URLs, comma-separated (nats://host:port). The data directory then keeps only
    /// snapshots.
    #[arg(long, value_name = "URL[,URL…]", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// The cluster's name: its stream is HUNT_<name>, its buckets hunt_<name>_….
    #[arg(long, default_value = "hunt", requires = "cluster")]
    pub cluster_name: String,
    /// The NATS servers' monitoring URLs (http://host:port), read at start to check
    /// that each syncs every write (`jetstream { sync_interval: always }`).
    #[arg(
        long,
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        requires = "cluster"
    )]
    pub cluster_monitor: Vec<String>,
    /// Start even without proof that the NATS servers sync every write. An event they
    /// acknowledged may then be lost if every replica loses power at once.
    #[arg(long, requires = "cluster")]
    pub accept_lazy_fsync: bool,
    /// Replicas of the cluster's stream and buckets; fewer in place is refused.
    #[arg(long, default_value_t = 3, requires = "cluster")]
    pub cluster_replicas: usize,
    /// Share the partitions with the cluster's other live nodes (docs/cluster.md): each
    /// node applies the partitions assigned to it and routes the rest to their owners.
    /// Without it, one node applies every partition and the others stand by. Every
    /// node of a cluster runs the same way.
    #[arg(long, requires = "cluster")]
    pub spread: bool,
    /// This node's id in the owners bucket (default: host name and process id).
    #[arg(long, requires = "cluster")]
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal before a standby may take the partitions
    /// over (renewed every third of it).
    #[arg(long, default_value = "5s", requires = "cluster")]
    pub lease: String,
}

impl ClusterArgs {
    pub fn enabled(&self) -> bool {
        !self.cluster.is_empty()
    }
}

/// The node's cluster figures on `/metrics`, with the tenure read when written out.
pub struct NodeMetrics {
    pub cluster: std::sync::Arc<hunt_cluster::ClusterMetrics>,
    pub tenure: std::sync::Arc<Tenure>,
}

impl hunt_server::metrics::MetricsSource for NodeMetrics {
    fn render(&self, out: &mut String) {
        self.cluster.render(out, self.tenure.left_at(Stamp::now()));
    }
}

/// What a node that owns the cluster's partitions holds.
pub struct Owned {
    pub log: JetStreamLog,
    /// The cluster's snapshots: the last owner's is where the rebuild starts.
    pub snapshots: ObjectSnapshots,
    pub partitions: u32,
    /// Until when the node may answer: moved on by each confirmed renewal.
    pub tenure: std::sync::Arc<Tenure>,
    /// Resolves if a lease is lost: the node must stop.
    pub lost: tokio::sync::oneshot::Receiver<String>,
    /// Send to give every lease up (after a clean stop), so that a standby takes over
    /// at once; the reply says it is done.
    pub release: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    /// The pools' escrow, with this node's epoch.
    pub escrow: std::sync::Arc<NodeEscrow>,
}

/// Without API keys (development mode) every endpoint is open, and the owner runs
/// whatever request a standby forwards: refused unless the NATS servers are on this
/// machine too, as the HTTP listener must be.
pub fn check_forwarding_exposure(
    servers: &[String],
    http: &hunt_server::http::HttpConfig,
) -> anyhow::Result<()> {
    if !http.keys.is_empty() {
        return Ok(());
    }
    for url in servers {
        let host = url
            .split("://")
            .last()
            .unwrap_or(url)
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("");
        let local = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !local {
            anyhow::bail!(
                "refusing to run on the NATS server {url} without API keys: standbys forward requests to the owner over NATS, so anyone who can publish there could call every endpoint, admin included. Give keys (--keys FILE or HUNT_API_KEYS), or use NATS servers on 127.0.0.1 for development"
            );
        }
    }
    Ok(())
}

fn parse_lease(text: &str) -> anyhow::Result<Duration> {
    let d = hunt_core::time::Duration::parse(text).map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
    if d.0 < 300 {
        anyhow::bail!("--lease: {text} is too short; at least 300ms");
    }
    Ok(Duration::from_millis(d.0 as u64))
}

fn node_id(args: &ClusterArgs) -> anyhow::Result<String> {
    let id = args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{host}-{}", std::process::id())
    });
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if !fits {
        anyhow::bail!(
            "--node-id {id:?}: use 1-64 letters, digits, '-' or '_' (it names the node in the owners bucket)"
        );
    }
    Ok(id)
}

/// A node that has joined the cluster, owning nothing yet.
pub struct Joined {
    pub cluster: Cluster,
    pub(crate) leases: Leases,
    pub(crate) members: Members,
    pub(crate) node: String,
    pub(crate) lease: Duration,
    pub(crate) replicas: usize,
}

/// Connects and checks the cluster (its stream created if new) and the owners bucket.
pub async fn join(args: &ClusterArgs, partitions: Option<u32>) -> anyhow::Result<Joined> {
    // Servers just started, or several nodes starting at once on a busy machine, can
    // time a request out: a NATS error is tried again for up to 30 s; a refusal
    // (too old a server, too few replicas, a bad name) is not.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match join_once(args, partitions).await {
            Err(e)
                if Instant::now() < until
                    && matches!(
                        e.downcast_ref::<hunt_cluster::ClusterError>(),
                        Some(hunt_cluster::ClusterError::Nats(_))
                    ) =>
            {
                tracing::warn!(error = %e, "joining the cluster failed for now; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            joined => return joined,
        }
    }
}

async fn join_once(args: &ClusterArgs, partitions: Option<u32>) -> anyhow::Result<Joined> {
    let lease = parse_lease(&args.lease)?;
    let mut cfg = ClusterConfig::new(args.cluster.clone(), args.cluster_name.clone());
    cfg.partitions = partitions;
    cfg.replicas = args.cluster_replicas;
    cfg.monitor = args.cluster_monitor.clone();
    cfg.accept_lazy_fsync = args.accept_lazy_fsync;
    let cluster = Cluster::connect(&cfg).await?;
    let parts = cluster.partitions();
    let node = node_id(args)?;
    let leases = Leases::open(&cluster, node.clone(), args.cluster_replicas).await?;
    let members = Members::open(&cluster, args.cluster_replicas).await?;
    // A node that starts again is back from its maintenance: a drain asked of it
    // before no longer holds.
    if members.drain_requested(&node).await.unwrap_or(false) {
        members.clear_drain(&node).await?;
        tracing::info!(node = %node, "a drain was asked of this node before it started: cleared");
    }
    tracing::info!(
        stream = cluster.stream(),
        partitions = parts,
        node = %node,
        lease_ms = lease.as_millis() as u64,
        "joined the cluster"
    );
    Ok(Joined {
        cluster,
        leases,
        members,
        node,
        lease,
        replicas: args.cluster_replicas,
    })
}

/// The node's heartbeat in the members bucket, a third of a lease apart, standby or
/// owner: its id, its HTTP address, and once it owns partitions, each one's position
/// on its subject (for `hunt cluster status`). A clean stop deletes its key.
pub struct Heartbeat {
    log: std::sync::Arc<parking_lot::Mutex<Option<JetStreamLog>>>,
    /// Whether a drain, once asked of a node that owns partitions, stands (one active
    /// node: it is stopping) rather than following `--undo` (a node sharing them).
    sticky: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>,
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Heartbeat {
    pub fn start(joined: &Joined, http: String) -> Heartbeat {
        let log = std::sync::Arc::new(parking_lot::Mutex::new(None::<JetStreamLog>));
        let (stop, mut stopped) =
            tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<()>>();
        let (members, node, every, parts) = (
            joined.members.clone(),
            joined.node.clone(),
            joined.lease / 3,
            joined.cluster.partitions(),
        );
        let source = log.clone();
        let sticky = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stays = sticky.clone();
        let (drain_tx, draining) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                // Asked to drain (`hunt cluster drain`)? An owner, once asked, is
                // stopping and stays draining; a standby follows the request, which
                // `--undo` may withdraw.
                let owning =
                    source.lock().is_some() && stays.load(std::sync::atomic::Ordering::Relaxed);
                let was = *drain_tx.borrow();
                if !(owning && was) {
                    let asked = members.drain_requested(&node).await.unwrap_or(was);
                    if asked != was {
                        if asked {
                            tracing::info!("asked to drain: giving the partitions to another node");
                        } else {
                            tracing::info!(
                                "drain withdrawn: this node may take partitions over again"
                            );
                        }
                        drain_tx.send_replace(asked);
                    }
                }
                let positions: std::collections::BTreeMap<u32, u64> = source
                    .lock()
                    .as_ref()
                    .map(|l: &JetStreamLog| l.positions())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(p, _)| *p < parts)
                    .collect();
                let me = Member {
                    node: node.clone(),
                    http: http.clone(),
                    owned: positions.keys().copied().collect(),
                    positions,
                    draining: *drain_tx.borrow(),
                    beat_at_ms: 0,
                };
                match members.beat(&me).await {
                    Ok(()) if failing => {
                        tracing::info!("heartbeat written again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "heartbeat not written; trying again");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    done = &mut stopped => {
                        if let Err(e) = members.leave(&node).await {
                            tracing::warn!(error = %e, "heartbeat key not deleted");
                        }
                        if let Ok(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
            }
        });
        Heartbeat {
            log,
            sticky,
            stop,
            draining,
        }
    }

    /// A node sharing the partitions: a drain asked of it may be withdrawn (`--undo`),
    /// and it then takes its share again.
    pub fn drains_follow_requests(&self) {
        self.sticky
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Becomes true when the node is asked to drain.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.clone()
    }

    /// From now on the heartbeat reports what `log` owns.
    pub fn owns(&self, log: &JetStreamLog) {
        *self.log.lock() = Some(log.clone());
    }

    /// Stops the heartbeat and deletes the node's key (waits at most 2 s).
    pub async fn stop(self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.stop.send(done).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
    }
}

/// Waits as a standby until every lease is free, takes them all and the partitions'
/// subjects, and keeps the leases renewed.
pub async fn become_owner(
    joined: Joined,
    draining: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Owned> {
    let Joined {
        cluster,
        leases,
        node,
        lease,
        replicas,
        ..
    } = joined;
    let parts = cluster.partitions();
    let keys: Vec<u32> = (0..parts).chain(std::iter::once(NODE)).collect();

    let mut lapses = Lapses::new(lease);
    let mut said_standby = false;
    let mut said_draining = false;
    let (taking, held) = loop {
        if *draining.borrow() {
            // A draining node takes nothing over: it waits to be stopped.
            if !said_draining {
                tracing::info!("draining: this standby will not take the partitions over");
                said_draining = true;
            }
            tokio::time::sleep(lease / 4).await;
            continue;
        }
        // Time counts towards a lapse only while the bucket takes writes.
        if let Err(e) = leases.beat().await {
            lapses.forget();
            tracing::warn!(error = %e, "standby: the owners bucket takes no writes now; looking again");
            tokio::time::sleep(lease / 4).await;
            continue;
        }
        let mut seen = Vec::with_capacity(keys.len());
        let mut all_free = true;
        let mut unread = None;
        for &k in &keys {
            // A bucket just created, or a server being lost, can fail a read for a
            // moment: the standby looks again at its next turn.
            match leases.read(k).await {
                Ok(s) => {
                    // Seen at the earliest when the read came back: the revision was
                    // written before that, so a lapse counted from here is never
                    // shorter than a lease after the write.
                    all_free &= lapses.free(k, &s, Instant::now());
                    seen.push((k, s));
                }
                Err(e) => {
                    unread = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = unread {
            lapses.forget();
            tracing::warn!(error = %e, "standby: a lease could not be read; looking again");
        } else if all_free {
            let taking = Stamp::now();
            let mut held = Vec::with_capacity(keys.len());
            for (k, s) in &seen {
                match leases.take(*k, s).await {
                    Ok(Some(h)) => held.push(h),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "standby: a lease could not be taken");
                        break;
                    }
                }
            }
            if held.len() == keys.len() {
                break (taking, held);
            }
            // Another node was quicker for some: give back what was taken.
            for h in &held {
                let _ = leases.release(h).await;
            }
        } else if !said_standby {
            let owner = seen
                .iter()
                .find_map(|(_, s)| s.owner.as_ref().map(|o| o.node.clone()))
                .unwrap_or_default();
            tracing::info!(owner = %owner, "standby: waiting for the owner's leases to lapse");
            said_standby = true;
        }
        tokio::time::sleep(lease / 4).await;
    };

    let snapshots =
        ObjectSnapshots::open(&cluster, replicas, tokio::runtime::Handle::current()).await?;
    let escrow = hunt_cluster::Escrow::open(&cluster, replicas, ESCROW_BLOCK_MAX).await?;
    let log = JetStreamLog::new(cluster, tokio::runtime::Handle::current());
    let epoch = held.iter().map(|h| h.epoch).max().unwrap_or(0);
    let who = format!("{node}/{epoch}");
    let metrics = log.cluster().metrics().clone();
    for &k in &keys {
        let last = log.last_sequence(k).await?;
        log.take_over(k, last, &who)
            .await
            .map_err(|e| anyhow::anyhow!("taking partition {k} over: {e}"))?;
    }
    tracing::info!(node = %node, epoch, "owns every partition: takeover markers appended");
    *metrics.node.lock() = node.clone();
    *metrics.owned.lock() = (0..parts).collect();
    *metrics.epochs.lock() = held
        .iter()
        .filter(|h| h.partition < parts)
        .map(|h| (h.partition, h.epoch))
        .collect();
    metrics
        .partitions
        .store(u64::from(parts), std::sync::atomic::Ordering::Relaxed);
    metrics
        .epoch
        .store(epoch, std::sync::atomic::Ordering::Relaxed);
    metrics
        .takeovers
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Nobody else can take a lease for a whole lease after it was written, and it was
    // written after `taking`.
    let tenure = std::sync::Arc::new(Tenure::default());
    tenure.extend_to(taking + trusted(lease));
    let (tx, lost) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(keep(
        leases,
        held,
        lease,
        tenure.clone(),
        metrics.clone(),
        tx,
        release_rx,
    ));
    Ok(Owned {
        escrow: std::sync::Arc::new(NodeEscrow::new(escrow, epoch)),
        tenure,
        log,
        snapshots,
        partitions: parts,
        lost,
        release,
    })
}

/// How long after a lease was written this node trusts it: the lease, less a tenth
/// for clocks that run at slightly different rates.
pub(crate) fn trusted(lease: Duration) -> Duration {
    lease - lease / 10
}

/// Renews every lease a third of the lease apart; each round confirmed in full moves
/// the tenure on to a lease after it was sent. A renewal refused (another node took
/// the lease) ends it: `lost` is told. Renewals that fail (no answer, no leader) are
/// tried again; the tenure then runs out and the node answers 503 meanwhile.
async fn keep(
    leases: Leases,
    mut held: Vec<Held>,
    lease: Duration,
    tenure: std::sync::Arc<Tenure>,
    metrics: std::sync::Arc<hunt_cluster::ClusterMetrics>,
    lost: tokio::sync::oneshot::Sender<String>,
    mut release: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    let mut said_lapsed = false;
    let mut next = Instant::now() + lease / 3;
    loop {
        tokio::select! {
            // A third of a lease after the previous round was sent, however long it took.
            () = tokio::time::sleep_until(next.into()) => {}
            asked = release.recv() => {
                for h in &held {
                    if let Err(e) = leases.release(h).await {
                        tracing::warn!(partition = h.partition, error = %e, "lease not released");
                    }
                }
                tracing::info!("leases released");
                if let Some(done) = asked {
                    let _ = done.send(());
                }
                return;
            }
        }
        let sent = Stamp::now();
        next = Instant::now() + lease / 3;
        match renew_round(&leases, held.iter_mut(), lease, &metrics).await {
            Err(partition) => {
                let _ = lost.send(format!(
                    "the lease of partition {partition} was taken by another node"
                ));
                return;
            }
            Ok(all) => after_round(&tenure, all, sent, lease, &mut said_lapsed),
        }
    }
}

/// One round of renewals of `held`, all at once (one slow key does not hold up the
/// others'), each given half a lease, counted in `metrics`. Whether every one was
/// confirmed; `Err(partition)`: that lease was taken by another node.
pub(crate) async fn renew_round<'a>(
    leases: &Leases,
    held: impl Iterator<Item = &'a mut Held>,
    lease: Duration,
    metrics: &hunt_cluster::ClusterMetrics,
) -> Result<bool, u32> {
    let renewals = held.map(|h| {
        let leases = leases.clone();
        async move {
            let r = tokio::time::timeout(lease / 2, leases.renew(h)).await;
            (h.partition, r)
        }
    });
    let mut all = true;
    for (partition, r) in futures_util::future::join_all(renewals).await {
        let counter = match &r {
            Ok(Ok(true)) => &metrics.renewals_confirmed,
            Ok(Ok(false)) => &metrics.renewals_refused,
            _ => &metrics.renewals_failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match r {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::error!(partition, "the lease was taken by another node");
                return Err(partition);
            }
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "lease renewal failed");
                all = false;
            }
            Err(_) => {
                tracing::warn!(partition, "lease renewal timed out");
                all = false;
            }
        }
    }
    Ok(all)
}

/// After a round sent at `sent`: confirmed in full, the tenure moves on to a lease
/// after it; a tenure run out is said once, and its end once.
pub(crate) fn after_round(
    tenure: &Tenure,
    all: bool,
    sent: Stamp,
    lease: Duration,
    said_lapsed: &mut bool,
) {
    if all {
        tenure.extend_to(sent + trusted(lease));
        if *said_lapsed {
            tracing::info!("leases confirmed again: answering");
            *said_lapsed = false;
        }
    } else if let Some(lapsed) = tenure.lapsed_for(Stamp::now())
        && !*said_lapsed
    {
        tracing::warn!(
            lapsed_ms = lapsed.as_millis() as u64,
            "leases not confirmed in time: answering 503 until a renewal is confirmed"
        );
        *said_lapsed = true;
    }
}

/// The pools bucket as the engine uses it: every change carries the epoch of the
/// lease by which this node owns the partition, so that a deposed owner's is refused.
pub struct NodeEscrow {
    pub escrow: hunt_cluster::Escrow,
    /// The epoch of every partition not in `each` (one node owning them all).
    pub epoch: u64,
    /// Each partition's own lease's epoch, on a node that shares the partitions.
    each: parking_lot::RwLock<std::collections::HashMap<u32, u64>>,
}

impl NodeEscrow {
    /// Every partition at `epoch` (the node owns them all by leases of that epoch).
    pub fn new(escrow: hunt_cluster::Escrow, epoch: u64) -> NodeEscrow {
        NodeEscrow {
            escrow,
            epoch,
            each: Default::default(),
        }
    }

    /// Partition `partition` is owned by a lease of `epoch` from now on.
    pub fn set_epoch(&self, partition: u32, epoch: u64) {
        self.each.write().insert(partition, epoch);
    }

    fn epoch_of(&self, partition: u32) -> u64 {
        self.each
            .read()
            .get(&partition)
            .copied()
            .unwrap_or(self.epoch)
    }
}

/// How much one refill hands a partition at most (ADR 0012).
pub const ESCROW_BLOCK_MAX: u64 = 64;

fn failure(e: hunt_cluster::EscrowError) -> hunt_server::escrow::EscrowFailure {
    use hunt_server::escrow::EscrowFailure;
    match e {
        hunt_cluster::EscrowError::Fenced { .. } => EscrowFailure::Fenced(e.to_string()),
        _ => EscrowFailure::Unavailable(e.to_string()),
    }
}

fn used(u: hunt_server::escrow::UsedIdx<'_>) -> hunt_cluster::Used<'_> {
    match u {
        hunt_server::escrow::UsedIdx::Indexes(ix) => hunt_cluster::Used::Indexes(ix),
        hunt_server::escrow::UsedIdx::Count(n) => hunt_cluster::Used::Count(n),
    }
}

impl hunt_server::escrow::EscrowBackend for NodeEscrow {
    fn claim<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        partition: u32,
    ) -> hunt_server::escrow::BoxFuture<
        'a,
        Result<hunt_server::escrow::Claimed, hunt_server::escrow::EscrowFailure>,
    > {
        Box::pin(async move {
            let h = self
                .escrow
                .claim(&a.key, &a.id, a.size, partition, self.epoch_of(partition))
                .await
                .map_err(failure)?;
            Ok(hunt_server::escrow::Claimed {
                spans: h.spans,
                used: h.used,
            })
        })
    }

    fn refill<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        partition: u32,
        u: hunt_server::escrow::UsedIdx<'a>,
    ) -> hunt_server::escrow::BoxFuture<
        'a,
        Result<hunt_server::escrow::Refilled, hunt_server::escrow::EscrowFailure>,
    > {
        Box::pin(async move {
            let r = self
                .escrow
                .refill(
                    &a.key,
                    &a.id,
                    a.size,
                    partition,
                    self.epoch_of(partition),
                    used(u),
                    ESCROW_BLOCK_MAX,
                )
                .await
                .map_err(failure)?;
            Ok(hunt_server::escrow::Refilled {
                got: r.got,
                held_elsewhere: r.held_elsewhere,
                seeding: r.seeding,
            })
        })
    }

    fn give_back<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        partition: u32,
        u: hunt_server::escrow::UsedIdx<'a>,
        unused: &'a [hunt_server::escrow::Span],
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move {
            self.escrow
                .give_back(
                    &a.key,
                    &a.id,
                    a.size,
                    partition,
                    self.epoch_of(partition),
                    used(u),
                    unused,
                )
                .await
                .map_err(failure)?;
            Ok(())
        })
    }

    fn wait_left<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        limit: Duration,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<bool, hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move { self.escrow.wait_left(&a.key, limit).await.map_err(failure) })
    }

    fn seed<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        seeds: Vec<(u32, hunt_server::escrow::Seed)>,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move {
            let seeds: Vec<(u32, hunt_cluster::Used<'_>)> = seeds
                .iter()
                .map(|(p, s)| {
                    let u = match s {
                        hunt_server::escrow::Seed::Indexes(ix) => hunt_cluster::Used::Indexes(ix),
                        hunt_server::escrow::Seed::Count(n) => hunt_cluster::Used::Count(*n),
                    };
                    (*p, u)
                })
                .collect();
            self.escrow
                .seed(&a.key, &a.id, a.size, &seeds)
                .await
                .map_err(failure)
        })
    }

    fn await_seeds<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        tag: &'a str,
        version: u64,
        below: u64,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move {
            self.escrow
                .await_seeds(&a.key, &a.id, a.size, tag, version, below)
                .await
                .map_err(failure)
        })
    }

    fn marked<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        version: u64,
        partition: u32,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move {
            self.escrow
                .marked(&a.key, &a.id, a.size, version, partition)
                .await
                .map_err(failure)
        })
    }

    fn seed_at_marker<'a>(
        &'a self,
        a: &'a hunt_server::escrow::AccountRef,
        version: u64,
        partition: u32,
        seed: hunt_server::escrow::Seed,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move {
            let u = match &seed {
                hunt_server::escrow::Seed::Indexes(ix) => hunt_cluster::Used::Indexes(ix),
                hunt_server::escrow::Seed::Count(n) => hunt_cluster::Used::Count(*n),
            };
            self.escrow
                .seed_at_marker(&a.key, &a.id, a.size, version, partition, u)
                .await
                .map_err(failure)
        })
    }

    fn lineage<'a>(
        &'a self,
        key: &'a str,
    ) -> hunt_server::escrow::BoxFuture<
        'a,
        Result<Option<hunt_server::escrow::Lineage>, hunt_server::escrow::EscrowFailure>,
    > {
        Box::pin(async move { self.escrow.get_json(key).await.map_err(failure) })
    }

    fn set_lineage<'a>(
        &'a self,
        key: &'a str,
        lineage: &'a hunt_server::escrow::Lineage,
    ) -> hunt_server::escrow::BoxFuture<'a, Result<(), hunt_server::escrow::EscrowFailure>> {
        Box::pin(async move { self.escrow.put_json(key, lineage).await.map_err(failure) })
    }

    fn ops(&self) -> u64 {
        self.escrow.ops()
    }
}
