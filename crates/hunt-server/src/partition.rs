//! A partition worker: one task that owns its customers' state and handles their
//! events one at a time, in arrival order, with no lock shared with other partitions.
//!
//! Per round it takes whatever messages are queued, applies the events, and appends
//! all their records to the log in one submission; the answers carry the log's ticket,
//! and the HTTP handler waits on it, so the worker never waits for a sync and a
//! request is answered only once its records are durable. A customer's later events
//! get later LSNs, and the log makes records durable in LSN order, so nothing is ever
//! answered on top of an event that could still be lost.

use std::sync::Arc;

use hunt_core::engine::{Event, HuntView, UserState};
use hunt_core::time::Timestamp;
use hunt_store::{LogError, PartitionLog, Ticket};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::backlog::Backlog;
use crate::notify::cloudevent::{Origin, notifies};
use crate::notify::deliver::{Dispatch, DispatchHandle, Round};
use crate::records::{KIND_EVENT, encode_event};
use crate::state::{
    Admission, Answer, HuntCounters, PartitionCopy, PartitionState, Version, Winner,
};

/// The most messages one round takes (bounds the latency a round adds).
const ROUND_MESSAGES_MAX: usize = 256;

/// What an event came to.
#[derive(Debug, Clone)]
pub enum Status {
    Accepted(Answer),
    Duplicate(Answer),
    /// The dedupe window is full of unexpired events: not applied, retry later.
    WindowFull,
    /// Applying it panicked (a bug): nothing of it was recorded, and the customer's
    /// state is what it was.
    Internal(String),
    /// On a cluster, the escrow of the codes it needed could not be reached: nothing
    /// of it was recorded; retry later.
    Unavailable(String),
    /// On a cluster whose partitions are spread over nodes, its partition's owner could
    /// not take it (no owner answering, the partition moving, or no answer in time):
    /// retry later; an event the owner did apply is then answered as a duplicate.
    Moving(String),
}

/// Events of one request for this partition: `(index in the request, event)`.
pub struct Batch {
    pub items: Vec<(usize, Event)>,
    pub reply: oneshot::Sender<Result<BatchAnswer, LogError>>,
}

pub struct BatchAnswer {
    /// `(index in the request, event id, status)`.
    pub statuses: Vec<(usize, String, Status)>,
    /// Resolves once every record behind these answers is durable.
    pub ticket: Option<Ticket>,
}

/// A customer as the queries show them (and as their owner sends them to another
/// node, on a cluster whose partitions are spread over nodes).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct UserView {
    pub user: String,
    #[serde(flatten)]
    pub state: UserState,
}

/// Grants held by a partition's customers: (hunt, pool, code).
pub type Grants = Vec<(String, String, String)>;

/// What a paused partition hands the coordinator.
pub struct Paused {
    /// Grants held by its customers: (hunt, pool, code), from which a version switch
    /// rebuilds the pools.
    pub grants: Grants,
}

/// A partition's state for a snapshot, and how far into the log it reaches.
pub struct Copied {
    pub state: PartitionCopy,
    /// Its last submission: the state holds every record of it.
    pub ticket: Option<Ticket>,
    /// The log's durable position when it was taken: the partition's later records
    /// all come after it. The state holds this partition's records up to the greater
    /// of this and the ticket's last position, and none after.
    pub durable: hunt_store::Lsn,
    /// How long taking it held the partition (its round flushed before, not counted).
    pub took: std::time::Duration,
    /// The version the partition applies.
    pub version: u64,
}

/// A partition's figures per hunt, and the first winners of one hunt with their count.
/// A partition's figures per hunt, the asked hunt's first winners and how many it has,
/// and the codes its customers hold per pool id.
pub type PartitionStats = (
    Vec<(Arc<str>, HuntCounters)>,
    Vec<Winner>,
    u64,
    Vec<(Arc<str>, u64)>,
);

pub enum Msg {
    Events(Batch),
    User {
        user: String,
        /// Also the hunts the customer may see at this time.
        hunts_at: Option<Timestamp>,
        reply: oneshot::Sender<(Option<UserView>, Vec<HuntView>, Option<Ticket>)>,
    },
    Stats {
        /// Also the first `limit` winners of this hunt, in grant order.
        winners_of: Option<(Arc<str>, usize)>,
        reply: oneshot::Sender<PartitionStats>,
    },
    /// The last completions' times of a hunt, in ms (`state/completion.rs`).
    CompletionTimes {
        hunt: Arc<str>,
        reply: oneshot::Sender<Vec<i64>>,
    },
    /// Count the customers each change of a new version touches, and hand over the
    /// grants its pools must hold (a dry run of a version switch).
    Plan {
        new: Arc<hunt_core::catalog::Catalog>,
        plan: hunt_core::plan::Plan,
        reply: oneshot::Sender<Result<(hunt_core::plan::Plan, Grants), String>>,
    },
    /// Stop between rounds, hand over what the coordinator needs, and wait for the
    /// version to go on with (a version switch).
    Pause {
        reply: oneshot::Sender<Paused>,
        resume: oneshot::Receiver<Arc<Version>>,
    },
    /// Between rounds, hand over the state for a snapshot and go straight on: the
    /// copy shares what it can (see [`PartitionState::copy_for_snapshot`]).
    Snapshot {
        reply: oneshot::Sender<Copied>,
    },
    /// On a cluster: another partition found the escrow account `key` empty; give back
    /// what this one holds of it unused.
    GiveBack {
        key: String,
    },
    /// Put `version` in force here, between two rounds, by a marker in this
    /// partition's log (ADR 0015): seed the version's new accounts with what this
    /// partition's customers hold, write the marker, and apply every later event with
    /// it. The reply comes once the marker is durable (at once if the version is in
    /// force already).
    Switch {
        version: Arc<Version>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The version it applies.
    InForce {
        reply: oneshot::Sender<u64>,
    },
    /// Give the partition up (a hand-off, ADR 0015): answer the rounds so far, and
    /// reply once they are durable, so that the next owner reads them.
    Leave {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Take the partition over with the state a rebuild gave and the version it
    /// applies; its escrow blocks are claimed again at its first grant.
    Adopt {
        state: Box<PartitionState>,
        version: Arc<Version>,
        reply: oneshot::Sender<()>,
    },
}

/// Every partition's queue, for a partition to ask the others to give codes back,
/// and the router to ask other nodes' partitions.
#[derive(Default)]
pub struct Peers {
    local: std::sync::OnceLock<Vec<mpsc::Sender<Msg>>>,
    pub remote: Option<Arc<dyn crate::route::Router>>,
}

impl Peers {
    pub fn new(remote: Option<Arc<dyn crate::route::Router>>) -> Peers {
        Peers {
            local: std::sync::OnceLock::new(),
            remote,
        }
    }

    pub fn set(&self, senders: Vec<mpsc::Sender<Msg>>) {
        let _ = self.local.set(senders);
    }

    /// Asks every partition but `from` (this node's and, through the router, other
    /// nodes') to give back what it holds of `key`, without waiting.
    pub fn give_back(&self, from: Option<u32>, key: &str) {
        for (p, tx) in self.local.get().into_iter().flatten().enumerate() {
            if Some(p as u32) != from {
                let ask = Msg::GiveBack {
                    key: key.to_string(),
                };
                // A full queue: sent when there is room, by a task of its own, so the
                // asker never waits on a busy partition.
                if let Err(mpsc::error::TrySendError::Full(ask)) = tx.try_send(ask) {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(ask).await;
                    });
                }
            }
        }
        if from.is_some()
            && let Some(r) = &self.remote
        {
            r.give_back(key);
        }
    }
}

/// How many fetches from the escrow one event may need (each account it grants from
/// at most once, and again after a wait); past it, an account still wanted counts as
/// empty and the reward is denied.
const FETCHES_MAX: usize = 16;

/// The sending side of a partition's queue. Its events are counted in the backlog;
/// the queue holds room for all of them and for the messages that are not events.
#[derive(Clone)]
pub struct Handle {
    pub tx: mpsc::Sender<Msg>,
}

/// Room in a partition's queue beyond the backlog's events: queries, pauses and plans
/// (a sender waits for room when these fill it).
pub const QUEUE_MESSAGES_MORE: usize = 4096;

/// A partition's place: its number, the log its rounds go to, and the other
/// partitions' queues.
pub struct Seat {
    pub partition: u32,
    pub log: Arc<dyn PartitionLog>,
    pub peers: Arc<Peers>,
    /// The pools come from an escrow (a cluster): a version without its accounts
    /// attached must grant nothing, never from this process's own counters.
    pub escrow: bool,
}

pub struct Worker {
    state: PartitionState,
    version: Arc<Version>,
    seat: Seat,
    /// Events queued for this partition are counted here; the worker takes them off as
    /// it applies them.
    backlog: Arc<Backlog>,
    rx: mpsc::Receiver<Msg>,
    /// The ticket of the last submission: answers that add no record wait on it.
    last_ticket: Option<Ticket>,
    /// The last receipt time given, so receipt times never go back within a partition.
    last_received: Timestamp,
    clock: fn() -> Timestamp,
    /// Where rounds whose outcomes go to sinks are handed over, once submitted.
    notify: Option<DispatchHandle>,
    /// This round's events whose outcomes go to sinks: (record index, origin).
    notify_items: Vec<(usize, Origin)>,
    /// This round's records, submitted together.
    records: Vec<(u8, Vec<u8>)>,
    /// This round's replies, sent once its records are submitted.
    replies: Vec<Reply>,
    /// On a cluster, this partition's blocks of the escrow's accounts.
    holdings: crate::escrow::Holdings,
}

/// Replies waiting for this round's submission.
enum Reply {
    Batch(
        oneshot::Sender<Result<BatchAnswer, LogError>>,
        Vec<(usize, String, Status)>,
    ),
    User(
        oneshot::Sender<(Option<UserView>, Vec<HuntView>, Option<Ticket>)>,
        Option<UserView>,
        Vec<HuntView>,
    ),
}

impl Worker {
    /// A worker for one partition's state, taking messages from `rx`, with receipt times
    /// from `clock`, and handing rounds whose outcomes go to sinks to `notify`.
    pub fn new(
        state: PartitionState,
        version: Arc<Version>,
        seat: Seat,
        backlog: Arc<Backlog>,
        rx: mpsc::Receiver<Msg>,
        clock: fn() -> Timestamp,
        notify: Option<DispatchHandle>,
    ) -> Worker {
        Worker {
            state,
            version,
            seat,
            backlog,
            rx,
            last_ticket: None,
            last_received: Timestamp(0),
            clock,
            notify,
            notify_items: Vec::new(),
            records: Vec::new(),
            replies: Vec::new(),
            holdings: crate::escrow::Holdings::default(),
        }
    }

    /// Takes rounds of messages until every sender is gone.
    pub async fn run(mut self) {
        let mut msgs = Vec::with_capacity(ROUND_MESSAGES_MAX);
        loop {
            if self.rx.recv_many(&mut msgs, ROUND_MESSAGES_MAX).await == 0 {
                return;
            }
            let received = (self.clock)().max(self.last_received);
            self.last_received = received;
            for msg in msgs.drain(..) {
                match msg {
                    Msg::Events(batch) => self.on_events(batch, received).await,
                    Msg::User {
                        user,
                        hunts_at,
                        reply,
                    } => self.on_user(user, hunts_at, reply),
                    Msg::Stats { winners_of, reply } => self.on_stats(winners_of, reply),
                    Msg::InForce { reply } => {
                        let _ = reply.send(self.version.record.version);
                    }
                    Msg::CompletionTimes { hunt, reply } => {
                        let _ = reply.send(self.state.completion.of(&hunt));
                    }
                    Msg::Plan { new, plan, reply } => self.on_plan(&new, plan, reply),
                    Msg::Pause { reply, resume } => self.on_pause(reply, resume).await,
                    Msg::Snapshot { reply } => self.on_snapshot(reply).await,
                    Msg::GiveBack { key } => self.on_give_back(key).await,
                    Msg::Switch { version, reply } => self.on_switch(version, reply).await,
                    Msg::Leave { reply } => {
                        self.flush().await;
                        let durable = match self.last_ticket.clone() {
                            Some(t) => t.await.map(|_| ()).map_err(|e| format!("the log: {e}")),
                            None => Ok(()),
                        };
                        let _ = reply.send(durable);
                    }
                    Msg::Adopt {
                        state,
                        version,
                        reply,
                    } => {
                        self.flush().await;
                        self.state = *state;
                        self.version = version;
                        self.holdings = crate::escrow::Holdings::default();
                        self.last_ticket = None;
                        let _ = reply.send(());
                    }
                }
            }
            self.flush().await;
        }
    }

    async fn on_events(&mut self, batch: Batch, received: Timestamp) {
        let n = batch.items.len();
        let statuses = self.apply(batch.items, received).await;
        self.backlog.applied(self.seat.partition as usize, n);
        self.replies.push(Reply::Batch(batch.reply, statuses));
    }

    fn on_user(
        &mut self,
        user: String,
        hunts_at: Option<Timestamp>,
        reply: oneshot::Sender<(Option<UserView>, Vec<HuntView>, Option<Ticket>)>,
    ) {
        let state = self.state.users.get(&user);
        let hunts = match hunts_at {
            Some(now) => self.version.engine.visible_hunts(
                state.unwrap_or(&UserState::default()),
                &user,
                now,
            ),
            None => Vec::new(),
        };
        let view = state.map(|s| UserView {
            user: user.clone(),
            state: s.clone(),
        });
        self.replies.push(Reply::User(reply, view, hunts));
    }

    fn on_stats(
        &mut self,
        winners_of: Option<(Arc<str>, usize)>,
        reply: oneshot::Sender<PartitionStats>,
    ) {
        let stats = self
            .state
            .stats
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (mut first, mut total) = (Vec::new(), 0);
        if let Some((hunt, limit)) = winners_of {
            for w in self.state.winners.values().filter(|w| w.hunt == hunt) {
                total += 1;
                if first.len() < limit {
                    first.push(w.clone());
                }
            }
        }
        let held = self
            .state
            .pool_grants()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let _ = reply.send((stats, first, total, held));
    }

    fn on_plan(
        &self,
        new: &hunt_core::catalog::Catalog,
        mut plan: hunt_core::plan::Plan,
        reply: oneshot::Sender<Result<(hunt_core::plan::Plan, Grants), String>>,
    ) {
        // A bug in counting must not stop the partition.
        let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let old = self.version.catalog();
            for u in self.state.users.values() {
                plan.count(old, new, u);
            }
            (plan, self.owned_grants())
        }))
        .map_err(|_| "counting the customers of a partition panicked".to_string());
        let _ = reply.send(counted);
    }

    async fn on_pause(
        &mut self,
        reply: oneshot::Sender<Paused>,
        resume: oneshot::Receiver<Arc<Version>>,
    ) {
        self.flush().await;
        let paused = Paused {
            grants: self.owned_grants(),
        };
        let _ = reply.send(paused);
        if let Ok(v) = resume.await {
            self.version = v;
            self.holdings.version_changed();
        }
    }

    async fn on_snapshot(&mut self, reply: oneshot::Sender<Copied>) {
        // The round so far first: the copy then holds every record submitted.
        self.flush().await;
        let started = std::time::Instant::now();
        let copied = Copied {
            state: self.state.copy_for_snapshot(),
            ticket: self.last_ticket.clone(),
            durable: self.seat.log.durable(),
            took: started.elapsed(),
            version: self.version.record.version,
        };
        let _ = reply.send(copied);
    }

    async fn on_switch(
        &mut self,
        version: Arc<Version>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if self.version.record.version >= version.record.version {
            // In force here already (a switch asked again, or a start after one):
            // its marker is durable, so it no longer holds the accounts' wait back.
            let v = self.version.clone();
            let partition = self.seat.partition;
            tokio::spawn(async move {
                let marked = crate::escrow::marked(&v, partition).await;
                let _ = reply.send(marked.map_err(|e| format!("the pools: {e}")));
            });
            return;
        }
        // Every record so far goes before the marker.
        self.flush().await;
        let partition = self.seat.partition;
        // The seeds count what the customers hold: their grants must be durable
        // before the escrow counts them (as before a refill).
        if version.escrow.is_some() {
            if let Some(t) = self.last_ticket.clone()
                && let Err(e) = t.await
            {
                let _ = reply.send(Err(format!("the log: {e}")));
                return;
            }
            let grants: Vec<(&str, &str, &str)> = self.state.grants().collect();
            if let Err(e) =
                crate::escrow::seed_at_marker(&self.version, &version, partition, grants).await
            {
                let _ = reply.send(Err(format!(
                    "seeding the pools of version {}: {e}",
                    version.record.version
                )));
                return;
            }
        }
        let marker = crate::records::Marker {
            partition,
            version: version.record.version,
        };
        let record = (
            crate::records::KIND_MARKER,
            crate::records::encode_marker(&marker),
        );
        let ticket = match self.seat.log.submit(partition, vec![record]).await {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(format!("writing the marker: {e}")));
                return;
            }
        };
        self.last_ticket = Some(ticket.clone());
        self.version = version.clone();
        self.holdings.version_changed();
        // Once the marker is durable, the new accounts stop waiting for this
        // partition: it grants from them from now on (a switch that failed before the
        // marker seeds again, with what it granted meanwhile).
        tokio::spawn(async move {
            let done = match ticket.await {
                Ok(_) => crate::escrow::marked(&version, partition)
                    .await
                    .map_err(|e| format!("the pools: {e}")),
                Err(e) => Err(format!("the log: {e}")),
            };
            let _ = reply.send(done);
        });
    }

    /// Every grant this partition's customers hold.
    fn owned_grants(&self) -> Grants {
        self.state
            .grants()
            .map(|(h, p, c)| (h.to_string(), p.to_string(), c.to_string()))
            .collect()
    }

    /// Applies the events of one request; their records join the round's.
    async fn apply(
        &mut self,
        items: Vec<(usize, Event)>,
        received: Timestamp,
    ) -> Vec<(usize, String, Status)> {
        let version = self.version.clone();
        let mut statuses = Vec::with_capacity(items.len());
        if self.seat.escrow && version.escrow.is_none() {
            let why = format!(
                "partition {}: the pools of version {} are not attached",
                self.seat.partition, version.record.version
            );
            tracing::error!(error = %why, "events refused for a retry");
            for (index, event) in items {
                statuses.push((index, event.id, Status::Unavailable(why.clone())));
            }
            return statuses;
        }
        for (index, event) in items {
            let mut fetches = 0;
            let admitted = loop {
                match self
                    .state
                    .admit(&version, &event, received, &mut self.holdings)
                {
                    Admission::Fetch(need) if fetches < FETCHES_MAX => {
                        fetches += 1;
                        if let Err(e) = self.fetch(&version, &need).await {
                            break Err(e);
                        }
                    }
                    // Asked too often for this event: the account counts as empty
                    // for a while, and the event is applied with a denial.
                    Admission::Fetch(need) => self.holdings.dry(&need.account.key),
                    admitted => break Ok(admitted),
                }
            };
            let admitted = match admitted {
                Ok(a) => a,
                Err(why) => {
                    tracing::warn!(
                        partition = self.seat.partition,
                        user = %event.user,
                        id = %event.id,
                        error = %why,
                        "the escrow of the codes an event needs could not be reached; refused for a retry"
                    );
                    statuses.push((index, event.id, Status::Unavailable(why)));
                    continue;
                }
            };
            let answer = match admitted {
                Admission::Fetch(_) => unreachable!("fetched above"),
                Admission::Applied(answer) => answer,
                Admission::Duplicate(first) => {
                    statuses.push((index, event.id, Status::Duplicate(first)));
                    continue;
                }
                Admission::WindowFull => {
                    statuses.push((index, event.id, Status::WindowFull));
                    continue;
                }
                Admission::Failed(panicked) => {
                    tracing::error!(
                        user = %event.user,
                        id = %event.id,
                        error = %panicked,
                        "an event could not be applied; it was refused and nothing of it kept"
                    );
                    statuses.push((index, event.id, Status::Internal(panicked.0)));
                    continue;
                }
            };
            self.records
                .push((KIND_EVENT, encode_event(&event, received, &answer)));
            if self.notify.is_some() && notifies(version.catalog(), &answer) {
                self.notify_items.push((
                    self.records.len() - 1,
                    Origin::of(&event, received, answer.clone()),
                ));
            }
            statuses.push((index, event.id, Status::Accepted(answer)));
        }
        statuses
    }

    /// Fetches what an event needs from the escrow: every grant so far made durable
    /// first (only then may the escrow count it used), then a block; if none is left,
    /// the other partitions are asked to give back, and after a bounded wait the
    /// account is asked again, or taken as empty for a while.
    async fn fetch(&mut self, version: &Version, need: &crate::escrow::Need) -> Result<(), String> {
        let Some(pools) = version.escrow.clone() else {
            return Err("no escrow".into());
        };
        self.flush().await;
        if let Some(t) = self.last_ticket.clone() {
            t.await.map_err(|e| format!("the log: {e}"))?;
        }
        let partition = self.seat.partition;
        let catalog = version.catalog().clone();
        let state = &self.state;
        let account = &need.account;
        // What the partition's customers hold of the account: taken out of a
        // holding claimed from an earlier owner.
        let granted = || {
            let pool = catalog.pools.iter().find(|p| *p.id == *account.id);
            let mut codes = Vec::new();
            let mut wins = 0;
            for (h, _, code) in state.grants() {
                if need.slots {
                    wins += u64::from(h == account.id);
                } else if let Some(i) = pool.and_then(|p| p.index_of(code)) {
                    codes.push(i);
                }
            }
            (codes, wins)
        };
        let fail = |e: crate::escrow::EscrowFailure| e.to_string();
        use crate::escrow::Fetched;
        let mut fetched = self
            .holdings
            .fetch(&*pools.backend, partition, need, granted)
            .await
            .map_err(fail)?;
        // A new version's account waits for other partitions' seeds at their markers:
        // they come within moments, unless a partition's owner is lost.
        let until = std::time::Instant::now() + crate::escrow::SEEDING_WAIT;
        while fetched == Fetched::Seeding {
            if std::time::Instant::now() >= until {
                return Err(format!(
                    "the account {} still waits for other partitions to put version {} in force",
                    account.key, version.record.version
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            fetched = self
                .holdings
                .fetch(&*pools.backend, partition, need, || (Vec::new(), 0))
                .await
                .map_err(fail)?;
        }
        match fetched {
            Fetched::Some | Fetched::Spent | Fetched::Seeding => return Ok(()),
            Fetched::Wait => {}
        }
        // Others hold some unused: ask them to give back, and wait a little.
        self.seat.peers.give_back(Some(partition), &account.key);
        if pools
            .backend
            .wait_left(account, crate::escrow::WAIT_LEFT)
            .await
            .map_err(fail)?
        {
            let again = self
                .holdings
                .fetch(&*pools.backend, partition, need, || (Vec::new(), 0))
                .await
                .map_err(fail)?;
            if again != Fetched::Wait {
                return Ok(());
            }
        }
        self.holdings.dry(&account.key);
        Ok(())
    }

    /// Another partition wants `key`'s indexes: what this one holds unused goes back,
    /// its grants made durable first.
    async fn on_give_back(&mut self, key: String) {
        let Some(pools) = self.version.escrow.clone() else {
            return;
        };
        if !self.holdings.holds(&key) {
            return;
        }
        self.flush().await;
        if let Some(t) = self.last_ticket.clone()
            && t.await.is_err()
        {
            return;
        }
        if let Err(e) = self
            .holdings
            .give_back(&pools, self.seat.partition, &key)
            .await
        {
            tracing::warn!(partition = self.seat.partition, key, error = %e, "codes not given back");
        }
    }

    /// Submits the round's records and sends its replies with the ticket, then hands
    /// the round to the notifier: the answers never wait for room in its queue.
    async fn flush(&mut self) {
        let mut failed = None;
        let mut round = None;
        if !self.records.is_empty() {
            let partition = self.seat.partition;
            let notifying = self
                .notify
                .as_ref()
                .filter(|_| !self.notify_items.is_empty());
            if let Some(n) = notifying {
                n.in_flight.submitting(partition, self.seat.log.durable());
            }
            match self
                .seat
                .log
                .submit(partition, std::mem::take(&mut self.records))
                .await
            {
                Ok(t) => {
                    if notifying.is_some() {
                        round = Some(Round {
                            partition,
                            ticket: t.clone(),
                            version: self.version.clone(),
                            items: std::mem::take(&mut self.notify_items),
                        });
                    }
                    self.last_ticket = Some(t)
                }
                Err(e) => {
                    if let Some(n) = notifying {
                        n.in_flight.withdrawn(partition);
                    }
                    failed = Some(e)
                }
            }
            self.notify_items.clear();
        }
        // Taken and put back, so that the vector keeps its room for the next round.
        let mut replies = std::mem::take(&mut self.replies);
        for r in replies.drain(..) {
            match r {
                Reply::Batch(tx, statuses) => {
                    let answer = match &failed {
                        Some(e) => Err(e.clone()),
                        None => Ok(BatchAnswer {
                            statuses,
                            ticket: self.last_ticket.clone(),
                        }),
                    };
                    let _ = tx.send(answer);
                }
                Reply::User(tx, view, hunts) => {
                    let _ = tx.send((view, hunts, self.last_ticket.clone()));
                }
            }
        }
        self.replies = replies;
        if let (Some(round), Some(n)) = (round, &self.notify) {
            let _ = n.tx.send(Dispatch::Round(round)).await;
        }
    }
}
