//! The node loop of a cluster whose partitions are spread over its live nodes
//! (ADR 0015, "The node loop").
//!
//! Every node computes the same assignment of partitions to the live nodes that are
//! not draining (rendezvous hashing, [`hunt_cluster::assign`]), from the members
//! bucket, each at its own turn. A node then:
//! - **gives** each partition it holds that is assigned to another node: the hands
//!   finish its rounds in flight and let it go ([`Hands::give`]), then the lease is
//!   released, so that the new owner takes it at its next turn without waiting for a
//!   lapse;
//! - **takes** each partition assigned to it whose lease is free (never taken,
//!   released, or lapsed: its holder died): the lease first, then the hands
//!   ([`Hands::take`]); if they fail, the lease is released and the partition tried
//!   again at a later turn.
//!
//! A lease per partition is renewed by a task of its own, every third of a lease, all
//! of them at once: a long take (a partition's rebuild) never holds up the renewals.
//! While every lease held was confirmed recently enough that no other node can have
//! taken one, the [`Tenure`] runs on; a renewal refused (another node took a lease:
//! this node was cut off for longer than a lease) ends the node, as on a cluster with
//! one active node: its appends to that partition are fenced already.
//!
//! A graceful stop gives every partition away first ([`Spread::stop`]); the node's
//! member key should be gone by then, so that the others assign it nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hunt_cluster::{Held, Lapses, Leases, Liveness, Members, assign};

use super::cluster_node::{after_round, renew_round};
use hunt_server::tenure::{Stamp, Tenure};
use tokio::sync::{oneshot, watch};

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a node does with a partition that moves to it or away from it.
pub trait Hands: Send + Sync + 'static {
    /// Starts applying partition `n`, whose lease this node has just taken at
    /// `epoch`. An error gives the lease back; the partition is tried again later.
    fn take(&self, n: u32, epoch: u64) -> BoxFuture<'_, Result<(), String>>;
    /// Stops applying partition `n`: once this returns, what it took is answered and
    /// durable, and this node appends nothing more of it. An error keeps the lease;
    /// the give is tried again at the next turn.
    fn give(&self, n: u32) -> BoxFuture<'_, Result<(), String>>;
}

/// What the loop has seen and holds, after each turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The partitions whose leases this node holds (and whose hands took them).
    pub held: BTreeSet<u32>,
    /// The live members, this node among them once its heartbeat is read.
    pub live: BTreeSet<String>,
    /// The live members that may be assigned partitions (not draining).
    pub eligible: BTreeSet<String>,
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub partitions: u32,
    pub lease: Duration,
    /// How often the members and leases are read (a take waits at most this after a
    /// release): a quarter of the lease by default, at most 500 ms.
    pub turn: Duration,
    /// Where the renewals are counted.
    pub metrics: Arc<hunt_cluster::ClusterMetrics>,
}

impl Settings {
    pub fn new(node: impl Into<String>, partitions: u32, lease: Duration) -> Settings {
        Settings {
            node: node.into(),
            partitions,
            lease,
            turn: (lease / 4).min(Duration::from_millis(500)),
            metrics: Arc::default(),
        }
    }
}

/// The running loop.
pub struct Spread {
    #[cfg_attr(not(test), allow(dead_code))]
    view: watch::Receiver<View>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    lost: Option<oneshot::Receiver<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The leases held, shared by the mover and the renewer.
type HeldMap = Arc<tokio::sync::Mutex<BTreeMap<u32, Held>>>;

impl Spread {
    /// Starts the loop for `settings.node`; `draining` says whether the node is asked
    /// to drain (it then takes nothing, and gives what it holds to the others). The
    /// loop moves `tenure` on while every lease held is confirmed, and keeps `live`
    /// (the live nodes' ids, for the router's gathers).
    pub fn start(
        leases: Leases,
        members: Members,
        settings: Settings,
        hands: Arc<dyn Hands>,
        draining: watch::Receiver<bool>,
        tenure: Arc<Tenure>,
        live: watch::Sender<BTreeSet<String>>,
    ) -> Spread {
        let held: HeldMap = Arc::default();
        let lease = settings.lease;
        let (view_tx, view) = watch::channel(View::default());
        let (stop, stopped) = oneshot::channel();
        let (lost_tx, lost) = oneshot::channel();
        let (renewer_stop, renewer_stopped) = oneshot::channel();
        let renewer = tokio::spawn(renew(
            leases.clone(),
            held.clone(),
            settings.metrics.clone(),
            settings.lease,
            tenure.clone(),
            lost_tx,
            renewer_stopped,
        ));
        let mover = tokio::spawn(
            Mover {
                leases,
                members,
                settings,
                hands,
                held,
                draining,
                view: view_tx,
                live,
                tenure,
                liveness: Liveness::new(lease),
                lapses: Lapses::new(lease),
            }
            .run(stopped, renewer_stop),
        );
        Spread {
            view,
            stop: Some(stop),
            lost: Some(lost),
            tasks: vec![mover, renewer],
        }
    }

    /// What the loop holds and sees, after each turn.
    #[cfg(test)]
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Told once, when a lease was taken by another node (this node must stop).
    pub fn lost(&mut self) -> Option<oneshot::Receiver<String>> {
        self.lost.take()
    }

    /// Gives every partition away (hands first, then the lease) and stops, waiting at
    /// most `limit`.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let (done, wait) = oneshot::channel();
            if stop.send(done).is_ok() {
                let _ = tokio::time::timeout(limit, wait).await;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops at once, giving nothing back (as if the process died): the leases lapse.
    #[cfg(test)]
    pub fn kill(mut self) {
        self.stop.take();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Spread {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The tenure of a node that has given every partition away: nothing to confirm.
const NOTHING_HELD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Renews every lease held a third of a lease apart, all at once; a round confirmed
/// in full (or with nothing held) moves the tenure on.
async fn renew(
    leases: Leases,
    held: HeldMap,
    metrics: Arc<hunt_cluster::ClusterMetrics>,
    lease: Duration,
    tenure: Arc<Tenure>,
    lost: oneshot::Sender<String>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut said_lapsed = false;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = &mut stopped => return,
        }
        let sent = Stamp::now();
        next = Instant::now() + lease / 3;
        let mut map = held.lock().await;
        let round = renew_round(&leases, map.values_mut(), lease, &metrics).await;
        drop(map);
        match round {
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

struct Mover {
    leases: Leases,
    members: Members,
    settings: Settings,
    hands: Arc<dyn Hands>,
    held: HeldMap,
    draining: watch::Receiver<bool>,
    view: watch::Sender<View>,
    live: watch::Sender<BTreeSet<String>>,
    tenure: Arc<Tenure>,
    liveness: Liveness,
    lapses: Lapses,
}

impl Mover {
    async fn run(
        mut self,
        mut stopped: oneshot::Receiver<oneshot::Sender<()>>,
        renewer_stop: oneshot::Sender<()>,
    ) {
        loop {
            if let Err(e) = self.turn().await {
                tracing::warn!(error = %e, "the partitions' assignment could not be read; looking again");
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.turn) => {}
                done = &mut stopped => {
                    self.give_all().await;
                    let _ = renewer_stop.send(());
                    // Holding nothing, the node has nothing another could take from
                    // it: while it stops, it routes every request to the new owners.
                    if self.held.lock().await.is_empty() {
                        self.tenure.extend_to(Stamp::now() + NOTHING_HELD);
                    }
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// One look at the members and leases, and the moves it calls for.
    async fn turn(&mut self) -> Result<(), String> {
        let me = self.settings.node.clone();
        // Time counts towards a lapse only while the bucket takes writes.
        if let Err(e) = self.leases.beat().await {
            self.lapses.forget();
            return Err(format!("the owners bucket takes no writes now: {e}"));
        }
        let members = self.members.read().await.map_err(|e| {
            self.lapses.forget();
            e.to_string()
        })?;
        let now = Instant::now();
        let live: BTreeSet<String> = self.liveness.live(&members, now).into_iter().collect();
        let draining = *self.draining.borrow();
        let mut eligible: BTreeSet<String> = members
            .iter()
            .filter(|m| live.contains(&m.member.node) && !m.member.draining)
            .map(|m| m.member.node.clone())
            .collect();
        // This node's own word on draining is newer than its last heartbeat.
        if draining {
            eligible.remove(&me);
        } else {
            eligible.insert(me.clone());
        }
        let nodes: Vec<&str> = eligible.iter().map(String::as_str).collect();
        let owner = |p: u32| assign::owner(p, &nodes);

        // Gives first: what this node gives, another may take at its next turn.
        let holding: Vec<u32> = self.held.lock().await.keys().copied().collect();
        for p in holding {
            match owner(p) {
                Some(o) if o != me => {
                    tracing::info!(
                        partition = p,
                        to = o,
                        "giving the partition to its assigned node"
                    );
                    self.give(p).await;
                }
                _ => {}
            }
        }
        // Then takes, of what is assigned here and free.
        for p in 0..self.settings.partitions {
            if owner(p) != Some(me.as_str()) || self.held.lock().await.contains_key(&p) {
                continue;
            }
            let seen = self.leases.read(p).await.map_err(|e| e.to_string())?;
            if !self.lapses.free(p, &seen, Instant::now()) {
                continue;
            }
            let Some(h) = self
                .leases
                .take(p, &seen)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let epoch = h.epoch;
            let was = seen
                .owner
                .as_ref()
                .map(|o| o.node.clone())
                .filter(|n| !n.is_empty());
            self.held.lock().await.insert(p, h);
            match self.hands.take(p, epoch).await {
                Ok(()) => {
                    tracing::info!(partition = p, epoch, lapsed_from = ?was, "took the partition over");
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "could not take the partition over: its lease is given back");
                    self.release(p).await;
                }
            }
        }
        self.live.send_if_modified(|l| {
            let changed = *l != live;
            if changed {
                l.clone_from(&live);
            }
            changed
        });
        let held = self.held.lock().await.keys().copied().collect();
        self.view.send_replace(View {
            held,
            live,
            eligible,
        });
        Ok(())
    }

    /// Gives `p` away: the hands first, then the lease.
    async fn give(&mut self, p: u32) {
        match self.hands.give(p).await {
            Ok(()) => self.release(p).await,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "could not give the partition away; trying again");
            }
        }
    }

    /// Releases `p`'s lease (if still held).
    async fn release(&mut self, p: u32) {
        let mut map = self.held.lock().await;
        if let Some(h) = map.remove(&p)
            && let Err(e) = self.leases.release(&h).await
        {
            // It lapses instead, a lease later.
            tracing::warn!(partition = p, error = %e, "lease not released");
        }
    }

    /// Gives every partition held away (a graceful stop).
    async fn give_all(&mut self) {
        let holding: Vec<u32> = self.held.lock().await.keys().copied().collect();
        for p in holding {
            self.give(p).await;
        }
        if !self.held.lock().await.is_empty() {
            tracing::warn!("some partitions could not be given away: their leases lapse");
        }
        let held = self.held.lock().await.keys().copied().collect();
        self.view.send_modify(|v| v.held = held);
    }
}

/// The hands of a node serving with its engine: a partition taken is fenced (a
/// takeover marker after its subject's end), rebuilt alone from its snapshot and
/// tail, adopted by the service and then served to other nodes; a partition given is
/// snapshotted, no longer served to others, left by the service (what it took
/// answered and durable), and its subject's writer stopped.
pub struct NodeHands {
    pub node: String,
    pub service: std::sync::Weak<hunt_server::service::Service>,
    pub log: hunt_cluster::JetStreamLog,
    pub snapshots: Arc<dyn hunt_store::PartSnapshots>,
    pub responder: Arc<super::cluster_route::Responder>,
    pub escrow: Arc<super::cluster_node::NodeEscrow>,
}

impl NodeHands {
    fn service(&self) -> Result<Arc<hunt_server::service::Service>, String> {
        self.service
            .upgrade()
            .ok_or_else(|| "the server is stopping".to_string())
    }

    /// Which partitions the log appends to, for `/metrics`.
    fn count_owned(&self) {
        let metrics = self.log.cluster().metrics();
        *metrics.owned.lock() = self
            .log
            .positions()
            .into_keys()
            .filter(|p| *p < self.log.cluster().partitions())
            .collect();
    }

    async fn taking(&self, n: u32, epoch: u64) -> Result<(), String> {
        let service = self.service()?;
        self.escrow.set_epoch(n, epoch);
        let last = self
            .log
            .last_sequence(n)
            .await
            .map_err(|e| format!("reading partition {n}'s end: {e}"))?;
        self.log
            .take_over(n, last, &format!("{}/{epoch}", self.node))
            .await
            .map_err(|e| format!("taking partition {n} over: {e}"))?;
        let (log, snapshots) = (self.log.clone(), self.snapshots.clone());
        let (partitions, dedupe) = (service.config.partitions, service.config.dedupe);
        let rebuilt = tokio::task::spawn_blocking(move || {
            hunt_server::recover::recover_partition(
                &log,
                Some(&*snapshots),
                n,
                partitions,
                dedupe,
                &mut |_| {},
            )
        })
        .await
        .map_err(|e| format!("rebuilding partition {n}: {e}"))??;
        let events = rebuilt.report.events;
        service.adopt(n, rebuilt).await?;
        if let Err(e) = self.responder.host(n).await {
            // Not served to others: given up again, for a later turn.
            let _ = service.leave(n).await;
            return Err(e);
        }
        tracing::debug!(partition = n, events, "partition rebuilt and adopted");
        Ok(())
    }

    async fn giving(&self, n: u32) -> Result<(), String> {
        let service = self.service()?;
        // The next owner reads only what comes after it; without it, a longer tail.
        if let Err(e) = service.snapshot_partition(n, self.snapshots.clone()).await {
            tracing::warn!(partition = n, error = %e, "no snapshot at the hand-off: the next owner reads the partition's longer tail");
        }
        // Requests other nodes sent until now are answered; later ones are refused
        // `moving` until the next owner serves the partition.
        self.responder.release(n).await;
        service.leave(n).await?;
        self.log.release(n);
        Ok(())
    }
}

impl Hands for NodeHands {
    fn take(&self, n: u32, epoch: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let r = self.taking(n, epoch).await;
            if r.is_err() {
                // Nothing more appended: the lease goes back.
                self.log.release(n);
            } else {
                let m = self.log.cluster().metrics();
                m.takeovers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                m.epoch
                    .fetch_max(epoch, std::sync::atomic::Ordering::Relaxed);
                m.epochs.lock().insert(n, epoch);
            }
            self.count_owned();
            r
        })
    }

    fn give(&self, n: u32) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let r = self.giving(n).await;
            if r.is_ok() {
                self.log.cluster().metrics().epochs.lock().remove(&n);
            }
            self.count_owned();
            r
        })
    }
}

/// A node sharing the partitions, ready before its engine starts: what the engine is
/// given (the log, snapshots, pools and router), and what starts the loop after.
pub struct Prepared {
    /// The engine's log and what comes with it.
    pub provided: Option<hunt_server::service::ProvidedLog>,
    /// The partitions it applies at the start (none) and where the rest go.
    pub routing: Option<hunt_server::route::Spread>,
    pub partitions: u32,
    pub log: hunt_cluster::JetStreamLog,
    snapshots: Arc<hunt_cluster::ObjectSnapshots>,
    escrow: Arc<super::cluster_node::NodeEscrow>,
    client: async_nats::Client,
    subjects: super::cluster_route::Subjects,
    node: String,
    leases: Leases,
    members: Members,
    lease: Duration,
    tenure: Arc<Tenure>,
    live: watch::Sender<BTreeSet<String>>,
}

/// Prepares `joined` to share the partitions (`hunt serve --cluster --spread`).
pub async fn prepare(joined: super::cluster_node::Joined) -> anyhow::Result<Prepared> {
    use super::cluster_node::{ESCROW_BLOCK_MAX, NodeEscrow};
    let super::cluster_node::Joined {
        cluster,
        leases,
        members,
        node,
        lease,
        replicas,
    } = joined;
    let rt = tokio::runtime::Handle::current();
    let snapshots =
        Arc::new(hunt_cluster::ObjectSnapshots::open(&cluster, replicas, rt.clone()).await?);
    let escrow = Arc::new(NodeEscrow::new(
        hunt_cluster::Escrow::open(&cluster, replicas, ESCROW_BLOCK_MAX).await?,
        0,
    ));
    let log = hunt_cluster::JetStreamLog::new(cluster.clone(), rt);
    let client = cluster.client();
    let subjects = super::cluster_route::Subjects::of(cluster.name());
    let (live, live_rx) = watch::channel(BTreeSet::new());
    let router = super::cluster_route::NatsRouter::new(
        client.clone(),
        subjects.clone(),
        node.clone(),
        live_rx,
    );
    let tenure = Arc::new(Tenure::default());
    let metrics = cluster.metrics().clone();
    *metrics.node.lock() = node.clone();
    metrics.partitions.store(
        u64::from(cluster.partitions()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let provided = hunt_server::service::ProvidedLog {
        log: Arc::new(log.clone()),
        name: format!(
            "JetStream stream {}, partitions spread over the live nodes",
            cluster.stream()
        ),
        snapshots: Some(snapshots.clone()),
        part_snapshots: Some(snapshots.clone()),
        tenure: Some(tenure.clone()),
        metrics: Some(Arc::new(super::cluster_node::NodeMetrics {
            cluster: metrics.clone(),
            tenure: tenure.clone(),
        })),
        escrow: Some(escrow.clone()),
        escrow_grants: metrics.escrow_grants.clone(),
        cluster_view: Some(Arc::new(super::cluster::NodeView(cluster.clone()))),
    };
    Ok(Prepared {
        provided: Some(provided),
        routing: Some(hunt_server::route::Spread {
            owned: BTreeSet::new(),
            router: Arc::new(router),
        }),
        partitions: cluster.partitions(),
        log,
        snapshots,
        escrow,
        client,
        subjects,
        node,
        leases,
        members,
        lease,
        tenure,
        live,
    })
}

impl Prepared {
    /// Once `service` runs: answers other nodes' requests for it, and starts the loop
    /// that takes and gives its partitions.
    pub async fn start(
        self,
        service: &Arc<hunt_server::service::Service>,
        draining: watch::Receiver<bool>,
    ) -> anyhow::Result<Spread> {
        let responder = super::cluster_route::Responder::start(
            self.client,
            self.subjects,
            self.node.clone(),
            service,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let log_metrics = self.log.cluster().metrics().clone();
        let hands = Arc::new(NodeHands {
            node: self.node.clone(),
            service: Arc::downgrade(service),
            log: self.log,
            snapshots: self.snapshots,
            responder: Arc::new(responder),
            escrow: self.escrow,
        });
        Ok(Spread::start(
            self.leases,
            self.members,
            Settings {
                metrics: log_metrics,
                ..Settings::new(self.node, self.partitions, self.lease)
            },
            hands,
            draining,
            self.tenure,
            self.live,
        ))
    }
}

#[cfg(test)]
mod tests {
    //! Three nodes' loops in one process, on one `nats-server`, with hands that only
    //! keep a book of who applies which partition: a partition is never taken while
    //! another node still applies it, every partition ends with the node the
    //! assignment names, and a join, a drain and a death move only what they must.

    use super::*;
    use hunt_cluster::testing::NatsCluster;
    use hunt_cluster::{Cluster, ClusterConfig, Member};

    const PARTITIONS: u32 = 16;
    const LEASE: Duration = Duration::from_millis(1200);

    /// Who applies each partition now, and what went wrong.
    #[derive(Default)]
    struct Book {
        applies: BTreeMap<u32, String>,
        takes: u64,
        gives: u64,
        wrong: Vec<String>,
    }

    struct Kept {
        node: String,
        book: Arc<parking_lot::Mutex<Book>>,
    }

    impl Hands for Kept {
        fn take(&self, n: u32, _epoch: u64) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                // A take does some work, as a rebuild would.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut b = self.book.lock();
                if let Some(other) = b.applies.get(&n) {
                    let why = format!("{} took {n} while {other} applied it", self.node);
                    b.wrong.push(why);
                }
                b.applies.insert(n, self.node.clone());
                b.takes += 1;
                Ok(())
            })
        }

        fn give(&self, n: u32) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut b = self.book.lock();
                if b.applies.get(&n) != Some(&self.node) {
                    let why = format!("{} gave {n}, which it did not apply", self.node);
                    b.wrong.push(why);
                }
                b.applies.remove(&n);
                b.gives += 1;
                Ok(())
            })
        }
    }

    /// One node: its heartbeat and its loop.
    struct Node {
        id: String,
        spread: Spread,
        tenure: Arc<Tenure>,
        beat: tokio::task::JoinHandle<()>,
        draining: watch::Sender<bool>,
        members: Members,
    }

    /// `id`'s heartbeat in the members bucket, every third of `lease`, draining as
    /// `draining` says.
    pub(super) fn beating(
        members: &Members,
        id: &str,
        draining: watch::Receiver<bool>,
        lease: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (members, id) = (members.clone(), id.to_string());
        tokio::spawn(async move {
            loop {
                let me = Member {
                    node: id.clone(),
                    http: String::new(),
                    owned: Vec::new(),
                    positions: Default::default(),
                    draining: *draining.borrow(),
                    beat_at_ms: 0,
                };
                let _ = members.beat(&me).await;
                tokio::time::sleep(lease / 3).await;
            }
        })
    }

    async fn node(cluster: &Cluster, id: &str, book: &Arc<parking_lot::Mutex<Book>>) -> Node {
        let leases = Leases::open(cluster, id.to_string(), 1).await.unwrap();
        let members = Members::open(cluster, 1).await.unwrap();
        let (draining, drain_rx) = watch::channel(false);
        let beat = beating(&members, id, drain_rx.clone(), LEASE);
        let hands = Arc::new(Kept {
            node: id.to_string(),
            book: book.clone(),
        });
        let tenure = Arc::new(Tenure::default());
        let spread = Spread::start(
            leases,
            members.clone(),
            Settings::new(id, PARTITIONS, LEASE),
            hands,
            drain_rx,
            tenure.clone(),
            watch::channel(BTreeSet::new()).0,
        );
        Node {
            id: id.to_string(),
            spread,
            tenure,
            beat,
            draining,
            members,
        }
    }

    /// The assignment over `nodes`.
    fn assigned(nodes: &[&str]) -> BTreeMap<u32, String> {
        (0..PARTITIONS)
            .map(|p| (p, assign::owner(p, nodes).unwrap().to_string()))
            .collect()
    }

    /// Waits (at most 30 s) until the book says what `want` says, and each node's
    /// view holds its part of it.
    async fn settled(
        book: &Arc<parking_lot::Mutex<Book>>,
        nodes: &[&Node],
        want: &BTreeMap<u32, String>,
    ) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let (booked, wrong) = {
                let b = book.lock();
                (b.applies.clone(), b.wrong.clone())
            };
            assert!(wrong.is_empty(), "{wrong:?}");
            let views_agree = nodes.iter().all(|n| {
                let mine: BTreeSet<u32> = want
                    .iter()
                    .filter(|(_, o)| **o == n.id)
                    .map(|(p, _)| *p)
                    .collect();
                n.spread.view().borrow().held == mine
            });
            if &booked == want && views_agree {
                return;
            }
            assert!(
                Instant::now() < until,
                "not settled: the book has {booked:?}, the assignment says {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_follow_the_assignment_through_a_join_a_drain_a_stop_and_a_death() {
        let nats = NatsCluster::start(1, false);
        let mut cfg = ClusterConfig::new(nats.urls(), "spread");
        cfg.monitor = nats.monitor_urls();
        cfg.partitions = Some(PARTITIONS);
        cfg.replicas = 1;
        let cluster = Cluster::connect(&cfg).await.expect("the cluster");
        let book = Arc::new(parking_lot::Mutex::new(Book::default()));

        // Two nodes share the partitions as the assignment says.
        let a = node(&cluster, "a", &book).await;
        let b = node(&cluster, "b", &book).await;
        let two = assigned(&["a", "b"]);
        settled(&book, &[&a, &b], &two).await;
        assert!(b.tenure.valid_at(Stamp::now()), "b's leases are confirmed");
        let takes = book.lock().takes;
        assert_eq!(takes, u64::from(PARTITIONS), "each partition taken once");

        // A third joins: only the partitions it wins move, each given before taken.
        let c = node(&cluster, "c", &book).await;
        let three = assigned(&["a", "b", "c"]);
        settled(&book, &[&a, &b, &c], &three).await;
        let to_c = three.values().filter(|o| *o == "c").count() as u64;
        assert!(to_c > 0, "c wins some of {PARTITIONS} partitions");
        for (p, o) in &three {
            assert!(
                o == "c" || two[p] == *o,
                "partition {p} moved from {} to {o}",
                two[p]
            );
        }
        {
            let bk = book.lock();
            assert_eq!(
                bk.takes,
                u64::from(PARTITIONS) + to_c,
                "only c's partitions moved"
            );
            assert_eq!(bk.gives, to_c);
        }

        // a drains: it gives everything away and takes nothing.
        a.draining.send_replace(true);
        let bc = assigned(&["b", "c"]);
        settled(&book, &[&a, &b, &c], &bc).await;

        // a stops (its key gone first, as `hunt serve` does), holding nothing.
        a.beat.abort();
        a.members.leave("a").await.unwrap();
        a.spread.stop(Duration::from_secs(5)).await;

        // c stops gracefully: b takes its partitions as soon as they are released.
        c.beat.abort();
        c.members.leave("c").await.unwrap();
        let c_had = c.spread.view().borrow().held.clone();
        c.spread.stop(Duration::from_secs(5)).await;
        let one = assigned(&["b"]);
        settled(&book, &[&b], &one).await;
        assert!(!c_had.is_empty());

        // A node that dies gives nothing back: its partitions are taken once its
        // leases lapse, by the node that the assignment names.
        let d = node(&cluster, "d", &book).await;
        let bd = assigned(&["b", "d"]);
        settled(&book, &[&b, &d], &bd).await;
        let d_had = d.spread.view().borrow().held.clone();
        d.beat.abort();
        d.spread.kill();
        {
            // The process is gone, and with it its applying.
            let mut bk = book.lock();
            bk.applies.retain(|_, o| o != "d");
        }
        settled(&book, &[&b], &one).await;
        assert!(!d_had.is_empty());

        let wrong = book.lock().wrong.clone();
        assert!(wrong.is_empty(), "{wrong:?}");
        b.spread.stop(Duration::from_secs(5)).await;
        assert!(
            book.lock().applies.is_empty(),
            "a graceful stop gives everything back"
        );
    }
}

#[cfg(test)]
mod engines {
    //! Two engines in one process on one `nats-server`, each with its own loop and
    //! the real hands: partitions move between them as one joins and the other leaves,
    //! while customers keep sending events to both. Every event sent is answered once
    //! (a refusal for a retry records nothing), sent again it is a duplicate with its
    //! first answer on either node, and no code is granted twice.

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use hunt_cluster::testing::NatsCluster;
    use hunt_cluster::{
        Cluster, ClusterConfig, Escrow, JetStreamLog, Leases, Members, ObjectSnapshots,
    };
    use hunt_server::route::Spread as Routing;
    use hunt_server::service::{EngineConfig, ProvidedLog};
    use hunt_server::tenure::Tenure;
    use serde_json::{Value, json};
    use tokio::sync::watch;

    use super::{NodeHands, Settings, Spread, View};
    use crate::cmd::cluster_node::{ESCROW_BLOCK_MAX, NodeEscrow};
    use crate::cmd::cluster_route::tests::{Node, PARTITIONS, ev, two_steps};
    use crate::cmd::cluster_route::{NatsRouter, Responder, Subjects};

    const LEASE: Duration = Duration::from_millis(1500);
    /// Events refused for a retry (their partition moving, most of them).
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    struct Engine {
        id: String,
        node: Node,
        spread: parking_lot::Mutex<Option<Spread>>,
        beat: tokio::task::JoinHandle<()>,
        members: Members,
    }

    impl Engine {
        async fn start(urls: &[String], cluster: &Cluster, id: &str, hunts: &str) -> Engine {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let client = async_nats::connect(urls.to_vec()).await.expect("NATS");
            let subjects = Subjects::of(cluster.name());
            let (live_tx, live) = watch::channel(BTreeSet::new());
            let router = NatsRouter::new(client.clone(), subjects.clone(), id, live);
            let log = JetStreamLog::new(cluster.clone(), tokio::runtime::Handle::current());
            let snapshots = Arc::new(
                ObjectSnapshots::open(cluster, 1, tokio::runtime::Handle::current())
                    .await
                    .expect("the snapshot store"),
            );
            let escrow = Arc::new(NodeEscrow::new(
                Escrow::open(cluster, 1, ESCROW_BLOCK_MAX)
                    .await
                    .expect("the pools bucket"),
                0,
            ));
            let tenure = Arc::new(Tenure::default());
            let mut engine = EngineConfig::new(dir.path());
            engine.partitions = PARTITIONS;
            engine.spread = Some(Routing {
                owned: BTreeSet::new(),
                router: Arc::new(router),
            });
            engine.provided_log = Some(ProvidedLog {
                log: Arc::new(log.clone()),
                name: "a JetStream stream".into(),
                snapshots: Some(snapshots.clone()),
                part_snapshots: Some(snapshots.clone()),
                tenure: Some(tenure.clone()),
                metrics: None,
                escrow: Some(escrow.clone()),
                escrow_grants: Default::default(),
                cluster_view: None,
            });
            let node = Node::start_on(hunts, dir, engine).await;
            let responder = Responder::start(client, subjects, id, &node.service())
                .await
                .expect("the responder");
            let hands = Arc::new(NodeHands {
                node: id.to_string(),
                service: Arc::downgrade(&node.service()),
                log,
                snapshots,
                responder: Arc::new(responder),
                escrow,
            });
            let leases = Leases::open(cluster, id.to_string(), 1).await.unwrap();
            let members = Members::open(cluster, 1).await.unwrap();
            let beat = super::tests::beating(&members, id, watch::channel(false).1, LEASE);
            let spread = Spread::start(
                leases,
                members.clone(),
                Settings::new(id, PARTITIONS as u32, LEASE),
                hands,
                watch::channel(false).1,
                tenure,
                live_tx,
            );
            Engine {
                id: id.to_string(),
                node,
                spread: parking_lot::Mutex::new(Some(spread)),
                beat,
                members,
            }
        }

        fn view(&self) -> View {
            let spread = self.spread.lock();
            let view = spread.as_ref().expect("running").view();
            view.borrow().clone()
        }

        /// Leaves gracefully: its key goes, then every partition it holds.
        async fn leave(&self) {
            self.beat.abort();
            self.members.leave(&self.id).await.unwrap();
            let spread = self.spread.lock().take();
            if let Some(s) = spread {
                s.stop(Duration::from_secs(30)).await;
            }
        }
    }

    /// One `nats-server` and a cluster of PARTITIONS on it, named `name`.
    async fn one_server(name: &str) -> (NatsCluster, Cluster) {
        let nats = NatsCluster::start(1, false);
        let mut cfg = ClusterConfig::new(nats.urls(), name);
        cfg.monitor = nats.monitor_urls();
        cfg.partitions = Some(PARTITIONS as u32);
        cfg.replicas = 1;
        let cluster = Cluster::connect(&cfg).await.expect("the cluster");
        (nats, cluster)
    }

    /// An id that wins half the partitions beside `a`, so that moves are many.
    fn half_of_a() -> String {
        (0..)
            .map(|k| format!("b{k}"))
            .find(|b| {
                let won = (0..PARTITIONS as u32)
                    .filter(|p| hunt_cluster::assign::owner(*p, &["a", b]) == Some(b.as_str()))
                    .count();
                won == PARTITIONS / 2
            })
            .unwrap()
    }

    /// Waits (at most 60 s) until every partition is held by the node the assignment
    /// over `ids` names, each by one node.
    async fn settled(engines: &[&Engine], ids: &[&str]) {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ok = engines.iter().all(|e| {
                let mine: BTreeSet<u32> = (0..PARTITIONS as u32)
                    .filter(|p| hunt_cluster::assign::owner(*p, ids) == Some(e.id.as_str()))
                    .collect();
                e.view().held == mine
            });
            if ok {
                return;
            }
            let views: Vec<View> = engines.iter().map(|e| e.view()).collect();
            assert!(
                tokio::time::Instant::now() < until,
                "not settled: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `e` to `node` until it is taken: an event refused for a retry (its
    /// partition moving, the pools or a version not ready) is sent again.
    async fn taken(node: &Node, e: &Value) -> Value {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, a, _) = node.post(json!([e])).await;
            let r = &a["results"][0];
            let retry = matches!(
                r["code"].as_str(),
                Some("moving" | "pools_unavailable" | "switching")
            );
            if status == 200 && !retry {
                assert!(
                    r["status"] == "accepted" || r["status"] == "duplicate",
                    "{a}"
                );
                return r.clone();
            }
            assert!(
                status == 503 || retry,
                "neither taken nor refused for a retry: {status} {a}"
            );
            REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(tokio::time::Instant::now() < until, "never taken: {e} {a}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `PUT /v1/config` of `hunts` on `node`: the status and the answer.
    async fn put(node: &Node, hunts: &str) -> (u16, Value) {
        let request = axum::http::Request::put("/v1/config?name=hunts.yaml")
            .header(axum::http::header::CONTENT_TYPE, "application/yaml")
            .body(axum::body::Body::from(hunts.to_string()))
            .unwrap();
        let (status, v, _) = node.call(request).await;
        (status, v)
    }

    /// Each customer's look and buy, in order, in 4 lanes over both nodes.
    async fn customers(nodes: &[&Node], from: usize, to: usize) -> BTreeMap<String, Value> {
        let lanes = (0..4).map(|lane| async move {
            let mut answers = BTreeMap::new();
            for k in (from..to).skip(lane).step_by(4) {
                let u = format!("u{k}");
                let node = nodes[k % nodes.len()];
                for e in [
                    ev(&format!("{u}-look"), &u, "product_view", json!({})),
                    ev(&format!("{u}-buy"), &u, "purchase", json!({"price": 20})),
                ] {
                    let r = taken(node, &e).await;
                    // Taken the first time it was answered: a retry of a refusal is
                    // the event's first answer, never a duplicate.
                    assert_eq!(r["status"], "accepted", "{e}: {r}");
                    answers.insert(e["id"].as_str().unwrap().to_string(), r);
                }
            }
            answers
        });
        futures_util::future::join_all(lanes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_move_between_engines_as_one_joins_and_one_leaves_and_every_answer_holds() {
        // The nodes' warnings, shown when the test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,hunt=info")
            .with_test_writer()
            .try_init();
        let (nats, cluster) = one_server("engines").await;
        let (codes, customers_n) = (30u64, 48usize);
        let hunts = two_steps(codes, codes);

        let a = Engine::start(&nats.urls(), &cluster, "a", &hunts).await;
        settled(&[&a], &["a"]).await;
        let mut answers = customers(&[&a.node], 0, 16).await;

        // b joins while customers send to both: the partitions b wins move. Its id is
        // one that wins half of them, so that the moves are many.
        let b_id = half_of_a();
        let b = Engine::start(&nats.urls(), &cluster, &b_id, &hunts).await;
        let both = [&a.node, &b.node];
        let (during, ()) = tokio::join!(customers(&both, 16, 32), async {
            settled(&[&a, &b], &["a", &b_id]).await;
        });
        answers.extend(during);
        let b_won = b.view().held.len();
        assert_eq!(b_won, PARTITIONS / 2);

        // A new version put on the node that did not start the cluster: recorded
        // after the node records' end, in force on every partition of both.
        let (status, v) = put(&b.node, &two_steps(codes, codes + 5)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["version"], 2, "{v}");
        assert_eq!(v["partitions_pending"], json!([]), "{v}");
        // Two versions put at once on the two nodes: one is recorded as version 3,
        // the other is refused for a retry (nothing changed) or, had it come after,
        // recorded as version 4; never two versions of one number.
        let (fx, fy) = (two_steps(codes, codes + 6), two_steps(codes, codes + 7));
        let (x, y) = tokio::join!(put(&a.node, &fx), put(&b.node, &fy));
        let mut numbers = Vec::new();
        for (status, v) in [&x, &y] {
            match status {
                200 => numbers.push(v["version"].as_u64().unwrap()),
                409 => assert_eq!(v["error"]["code"], "version_raced", "{v}"),
                _ => panic!("{status} {v}"),
            }
        }
        numbers.sort_unstable();
        assert!(numbers == [3] || numbers == [3, 4], "{x:?} {y:?}");
        let newest = *numbers.last().unwrap();
        for e in [&a, &b] {
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            while e.node.service().version().record.version != newest {
                assert!(
                    tokio::time::Instant::now() < until,
                    "{} never put {newest} in force",
                    e.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        eprintln!("racing versions: {} and {}", x.0, y.0);

        // a leaves gracefully while customers still send to both: b takes everything.
        let (during, ()) = tokio::join!(customers(&both, 32, customers_n), async {
            a.leave().await;
            settled(&[&b], &[&b_id]).await;
        });
        answers.extend(during);
        assert_eq!(answers.len(), customers_n * 2);

        // Every event again, to either node: a duplicate with its first answer.
        let mut codes_won = BTreeSet::new();
        for (i, (id, first)) in answers.iter().enumerate() {
            let k: usize = id[1..id.find('-').unwrap()].parse().unwrap();
            let u = format!("u{k}");
            let e = if id.ends_with("-look") {
                ev(id, &u, "product_view", json!({}))
            } else {
                ev(id, &u, "purchase", json!({"price": 20}))
            };
            let node = if i % 2 == 0 { &a.node } else { &b.node };
            let again = taken(node, &e).await;
            assert_eq!(again["status"], "duplicate", "{id}: {again}");
            assert_eq!(
                again["outcomes"], first["outcomes"],
                "{id}: a duplicate gets the first answer"
            );
            for o in first["outcomes"].as_array().into_iter().flatten() {
                if let Some(code) = o["code"].as_str() {
                    assert!(codes_won.insert(code.to_string()), "{code} granted twice");
                }
            }
        }
        assert!(
            codes_won.len() as u64 <= codes,
            "{} codes of {codes}",
            codes_won.len()
        );
        eprintln!(
            "{} codes granted of {codes}; b won {b_won} of {PARTITIONS} partitions; {} refusals for a retry",
            codes_won.len(),
            REFUSED.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(a.node.service().fatal().borrow().is_none());
        assert!(b.node.service().fatal().borrow().is_none());
        // a gone for good: b, which holds every partition, counts every code granted,
        // a's grants included, in the pools' remaining (on /v1/pools, and on /metrics
        // once gathered).
        let Engine { node: gone, .. } = a;
        gone.running.kill().await;
        let (status, pools) = b.node.get("/v1/pools").await;
        assert_eq!(status, 200, "{pools}");
        let left = codes - codes_won.len() as u64;
        assert_eq!(pools["pools"][0]["remaining"], left, "{pools}");
        assert_eq!(
            b.node.service().pools()[0].2,
            left,
            "the pools /metrics and the alerts read"
        );
    }

    /// The dead letters of both nodes, listed, shown, dropped and retried from either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_letters_of_both_nodes_are_listed_shown_dropped_and_retried_from_either() {
        let (nats, cluster) = one_server("dlq").await;
        // A sink nobody listens on, tried once and never paused by its breaker: every
        // delivery is a dead letter at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sink = format!(
            "sinks:\n  - id: crm\n    url: \"http://127.0.0.1:{port}/hook\"\n    max_attempts: 1\n    breaker_failures: 1000\nhunts:\n"
        );
        let hunts = two_steps(100, 100).replace("hunts:\n", &sink) + "    notify: [crm]\n";
        let a = Engine::start(&nats.urls(), &cluster, "a", &hunts).await;
        settled(&[&a], &["a"]).await;
        let b_id = half_of_a();
        let b = Engine::start(&nats.urls(), &cluster, &b_id, &hunts).await;
        settled(&[&a, &b], &["a", &b_id]).await;
        // Customers of both nodes' partitions win, all sent to a.
        for k in 0..16 {
            let u = format!("d{k}");
            for e in [
                ev(&format!("{u}-look"), &u, "product_view", json!({})),
                ev(&format!("{u}-buy"), &u, "purchase", json!({"price": 20})),
            ] {
                taken(&a.node, &e).await;
            }
        }
        // Listed from either node: both nodes' dead letters, the same list.
        let own = |e: &Engine| {
            e.node
                .service()
                .notifier
                .dead_letters(&Default::default(), 1000)
                .1 as u64
        };
        let total = |v: &Value| v["total"].as_u64().unwrap_or(0);
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let (mut last, mut same) = (0, 0);
        let want = loop {
            let (_, la) = a.node.get("/v1/dlq?limit=1000").await;
            let n = total(&la);
            same = if n == last && n > 0 { same + 1 } else { 0 };
            last = n;
            if same >= 5 && n == own(&a) + own(&b) {
                break n;
            }
            assert!(tokio::time::Instant::now() < until, "{la}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            own(&a) > 0 && own(&b) > 0,
            "both nodes hold some of the {want}"
        );
        let (_, la) = a.node.get("/v1/dlq?limit=1000").await;
        let (_, lb) = b.node.get("/v1/dlq?limit=1000").await;
        assert_eq!(la["entries"], lb["entries"]);
        assert_eq!(la["entries"].as_array().unwrap().len() as u64, want);
        assert!(la.get("partial").is_none(), "{la}");
        // The overview's sink and the dead-letters alert count every node's.
        for e in [&a, &b] {
            let (s, o) = e.node.get("/v1/overview").await;
            assert_eq!(s, 200, "{o}");
            let crm = o["sinks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["sink"] == "crm");
            assert_eq!(crm.map(|s| &s["dead_letters"]), Some(&json!(want)), "{o}");
            assert_eq!(
                e.node.service().dead_letter_count("crm"),
                want,
                "asked of {}",
                e.id
            );
        }
        // One of b's, shown and dropped through a.
        let theirs = b
            .node
            .service()
            .notifier
            .dead_letters(&Default::default(), 1)
            .0
            .pop()
            .expect("b has dead letters");
        let (s, shown) = a.node.get(&format!("/v1/dlq/{}", theirs.key)).await;
        assert_eq!(s, 200, "{shown}");
        assert_eq!(shown["id"], theirs.key.as_str());
        assert!(
            shown["event"].is_object(),
            "the CloudEvent comes with it: {shown}"
        );
        let post = |path: &str, body: Value| {
            axum::http::Request::post(path)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap()
        };
        let (s, dropped, _) = a
            .node
            .call(post("/v1/dlq/drop", json!({"id": theirs.key})))
            .await;
        assert_eq!((s, &dropped["dropped"]), (200, &json!(1)), "{dropped}");
        assert_eq!(own(&b), want - own(&a) - 1);
        let (_, lb) = b.node.get("/v1/dlq?limit=1000").await;
        assert_eq!(total(&lb), want - 1, "{lb}");
        // Every other one retried through b, whichever node holds it.
        let (s, retried, _) = b
            .node
            .call(post("/v1/dlq/retry", json!({"all": true})))
            .await;
        assert_eq!(
            (s, &retried["retried"]),
            (200, &json!(want - 1)),
            "{retried}"
        );
        // A node joining rebuilds the whole log, every partition's deliveries with it,
        // but holds (and would send, and append the states of) only those of the
        // partitions it takes: the others' are their owners'.
        let c_id = "c";
        let c = Engine::start(&nats.urls(), &cluster, c_id, &hunts).await;
        for _ in 0..3 {
            let (entries, _, _) = c
                .node
                .service()
                .notifier
                .copy_for_snapshot(PARTITIONS)
                .await;
            let held = c.view().held;
            let strays: Vec<u32> = entries
                .iter()
                .map(|e| e.partition)
                .filter(|p| !held.contains(p))
                .collect();
            assert!(
                strays.is_empty(),
                "c holds deliveries of partitions it does not hold: {strays:?} (holds {held:?})"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        settled(&[&a, &b, &c], &["a", &b_id, c_id]).await;
    }

    /// A new hunts file's plan, asked of either node, counts every node's customers,
    /// and a pool that would take back a code held on the other node is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plan_counts_and_checks_the_customers_of_every_node() {
        let (nats, cluster) = one_server("plan").await;
        let hunts = two_steps(30, 30);
        let a = Engine::start(&nats.urls(), &cluster, "a", &hunts).await;
        settled(&[&a], &["a"]).await;
        let b_id = half_of_a();
        let b = Engine::start(&nats.urls(), &cluster, &b_id, &hunts).await;
        settled(&[&a, &b], &["a", &b_id]).await;
        let b_holds = b.view().held;
        // 16 customers look; those of b's partitions also buy, and win codes.
        let mut winners = 0;
        for k in 0..16 {
            let u = format!("p{k}");
            taken(
                &a.node,
                &ev(&format!("{u}-look"), &u, "product_view", json!({})),
            )
            .await;
            let p = hunt_server::state::partition_of(&u, PARTITIONS) as u32;
            if b_holds.contains(&p) {
                taken(
                    &a.node,
                    &ev(&format!("{u}-buy"), &u, "purchase", json!({"price": 20})),
                )
                .await;
                winners += 1;
            }
        }
        assert!(winners >= 2, "{winners} winners on b");
        // The dry run, asked of either node, looks at all 16 customers.
        for e in [&a, &b] {
            let request = axum::http::Request::put("/v1/config?name=hunts.yaml&dry_run=true")
                .header(axum::http::header::CONTENT_TYPE, "application/yaml")
                .body(axum::body::Body::from(two_steps(30, 31)))
                .unwrap();
            let (s, v, _) = e.node.call(request).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["customers"], 16, "asked of {}: {v}", e.id);
        }
        // A pool of one code would take back the codes b's customers hold: refused,
        // even asked of a, whose own customers hold none.
        let (s, v) = put(&a.node, &two_steps(1, 30)).await;
        assert_eq!(s, 409, "{v}");
        assert_eq!(v["error"]["code"], "unsafe_change", "{v}");
    }
}
