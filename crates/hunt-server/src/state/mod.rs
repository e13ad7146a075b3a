//! The projections one partition owns — customers' state, the dedupe window, per-hunt
//! figures and winners — and the one function that changes them, used alike when an
//! event arrives and when the log is replayed. Nothing here does I/O or reads a clock.

use std::collections::{BTreeMap, HashMap};

pub mod completion;
mod users;
use std::hash::BuildHasher;
use std::sync::Arc;
pub use users::Users;

use hunt_core::catalog::Catalog;
use hunt_core::chunked::Chunked;
use hunt_core::dedupe::{DedupeCopy, DedupeWindow};
use hunt_core::engine::{Allocator, DenyReason, Engine, Event, Outcome, Undo};
use hunt_core::rewards::{Allocation, SharedPools};
use hunt_core::time::{Duration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::records::ConfigRecord;

/// A hunts-file version in force: its record, its engine and the reward pools shared by
/// every partition while it is in force.
pub struct Version {
    pub record: ConfigRecord,
    pub engine: Engine,
    pub pools: Arc<SharedPools>,
    /// On a cluster, where the codes and winner slots come from instead of `pools`.
    pub escrow: Option<Arc<crate::escrow::EscrowPools>>,
    /// On a cluster, the accounts `escrow` uses.
    pub lineage: Option<crate::escrow::Lineage>,
}

impl Version {
    /// Compiles a recorded version. Pools start empty: the caller restores them.
    pub fn compile(record: ConfigRecord) -> Result<Version, String> {
        let (catalog, _) = Catalog::load(&record.name, &record.text).map_err(|report| {
            format!(
                "hunts file version {} ({}) does not compile: {} error(s), first: {}",
                record.version,
                record.name,
                report.errors(),
                report
                    .diagnostics()
                    .first()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            )
        })?;
        let pools = Arc::new(SharedPools::new(&catalog));
        Ok(Version {
            record,
            engine: Engine::new(Arc::new(catalog)),
            pools,
            escrow: None,
            lineage: None,
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        self.engine.catalog()
    }

    /// Codes of pool `i` handed out: on a cluster, to this node's partitions'
    /// customers.
    pub fn taken(&self, i: usize) -> u64 {
        match &self.escrow {
            Some(e) => e.taken(i),
            None => self.pools.taken(i),
        }
    }

    /// The same version with its pools rebuilt from `grants` (hunt id, pool id, code):
    /// codes not among them are free.
    pub fn restore_pools<'a>(
        &mut self,
        grants: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<(), String> {
        self.pools = Arc::new(SharedPools::from_grants(self.engine.catalog(), grants)?);
        Ok(())
    }
}

/// The partition an event's customer belongs to. Stable across runs and machines.
pub fn partition_of(user: &str, partitions: usize) -> usize {
    partition_of_hash(hunt_core::dedupe::route_hash(user), partitions)
}

/// The partition of a customer whose route hash is `h`.
pub fn partition_of_hash(h: u64, partitions: usize) -> usize {
    (h % partitions.max(1) as u64) as usize
}

/// A fresh secret for the dedupe window's identities, from the process's random source.
pub fn dedupe_secret() -> [u64; 2] {
    use std::hash::RandomState;
    [
        RandomState::new().hash_one(0x7365_6372_6574_u64),
        RandomState::new().hash_one(0x006b_6579_u64),
    ]
}

/// The answer first given to an event, kept for its duplicates.
pub type Answer = Arc<[Outcome]>;

/// An answer of these outcomes. Most events have none: those share one allocation.
pub fn answer_of(outcomes: &[Outcome]) -> Answer {
    static NONE: std::sync::LazyLock<Answer> = std::sync::LazyLock::new(|| Arc::from([]));
    if outcomes.is_empty() {
        NONE.clone()
    } else {
        outcomes.into()
    }
}

/// An answer of these outcomes, taking them (no copy of each outcome).
pub fn answer_from(outcomes: Vec<Outcome>) -> Answer {
    if outcomes.is_empty() {
        answer_of(&[])
    } else {
        outcomes.into()
    }
}

/// Figures for one hunt, counted from outcomes (summed over partitions for queries).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HuntCounters {
    /// Customers who made progress.
    pub participants: u64,
    /// Finds per step id.
    pub found: BTreeMap<Arc<str>, u64>,
    pub completions: u64,
    pub granted: u64,
    pub denied: BTreeMap<String, u64>,
    pub trails_gone_cold: u64,
}

impl HuntCounters {
    pub fn add(&mut self, o: &HuntCounters) {
        self.participants += o.participants;
        for (k, v) in &o.found {
            *self.found.entry(k.clone()).or_default() += v;
        }
        self.completions += o.completions;
        self.granted += o.granted;
        for (k, v) in &o.denied {
            *self.denied.entry(k.clone()).or_default() += v;
        }
        self.trails_gone_cold += o.trails_gone_cold;
    }
}

/// A customer granted a hunt's reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Winner {
    pub hunt: Arc<str>,
    pub user: String,
    pub code: String,
    pub at: Timestamp,
}

/// What one partition owns.
pub struct PartitionState {
    pub users: Users,
    pub dedupe: DedupeWindow<Answer>,
    pub stats: HashMap<Arc<str>, HuntCounters>,
    /// In grant order.
    pub winners: Chunked<Winner>,
    scratch: Vec<Outcome>,
    /// Time to complete each hunt, for the dashboard (memory only, bounded).
    pub completion: completion::CompletionTimes,
    /// What the event being applied changed first, to put back if it panics.
    undo: Undo,
    /// Codes its customers hold, per pool id: counted from the customers when first
    /// asked (`None` until then), and kept as grants are applied.
    pool_grants: Option<HashMap<Arc<str>, u64>>,
}

/// A partition's state as a snapshot takes it ([`PartitionState::copy_for_snapshot`]).
#[derive(Clone)]
pub struct PartitionCopy {
    pub users: Users,
    pub dedupe: DedupeCopy<Answer>,
    pub stats: HashMap<Arc<str>, HuntCounters>,
    pub winners: Chunked<Winner>,
}

/// What admitting one event came to ([`PartitionState::admit`]).
pub enum Admission {
    /// Seen within the window: its first answer.
    Duplicate(Answer),
    /// The dedupe window is full of unexpired events: not applied, retry later.
    WindowFull,
    /// Applied: its outcomes.
    Applied(Answer),
    /// Not applied: its partition must first fetch codes or winner slots from the
    /// escrow (on a cluster); nothing of it was kept.
    Fetch(crate::escrow::Need),
    /// Applying it panicked: nothing of it kept.
    Failed(Panicked),
}

/// Applying an event panicked (a bug): nothing of it was kept, and the customer's state
/// is what it was before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "applying the event panicked: {}", self.0)
    }
}

/// Why an event was not applied.
enum Unapplied {
    Panicked(Panicked),
    /// The allocator must fetch codes first.
    Stalled,
}

/// The message a panic carried.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How the dedupe window is bounded.
#[derive(Debug, Clone, Copy)]
pub struct DedupeConfig {
    pub window: Duration,
    pub entries_max: usize,
}

impl PartitionState {
    /// An empty partition whose dedupe window keys identities with `secret` (one for
    /// all partitions: see [`DedupeWindow::new`]).
    pub fn new(dedupe: DedupeConfig, secret: [u64; 2]) -> PartitionState {
        PartitionState {
            users: Users::default(),
            dedupe: DedupeWindow::new(dedupe.window, dedupe.entries_max, secret),
            stats: HashMap::new(),
            winners: Chunked::default(),
            scratch: Vec::new(),
            completion: completion::CompletionTimes::default(),
            undo: Undo::default(),
            pool_grants: None,
        }
    }

    /// Codes this partition's customers hold, per pool id (whichever version's pool
    /// granted them). Counted once from the customers, then kept as grants are applied.
    pub fn pool_grants(&mut self) -> &HashMap<Arc<str>, u64> {
        let users = &self.users;
        self.pool_grants.get_or_insert_with(|| {
            let mut held: HashMap<Arc<str>, u64> = HashMap::new();
            for g in users.values().flat_map(|u| &u.rewards) {
                *held.entry(g.pool.clone()).or_default() += 1;
            }
            held
        })
    }

    fn count_grant(&mut self, pool: &Arc<str>) {
        if let Some(held) = &mut self.pool_grants {
            *held.entry(pool.clone()).or_default() += 1;
        }
    }

    /// Admits one event, the one place that does: a duplicate within the window gets its
    /// first answer; with the window full it is refused; otherwise it is applied (the
    /// customer, the figures, the winners and the window) with codes from the version's
    /// pools.
    ///
    /// The codes an applied event took are kept at once, before its record is appended:
    /// if the append fails the log stops and so does the process (fail-stop), and codes
    /// allocated but never recorded are free again when the pools are rebuilt from the
    /// log on restart. If applying panics, they go back at once.
    pub fn admit(
        &mut self,
        version: &Version,
        event: &Event,
        received: Timestamp,
        holdings: &mut crate::escrow::Holdings,
    ) -> Admission {
        let key = self.dedupe.key(&event.user, &event.id);
        if let Some(first) = self.dedupe.get_key(key, received) {
            return Admission::Duplicate(first.clone());
        }
        if !self.dedupe.has_room(received) {
            return Admission::WindowFull;
        }
        if let Some(pools) = &version.escrow {
            let mut alloc = crate::escrow::EscrowAllocation::new(pools, holdings);
            return match self.apply_keyed(&version.engine, event, key, received, &mut alloc) {
                Ok(answer) => {
                    alloc.commit();
                    Admission::Applied(answer)
                }
                Err(Unapplied::Stalled) => Admission::Fetch(
                    alloc
                        .need()
                        .cloned()
                        .expect("a stalled allocation says what it needs"),
                ),
                Err(Unapplied::Panicked(p)) => Admission::Failed(p),
            };
        }
        let mut alloc = Allocation::new(&version.pools);
        match self.apply_keyed(&version.engine, event, key, received, &mut alloc) {
            Ok(answer) => {
                alloc.commit();
                Admission::Applied(answer)
            }
            // `alloc` drops uncommitted: its codes go back.
            Err(Unapplied::Panicked(panicked)) => Admission::Failed(panicked),
            Err(Unapplied::Stalled) => unreachable!("the shared pools never stall"),
        }
    }

    /// Applies an accepted event: the customer's state, the figures, the winners and
    /// the dedupe window. Returns its outcomes. The caller has checked it is not a
    /// duplicate and that the window has room. If the engine panics, nothing of the event
    /// is kept (the caller must not keep its allocations either).
    pub fn apply(
        &mut self,
        engine: &Engine,
        event: &Event,
        received: Timestamp,
        alloc: &mut dyn Allocator,
    ) -> Result<Answer, Panicked> {
        let key = self.dedupe.key(&event.user, &event.id);
        self.apply_keyed(engine, event, key, received, alloc)
            .map_err(|e| match e {
                Unapplied::Panicked(p) => p,
                Unapplied::Stalled => Panicked("the allocator stalled".into()),
            })
    }

    /// [`apply`](Self::apply) with the event's dedupe identity already computed (the
    /// caller looked it up first).
    fn apply_keyed(
        &mut self,
        engine: &Engine,
        event: &Event,
        key: hunt_core::dedupe::PairKey,
        received: Timestamp,
        alloc: &mut dyn Allocator,
    ) -> Result<Answer, Unapplied> {
        let (state, new) = match self.users.get_mut(&event.user) {
            Some(s) => (s, false),
            None => (self.users.insert_default(&event.user), true),
        };
        let joined_before = state.hunts().len();
        self.scratch.clear();
        self.undo.clear();
        let (scratch, undo) = (&mut self.scratch, &mut self.undo);
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.apply_undoable(state, event, received, alloc, scratch, undo)
        }));
        // A panic, or an allocation that must first fetch codes: nothing of the
        // event is kept.
        let failed = match applied {
            Err(payload) => Some(Unapplied::Panicked(Panicked(panic_message(&*payload)))),
            Ok(_) if alloc.stalled() => Some(Unapplied::Stalled),
            Ok(_) => None,
        };
        if let Some(failed) = failed {
            if new {
                self.users.remove(&event.user);
            } else if let Some(state) = self.users.get_mut(&event.user) {
                self.undo.restore(state);
            }
            self.scratch.clear();
            return Err(failed);
        }
        let state = self
            .users
            .get(&event.user)
            .expect("the customer was just applied to");
        for p in &state.hunts()[joined_before..] {
            self.stats.entry(p.hunt().clone()).or_default().participants += 1;
        }
        for o in &self.scratch {
            let c = self.stats.entry(o.hunt().clone()).or_default();
            match o {
                Outcome::StepFound { step, .. } => *c.found.entry(step.clone()).or_default() += 1,
                Outcome::HuntCompleted { .. } => c.completions += 1,
                Outcome::RewardGranted { hunt, code, pool } => {
                    c.granted += 1;
                    if let Some(held) = &mut self.pool_grants {
                        *held.entry(pool.clone()).or_default() += 1;
                    }
                    self.winners.push(Winner {
                        hunt: hunt.clone(),
                        user: event.user.clone(),
                        code: code.clone(),
                        at: received,
                    });
                }
                Outcome::RewardDenied { reason, .. } => {
                    *c.denied.entry(reason.as_str().to_string()).or_default() += 1
                }
                Outcome::TrailCold { .. } => c.trails_gone_cold += 1,
            }
        }
        // The time the engine counted the event at (its own, never past its receipt).
        let at = event.time.map_or(received, |t| t.min(received));
        self.completion.observe(&event.user, at, &self.scratch);
        let answer = answer_of(&self.scratch);
        // Room was checked by the caller; a refusal here would only mean a duplicate
        // could be applied again later, so it is not ignored silently.
        if self
            .dedupe
            .insert_key(key, received, answer.clone())
            .is_err()
        {
            tracing::warn!(user = %event.user, id = %event.id, "dedupe window full while applying");
        }
        Ok(answer)
    }

    /// For an event in the log that could not be applied again (a panic on replay):
    /// the codes its recorded answer granted stay with the customer and among the
    /// winners, so that no code it granted is handed out again.
    pub fn keep_recorded_grants(
        &mut self,
        event: &Event,
        received: Timestamp,
        recorded: &[Outcome],
    ) {
        for o in recorded {
            if let Outcome::RewardGranted { hunt, pool, code } = o {
                self.count_grant(pool);
                let state = match self.users.get_mut(&event.user) {
                    Some(s) => s,
                    None => self.users.insert_default(&event.user),
                };
                state.rewards.push(hunt_core::engine::Grant {
                    hunt: hunt.clone(),
                    pool: pool.clone(),
                    code: code.clone(),
                    at: received,
                });
                self.winners.push(Winner {
                    hunt: hunt.clone(),
                    user: event.user.clone(),
                    code: code.clone(),
                    at: received,
                });
            }
        }
    }

    /// Everything a snapshot holds, shared rather than copied: taken while the partition
    /// waits between rounds (a pointer per shard of customers and per chunk of the
    /// dedupe window and winners), and written out while it goes on.
    pub fn copy_for_snapshot(&self) -> PartitionCopy {
        PartitionCopy {
            users: self.users.clone(),
            dedupe: self.dedupe.copy(),
            stats: self.stats.clone(),
            winners: self.winners.clone(),
        }
    }

    /// Every grant held by this partition's customers: (hunt, pool, code).
    pub fn grants(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.users.values().flat_map(|u| {
            u.rewards
                .iter()
                .map(|g| (&*g.hunt, &*g.pool, g.code.as_str()))
        })
    }
}

/// The allocator of a replay: it gives the answers the log recorded, in order, so the
/// replayed engine makes the decisions it made when the event arrived.
pub struct ReplayAllocator<'a> {
    recorded: &'a [Outcome],
    used: Vec<bool>,
    /// The engine asked for a reward the record does not answer.
    pub unanswered: u32,
}

impl<'a> ReplayAllocator<'a> {
    pub fn new(recorded: &'a [Outcome]) -> ReplayAllocator<'a> {
        ReplayAllocator {
            recorded,
            used: vec![false; recorded.len()],
            unanswered: 0,
        }
    }
}

impl Allocator for ReplayAllocator<'_> {
    fn allocate(
        &mut self,
        catalog: &Catalog,
        hunt: usize,
        _pool: usize,
    ) -> Result<String, DenyReason> {
        let id = &catalog.hunts[hunt].id;
        for (i, o) in self.recorded.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            match o {
                Outcome::RewardGranted { hunt: h, code, .. } if h == id => {
                    self.used[i] = true;
                    return Ok(code.clone());
                }
                Outcome::RewardDenied {
                    hunt: h,
                    reason: r @ (DenyReason::PoolEmpty | DenyReason::WinnersCap),
                    ..
                } if h == id => {
                    self.used[i] = true;
                    return Err(*r);
                }
                _ => {}
            }
        }
        self.unanswered += 1;
        Err(DenyReason::PoolEmpty)
    }
}
