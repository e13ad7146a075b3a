//! The engine: a pure, deterministic state machine.
//!
//! [`Engine::apply`] takes one event, one customer's state, the time the event was
//! received and a reward allocator, and returns the outcomes in a fixed order (hunts in
//! file order, then steps in file order). It owns no clock, no randomness and no I/O:
//! the same catalog, events, receive times and allocator answers give the same outcomes
//! on any machine. See `docs/engine.md` for the rules on late and out-of-order events.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::catalog::{Candidate, Catalog};
use crate::cond::{EventView, Input, ProgressView};
use crate::spec::Order;
use crate::time::Timestamp;

/// A customer's action, as posted by the shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Idempotency key: the same `(user, id)` is one event.
    pub id: String,
    /// Event type, e.g. `product_view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The customer (the partition key).
    pub user: String,
    /// When it happened, by the sender's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Json>,
    /// Traits merged into the customer's profile (`null` removes one).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Json>,
}

/// Longest `id` and `user`, in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// The most traits kept per customer; new traits past it are not stored.
pub const TRAITS_MAX: usize = 64;

impl Event {
    /// Checks the fields the contract constrains; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > ID_BYTES_MAX {
            return Err(format!(
                "`id` must be 1-{ID_BYTES_MAX} bytes, got {}",
                self.id.len()
            ));
        }
        if self.user.is_empty() || self.user.len() > ID_BYTES_MAX {
            return Err(format!(
                "`user` must be 1-{ID_BYTES_MAX} bytes, got {}",
                self.user.len()
            ));
        }
        if !crate::catalog::is_valid_event_type(&self.kind) {
            return Err(format!(
                "`type` must match [a-z0-9_.:-]{{1,64}}, got {:?}",
                self.kind
            ));
        }
        Ok(())
    }
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A step was found.
    StepFound {
        hunt: Arc<str>,
        step: Arc<str>,
        /// Steps of the hunt found so far, this one included.
        found: u32,
        /// The clue of the next step still to find, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_clue: Option<Arc<str>>,
    },
    /// The customer completed the hunt.
    HuntCompleted { hunt: Arc<str> },
    /// A reward code was granted.
    RewardGranted {
        hunt: Arc<str>,
        pool: Arc<str>,
        code: String,
    },
    /// The hunt was completed but no code could be granted.
    RewardDenied {
        hunt: Arc<str>,
        pool: Arc<str>,
        reason: DenyReason,
    },
    /// In a sequence hunt, `step` was matched after its `within` ran out: the trail went
    /// cold and the customer's progress in the hunt starts over.
    TrailCold { hunt: Arc<str>, step: Arc<str> },
}

impl Outcome {
    pub fn hunt(&self) -> &Arc<str> {
        match self {
            Outcome::StepFound { hunt, .. }
            | Outcome::HuntCompleted { hunt }
            | Outcome::RewardGranted { hunt, .. }
            | Outcome::RewardDenied { hunt, .. }
            | Outcome::TrailCold { hunt, .. } => hunt,
        }
    }
}

/// Why a reward was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The pool has no codes left.
    PoolEmpty,
    /// The hunt already has `max_winners` winners.
    WinnersCap,
    /// The customer already holds `per_user` codes from the pool.
    PerUserLimit,
    /// The customer no longer matches the hunt's audience.
    NotInAudience,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::PoolEmpty => "pool_empty",
            DenyReason::WinnersCap => "winners_cap",
            DenyReason::PerUserLimit => "per_user_limit",
            DenyReason::NotInAudience => "not_in_audience",
        }
    }

    pub fn parse(s: &str) -> Option<DenyReason> {
        [
            DenyReason::PoolEmpty,
            DenyReason::WinnersCap,
            DenyReason::PerUserLimit,
            DenyReason::NotInAudience,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A customer's traits. Customers have few, so they are a vector sorted by name: a JSON
/// map allocates a node of eleven slots for even one trait (about 640 bytes), which was
/// a quarter of a customer's memory. Serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traits(Vec<(Box<str>, Json)>);

impl Traits {
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets a trait (replacing its value).
    pub fn insert(&mut self, name: &str, value: Json) {
        match self.find(name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name.into(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Json> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// The traits in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> Map<String, Json> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl From<Map<String, Json>> for Traits {
    fn from(m: Map<String, Json>) -> Traits {
        // A JSON map iterates in key order: already sorted.
        Traits(
            m.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
        )
    }
}

impl Serialize for Traits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Traits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Traits, D::Error> {
        Map::<String, Json>::deserialize(d).map(Traits::from)
    }
}

/// One customer's state: traits, progress per hunt, rewards held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// The catalog `slots` are bound to (0: none yet).
    #[serde(skip)]
    bound_to: u64,
    /// Beside each entry of `hunts`: the hunt's index in the bound catalog
    /// ([`SLOT_ABSENT`] if it has none), with [`SLOT_DONE`] set once completed and
    /// [`SLOT_PENDING`] while the customer's finds already meet a completion rule that a
    /// new version lowered. Scanning these few bytes, not the progress records, is what
    /// keeps a lookup in cache.
    #[serde(skip)]
    slots: Vec<u32>,
    pub traits: Traits,
    /// Progress in each hunt the customer has taken part in, in order of joining.
    hunts: Vec<HuntProgress>,
    pub rewards: Vec<Grant>,
}

/// A slot's flag: the hunt is completed.
const SLOT_DONE: u32 = 1 << 31;
/// A slot's flag: the customer completes the hunt at their next event while it is
/// active (a new version lowered `complete_after` to finds they already have, or removed
/// the steps they lacked).
const SLOT_PENDING: u32 = 1 << 30;
/// The bits of a slot that hold the hunt's index.
const SLOT_INDEX: u32 = SLOT_PENDING - 1;
/// A slot's index for progress in a hunt the bound catalog does not have.
const SLOT_ABSENT: u32 = SLOT_INDEX;

/// A hunt's id and its step ids in one version's order: shared by the catalog and every
/// progress record laid out by it, so that a record holds one thin pointer for both.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub hunt: Arc<str>,
    pub steps: Arc<[Arc<str>]>,
}

/// A customer's progress in one hunt.
///
/// Progress belongs to steps by id: `counts` and `found` are by position in the record's
/// layout, the hunt's step ids in the version the record was last laid out by. When a
/// new version changes the steps, [`UserState::bind`] lays the record out again by id
/// (see `docs/engine.md`, "When the hunts file changes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ProgressWire", try_from = "ProgressWire")]
pub struct HuntProgress {
    /// The hunt, and the step ids `counts` and `found` are laid out by.
    layout: Arc<Layout>,
    /// Matching events seen per step.
    pub counts: Vec<u32>,
    /// Found steps, as a bit set by position in the layout.
    pub found: u64,
    pub found_count: u32,
    /// When the most recent step was found (event time).
    pub last_found_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

/// A progress record as JSON and other self-describing formats see it.
#[derive(Serialize, Deserialize)]
struct ProgressWire {
    hunt: Arc<str>,
    steps: Vec<Arc<str>>,
    counts: Vec<u32>,
    found: u64,
    found_count: u32,
    #[serde(default)]
    last_found_at: Option<Timestamp>,
    #[serde(default)]
    completed_at: Option<Timestamp>,
}

impl From<HuntProgress> for ProgressWire {
    fn from(p: HuntProgress) -> ProgressWire {
        ProgressWire {
            hunt: p.layout.hunt.clone(),
            steps: p.layout.steps.to_vec(),
            counts: p.counts,
            found: p.found,
            found_count: p.found_count,
            last_found_at: p.last_found_at,
            completed_at: p.completed_at,
        }
    }
}

impl TryFrom<ProgressWire> for HuntProgress {
    type Error = String;

    fn try_from(w: ProgressWire) -> Result<HuntProgress, String> {
        let layout = Arc::new(Layout {
            hunt: w.hunt,
            steps: w.steps.into(),
        });
        HuntProgress::from_parts(
            layout,
            w.counts,
            w.found,
            w.found_count,
            w.last_found_at,
            w.completed_at,
        )
    }
}

impl UserState {
    /// Binds progress to `catalog` by hunt id, so that lookups compare indexes. Done
    /// once per state and catalog: after a restore, or when a new hunts file is in
    /// force. Progress in hunts the catalog lacks is kept, and used again if they return.
    ///
    /// Binding lays each record out again by step id when the hunt's steps or order
    /// changed ([`HuntProgress::rebind`]). It happens at the customer's first event under
    /// a version, so live serving, replay and a restore from a snapshot all lay out the
    /// same progress at the same event.
    pub fn bind(&mut self, catalog: &Catalog) {
        if self.bound_to == catalog.id {
            return;
        }
        self.slots.clear();
        for p in &mut self.hunts {
            let mut slot = match catalog.hunt_index(p.hunt()) {
                Some(h) => {
                    let hunt = &catalog.hunts[h];
                    p.rebind(hunt);
                    if p.completed_at.is_none() && p.found_count >= hunt.complete_after {
                        h as u32 | SLOT_PENDING
                    } else {
                        h as u32
                    }
                }
                None => SLOT_ABSENT,
            };
            if p.completed_at.is_some() {
                slot |= SLOT_DONE;
            }
            self.slots.push(slot);
        }
        self.bound_to = catalog.id;
    }

    /// Progress in each hunt the customer has taken part in, in order of joining.
    pub fn hunts(&self) -> &[HuntProgress] {
        &self.hunts
    }

    /// A state from its parts (as a snapshot stored them); bound on first use.
    pub fn from_parts(traits: Traits, hunts: Vec<HuntProgress>, rewards: Vec<Grant>) -> UserState {
        UserState {
            traits,
            hunts,
            rewards,
            ..UserState::default()
        }
    }
}

impl HuntProgress {
    fn new(hunt: &crate::catalog::Hunt) -> HuntProgress {
        HuntProgress {
            layout: hunt.layout.clone(),
            counts: vec![0; hunt.steps.len()],
            found: 0,
            found_count: 0,
            last_found_at: None,
            completed_at: None,
        }
    }

    /// A record from its parts (as a snapshot stored them). Its counts must match its
    /// layout.
    pub fn from_parts(
        layout: Arc<Layout>,
        counts: Vec<u32>,
        found: u64,
        found_count: u32,
        last_found_at: Option<Timestamp>,
        completed_at: Option<Timestamp>,
    ) -> Result<HuntProgress, String> {
        if counts.len() != layout.steps.len() {
            return Err(format!(
                "progress in `{}` has {} counts for {} steps",
                layout.hunt,
                counts.len(),
                layout.steps.len()
            ));
        }
        Ok(HuntProgress {
            layout,
            counts,
            found,
            found_count,
            last_found_at,
            completed_at,
        })
    }

    /// The hunt's id.
    pub fn hunt(&self) -> &Arc<str> {
        &self.layout.hunt
    }

    /// The step ids `counts` and `found` are laid out by.
    pub fn steps(&self) -> &[Arc<str>] {
        &self.layout.steps
    }

    /// The hunt and its step ids as this record is laid out (shared).
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn is_found(&self, step: usize) -> bool {
        step < 64 && self.found & (1 << step) != 0
    }

    /// The ids of the steps found, in layout order.
    pub fn found_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.layout
            .steps
            .iter()
            .enumerate()
            .filter(|(s, _)| self.is_found(*s))
            .map(|(_, id)| id)
    }

    /// Matching events seen for the step `id` (0 if the layout lacks it).
    pub fn count_of(&self, id: &str) -> u32 {
        self.layout
            .steps
            .iter()
            .position(|s| &**s == id)
            .and_then(|s| self.counts.get(s).copied())
            .unwrap_or(0)
    }

    /// Lays the record out by `hunt`'s steps, keeping what belongs to each step id:
    /// - a step still there keeps its count and its find, wherever it moved;
    /// - a removed step's count and find are dropped; an added step starts at zero;
    /// - in a sequence hunt not yet completed, the customer's place is the longest
    ///   prefix of the new order they had found: finds past it are dropped, and only the
    ///   step right after it keeps a count (a sequence counts the next step only). With
    ///   no find left there is no previous step, so no `within` runs from one;
    /// - a completed hunt stays completed; its finds of steps still there are kept.
    pub fn rebind(&mut self, hunt: &crate::catalog::Hunt) {
        let n = hunt.steps.len();
        if !Arc::ptr_eq(&self.layout, &hunt.layout) {
            // A record whose counts do not match its layout (never written by this
            // engine) is laid out by id all the same, rather than trusted.
            if *self.layout.steps != *hunt.step_ids || self.counts.len() != n {
                let mut counts = vec![0; n];
                let mut found = 0u64;
                for (old, id) in self.layout.steps.iter().enumerate() {
                    if let Some(new) = hunt.step_ids.iter().position(|s| s == id) {
                        counts[new] = self.counts.get(old).copied().unwrap_or(0);
                        if self.is_found(old) {
                            found |= 1 << new;
                        }
                    }
                }
                self.counts = counts;
                self.found = found;
            }
            self.layout = hunt.layout.clone();
            self.found &= if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
            self.found_count = self.found.count_ones();
        }
        if hunt.order == Order::Sequence && self.completed_at.is_none() {
            let place = (!self.found).trailing_zeros().min(n as u32) as usize;
            self.found = if place == 64 {
                u64::MAX
            } else {
                (1u64 << place) - 1
            };
            self.found_count = place as u32;
            for c in self.counts.iter_mut().skip(place + 1) {
                *c = 0;
            }
            if place == 0 {
                self.last_found_at = None;
            }
        }
    }
}

/// A reward code held by a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub hunt: Arc<str>,
    pub pool: Arc<str>,
    pub code: String,
    pub at: Timestamp,
}

/// Hands out reward codes. Shared across customers (and, in the server, partitions);
/// the engine asks it only when a customer completes a hunt with a reward and is
/// otherwise eligible.
pub trait Allocator {
    /// A code from `pool` for a winner of `hunt`, or why there is none. Must check the
    /// hunt's `max_winners` before taking a code.
    fn allocate(
        &mut self,
        catalog: &Catalog,
        hunt: usize,
        pool: usize,
    ) -> Result<String, DenyReason>;
}

/// The in-memory allocator for one process lives with the shared pools it uses.
pub use crate::rewards::LocalAllocator;

/// What applying one event changed in a customer's state, kept so that the state can be
/// put back as it was if applying panicked half-way (a bug must not leave a customer's
/// state different from what the log says). Each part is saved just before it is first
/// changed: most events change only traits, or nothing, and then nothing is copied.
#[derive(Debug, Default)]
pub struct Undo {
    /// The progress records as they were, once any of them was about to change.
    hunts: Option<Vec<HuntProgress>>,
    /// Traits the event set or removed, with their values before (`None`: absent).
    traits: Vec<(Box<str>, Option<Json>)>,
    /// Codes held before, once one was about to be added.
    rewards_len: Option<usize>,
    /// Saves nothing: for callers that never put a state back (`Engine::apply`).
    off: bool,
}

impl Undo {
    /// An undo that saves nothing, so a caller that cannot restore pays nothing.
    fn off() -> Undo {
        Undo {
            off: true,
            ..Undo::default()
        }
    }

    fn save_hunts(&mut self, state: &UserState) {
        if !self.off && self.hunts.is_none() {
            self.hunts = Some(state.hunts.clone());
        }
    }

    fn save_traits(&mut self, profile: &Traits, traits: &Map<String, Json>) {
        if self.off {
            return;
        }
        for k in traits.keys() {
            self.traits
                .push((k.as_str().into(), profile.get(k).cloned()));
        }
    }

    fn save_rewards(&mut self, state: &UserState) {
        if !self.off {
            self.rewards_len.get_or_insert(state.rewards.len());
        }
    }

    /// Forgets what was saved (the event's changes stand).
    pub fn clear(&mut self) {
        self.hunts = None;
        self.traits.clear();
        self.rewards_len = None;
    }

    /// Puts `state` back as it was before the event, and forgets what was saved. The
    /// state binds again at its next event.
    pub fn restore(&mut self, state: &mut UserState) {
        if let Some(h) = self.hunts.take() {
            state.hunts = h;
        }
        for (k, v) in self.traits.drain(..).rev() {
            match v {
                Some(v) => state.traits.insert(&k, v),
                None => {
                    state.traits.remove(&k);
                }
            }
        }
        if let Some(n) = self.rewards_len.take() {
            state.rewards.truncate(n);
        }
        state.bound_to = 0;
        state.slots.clear();
    }
}

/// Counts of a customer with no progress yet, borrowed instead of allocated.
static ZERO_COUNTS: [u32; crate::catalog::STEPS_MAX] = [0; crate::catalog::STEPS_MAX];

/// The engine for one catalog.
#[derive(Debug, Clone)]
pub struct Engine {
    catalog: Arc<Catalog>,
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>) -> Engine {
        Engine { catalog }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The time an event counts at: its own time, but never later than its receipt
    /// (a sender cannot claim the future). `None` when it is later than `max_lateness`
    /// behind its receipt: such an event updates traits only.
    pub fn effective_time(&self, event: &Event, received: Timestamp) -> Option<Timestamp> {
        let t = event.time.map_or(received, |t| t.min(received));
        (received.0 - t.0 <= self.catalog.max_lateness.0).then_some(t)
    }

    /// Applies `event`, received at `received`, to the customer's `state`; appends the
    /// outcomes to `out`.
    pub fn apply(
        &self,
        state: &mut UserState,
        event: &Event,
        received: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
    ) {
        self.apply_undoable(state, event, received, alloc, out, &mut Undo::off());
    }

    /// [`apply`](Self::apply), saving in `undo` what it changes first (`undo` must be
    /// empty): if it panics, `undo.restore(state)` puts the state back as it was.
    pub fn apply_undoable(
        &self,
        state: &mut UserState,
        event: &Event,
        received: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        if state.bound_to != self.catalog.id && !state.hunts.is_empty() {
            undo.save_hunts(state);
        }
        state.bind(&self.catalog);
        if !event.traits.is_empty() {
            undo.save_traits(&state.traits, &event.traits);
            merge_traits(&mut state.traits, &event.traits);
        }
        let Some(t) = self.effective_time(event, received) else {
            return;
        };
        if state.slots.iter().any(|s| s & SLOT_PENDING != 0) {
            self.complete_pending(state, &event.user, t, alloc, out, undo);
        }
        let Some(mut found) = self.catalog.candidates(&event.kind, &event.data) else {
            return;
        };
        let candidates = found.as_sorted();
        let mut i = 0;
        while i < candidates.len() {
            let hunt = candidates[i].hunt;
            let j = i + candidates[i..]
                .iter()
                .take_while(|c| c.hunt == hunt)
                .count();
            self.apply_hunt(
                state,
                event,
                t,
                hunt as usize,
                &candidates[i..j],
                alloc,
                out,
                undo,
            );
            i = j;
        }
    }

    /// Completes, in file order, the active hunts whose completion rule a new version
    /// lowered to finds the customer already has.
    fn complete_pending(
        &self,
        state: &mut UserState,
        user: &str,
        t: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        let mut pending: Vec<(usize, usize)> = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| **s & SLOT_PENDING != 0 && **s & SLOT_DONE == 0)
            .map(|(p, s)| ((s & SLOT_INDEX) as usize, p))
            .collect();
        pending.sort_unstable();
        for (h, p) in pending {
            let hunt = &self.catalog.hunts[h];
            if !hunt.is_active(t) {
                continue;
            }
            undo.save_hunts(state);
            undo.save_rewards(state);
            state.hunts[p].completed_at = Some(t);
            state.slots[p] = (state.slots[p] & !SLOT_PENDING) | SLOT_DONE;
            out.push(Outcome::HuntCompleted {
                hunt: hunt.id.clone(),
            });
            self.reward(state, user, t, h, alloc, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_hunt(
        &self,
        state: &mut UserState,
        event: &Event,
        t: Timestamp,
        h: usize,
        cands: &[Candidate],
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        let hunt = &self.catalog.hunts[h];
        if !hunt.is_active(t) {
            return;
        }
        let existing = state.slots.iter().position(|s| s & SLOT_INDEX == h as u32);
        if let Some(p) = existing
            && state.slots[p] & SLOT_DONE != 0
        {
            return;
        }
        if existing.is_none() && !in_audience(hunt, &event.user, &state.traits) {
            return;
        }
        // First judge the conditions that do not read progress on the event alone: most
        // fail, and then the progress record (often not in cache) is never read. Nothing
        // is allocated on this path.
        let ev = EventView {
            id: &event.id,
            kind: &event.kind,
            time: t,
            data: &event.data,
        };
        let bare = Input {
            event: Some(ev),
            user_id: &event.user,
            traits: &state.traits,
            progress: None,
        };
        let (mut holds, mut failed, mut pending) = (0u64, 0u64, 0u64);
        for c in cands {
            let bit = 1u64 << c.step;
            let when = &hunt.steps[c.step as usize].when;
            if when.uses_progress() {
                pending |= bit;
                continue;
            }
            match when.eval_checked(&bare) {
                Ok(true) => holds |= bit,
                Ok(false) => {}
                Err(_) => failed |= bit,
            }
        }
        if holds | failed | pending == 0 {
            return;
        }
        let n = hunt.steps.len();
        let (found_count, found, counts, last) = match existing {
            Some(p) => {
                let p = &state.hunts[p];
                (p.found_count, p.found, &p.counts[..], p.last_found_at)
            }
            None => (0, 0, &ZERO_COUNTS[..n], None),
        };
        // The steps this event may count for: unfound ones, or in a sequence the next.
        let eligible: u64 = match hunt.order {
            Order::Any => !found,
            Order::Sequence if (found_count as usize) < n => 1 << found_count,
            Order::Sequence => 0,
        };
        // Failures count only for conditions the rules needed evaluated.
        for s in 0..n {
            if failed & eligible & (1 << s) != 0 {
                hunt.steps[s].when.count_failure();
            }
        }
        if pending & eligible != 0 {
            let view = ProgressView {
                found: found_count,
                step_ids: &hunt.step_ids,
                counts,
            };
            let input = Input {
                progress: Some(view),
                ..bare
            };
            for s in 0..n {
                if pending & eligible & (1 << s) != 0 && hunt.steps[s].when.eval(&input) {
                    holds |= 1 << s;
                }
            }
        }
        let mut matched = holds & eligible;
        // In a sequence, an event that happened before the previous step was found is
        // not after it.
        if hunt.order == Order::Sequence && last.is_some_and(|l| t < l) {
            matched = 0;
        }
        if matched == 0 {
            return;
        }
        undo.save_hunts(state);
        undo.save_rewards(state);
        let p = match existing {
            Some(p) => p,
            None => {
                // Exactly as long as needed: a customer joins a hunt rarely, and a
                // doubling vector's spare room was a fifth of a customer's memory.
                state.hunts.reserve_exact(1);
                state.slots.reserve_exact(1);
                state.hunts.push(HuntProgress::new(hunt));
                state.slots.push(h as u32);
                state.hunts.len() - 1
            }
        };
        let before = state.hunts[p].found_count;
        match hunt.order {
            Order::Any => {
                let progress = &mut state.hunts[p];
                for s in 0..n {
                    if matched & (1 << s) != 0 {
                        self.count_step(progress, s, t, h, out);
                    }
                }
            }
            Order::Sequence => self.step_sequence(state, p, event, ev, t, h, cands, out),
        }
        // A bug half-way through a customer's change, on demand (tests of containment).
        #[cfg(feature = "failpoints")]
        fail::fail_point!(
            "engine::apply_hunt",
            event.user.starts_with("failpoint-"),
            |_| { panic!("failpoint engine::apply_hunt for {}", event.user) }
        );
        let progress = &mut state.hunts[p];
        if progress.found_count > before && progress.found_count >= hunt.complete_after {
            progress.completed_at = Some(t);
            state.slots[p] = (state.slots[p] & !SLOT_PENDING) | SLOT_DONE;
            out.push(Outcome::HuntCompleted {
                hunt: hunt.id.clone(),
            });
            self.reward(state, &event.user, t, h, alloc, out);
        }
    }

    /// Applies a matched event to the next step of a sequence hunt, minding `within`.
    #[allow(clippy::too_many_arguments)]
    fn step_sequence(
        &self,
        state: &mut UserState,
        p: usize,
        event: &Event,
        ev: EventView,
        t: Timestamp,
        h: usize,
        cands: &[Candidate],
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let next = state.hunts[p].found_count as usize;
        let step = &hunt.steps[next];
        if let (Some(last), Some(within)) = (state.hunts[p].last_found_at, step.within)
            && t > last.plus(within)
        {
            out.push(Outcome::TrailCold {
                hunt: hunt.id.clone(),
                step: step.id.clone(),
            });
            state.hunts[p] = HuntProgress::new(hunt);
            // The same event may start the trail afresh, judged on the reset progress.
            let view = ProgressView {
                found: 0,
                step_ids: &hunt.step_ids,
                counts: &ZERO_COUNTS[..hunt.steps.len()],
            };
            let input = Input {
                event: Some(ev),
                user_id: &event.user,
                traits: &state.traits,
                progress: Some(view),
            };
            if cands.iter().any(|c| c.step == 0) && hunt.steps[0].when.eval(&input) {
                self.count_step(&mut state.hunts[p], 0, t, h, out);
            }
            return;
        }
        self.count_step(&mut state.hunts[p], next, t, h, out);
    }

    /// One more matching event for step `s`; finds it when its `count` is reached.
    fn count_step(
        &self,
        progress: &mut HuntProgress,
        s: usize,
        t: Timestamp,
        h: usize,
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let step = &hunt.steps[s];
        progress.counts[s] += 1;
        if progress.counts[s] < step.count {
            return;
        }
        progress.found |= 1 << s;
        progress.found_count += 1;
        progress.last_found_at = Some(t);
        let next_clue = match hunt.order {
            Order::Sequence => hunt.steps.get(s + 1).and_then(|n| n.clue.clone()),
            Order::Any => (0..hunt.steps.len())
                .find(|i| !progress.is_found(*i))
                .and_then(|i| hunt.steps[i].clue.clone()),
        };
        out.push(Outcome::StepFound {
            hunt: hunt.id.clone(),
            step: step.id.clone(),
            found: progress.found_count,
            next_clue,
        });
    }

    fn reward(
        &self,
        state: &mut UserState,
        user: &str,
        t: Timestamp,
        h: usize,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let Some(reward) = hunt.reward else { return };
        let pool = &self.catalog.pools[reward.pool];
        let deny = |reason| Outcome::RewardDenied {
            hunt: hunt.id.clone(),
            pool: pool.id.clone(),
            reason,
        };
        if !in_audience(hunt, user, &state.traits) {
            out.push(deny(DenyReason::NotInAudience));
            return;
        }
        let held = state.rewards.iter().filter(|g| g.pool == pool.id).count();
        if held >= reward.per_user as usize {
            out.push(deny(DenyReason::PerUserLimit));
            return;
        }
        match alloc.allocate(&self.catalog, h, reward.pool) {
            Ok(code) => {
                state.rewards.push(Grant {
                    hunt: hunt.id.clone(),
                    pool: pool.id.clone(),
                    code: code.clone(),
                    at: t,
                });
                out.push(Outcome::RewardGranted {
                    hunt: hunt.id.clone(),
                    pool: pool.id.clone(),
                    code,
                });
            }
            Err(reason) => out.push(deny(reason)),
        }
    }
}

/// Whether a customer with these traits is in the hunt's audience (everyone, without
/// one). A failing audience condition counts as a failure and as "not in it".
fn in_audience(hunt: &crate::catalog::Hunt, user: &str, traits: &Traits) -> bool {
    let Some(aud) = &hunt.audience else {
        return true;
    };
    aud.eval(&Input {
        event: None,
        user_id: user,
        traits,
        progress: None,
    })
}

/// What a customer sees of one hunt (`GET /v1/users/{user}/hunts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HuntView {
    pub hunt: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `any` or `sequence`.
    pub order: &'static str,
    pub steps: usize,
    /// Steps needed to complete.
    pub complete_after: u32,
    /// The steps found so far, in file order.
    pub found: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// The clue of the next step to look for, if the hunt is not completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_clue: Option<Arc<str>>,
    /// When the hunt ends, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl Engine {
    /// The hunts active at `now` that the customer may see: those they take part in,
    /// and those whose audience they are in, in file order, with progress and the next
    /// clue. Reads the state only.
    pub fn visible_hunts(&self, state: &UserState, user: &str, now: Timestamp) -> Vec<HuntView> {
        let mut out = Vec::new();
        for hunt in &self.catalog.hunts {
            if !hunt.is_active(now) {
                continue;
            }
            // Read as the customer's next event would lay it out.
            let progress = state.hunts.iter().find(|p| *p.hunt() == hunt.id).map(|p| {
                let mut p = std::borrow::Cow::Borrowed(p);
                if !Arc::ptr_eq(p.layout(), &hunt.layout) {
                    p.to_mut().rebind(hunt);
                }
                p
            });
            let progress = progress.as_deref();
            if progress.is_none() && !in_audience(hunt, user, &state.traits) {
                continue;
            }
            let n = hunt.steps.len();
            let is_found = |s: usize| progress.is_some_and(|p| p.is_found(s));
            let completed_at = progress.and_then(|p| p.completed_at);
            let next_clue = match (completed_at, hunt.order) {
                (Some(_), _) => None,
                (None, Order::Sequence) => {
                    let next = progress.map_or(0, |p| p.found_count as usize);
                    hunt.steps.get(next).and_then(|s| s.clue.clone())
                }
                (None, Order::Any) => (0..n)
                    .find(|s| !is_found(*s))
                    .and_then(|s| hunt.steps[s].clue.clone()),
            };
            out.push(HuntView {
                hunt: hunt.id.clone(),
                title: hunt.title.clone(),
                order: match hunt.order {
                    Order::Any => "any",
                    Order::Sequence => "sequence",
                },
                steps: n,
                complete_after: hunt.complete_after,
                found: (0..n)
                    .filter(|s| is_found(*s))
                    .map(|s| hunt.step_ids[s].clone())
                    .collect(),
                completed_at,
                next_clue,
                until: hunt.until,
            });
        }
        out
    }
}

/// Merges event traits into a profile: `null` removes a trait; past [`TRAITS_MAX`]
/// new traits are not stored.
pub fn merge_traits(profile: &mut Traits, traits: &Map<String, Json>) {
    for (k, v) in traits {
        if v.is_null() {
            profile.remove(k);
        } else if let Some(old) = profile.get(k) {
            if old != v {
                profile.insert(k, v.clone());
            }
        } else if profile.len() < TRAITS_MAX {
            profile.insert(k, v.clone());
        }
    }
}
