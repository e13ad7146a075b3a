//! The engine: a pure, deterministic state machine.
//!
//! [`Engine::apply`] takes one event, one customer's state, the time the event was
//! received and a reward allocator, and returns the outcomes in a fixed order (hunts in
//! file order, then steps in file order). It owns no clock, no randomness and no I/O:
//! the same catalog, events, receive times and allocator answers give the same outcomes
//! on any machine. See `docs/engine.md` for the rules on late and out-of-order events.
//!
//! Here: a customer's state ([`UserState`]), the [`Allocator`] the engine asks for codes,
//! and the [`Engine`]. `event.rs`: events in, outcomes out. `traits.rs`: a customer's
//! traits. `progress.rs`: progress in one hunt and the layout it is kept by. `undo.rs`:
//! putting a state back after a panic. `apply.rs`: applying one event. `view.rs`: what a
//! customer sees of the hunts.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::time::Timestamp;

mod apply;
mod event;
mod progress;
mod traits;
mod undo;
mod view;

pub use event::{DenyReason, Event, Outcome};
pub use progress::{HuntProgress, Layout};
pub use traits::{TRAITS_MAX, Traits, merge_traits};
pub use undo::Undo;
pub use view::HuntView;

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

impl UserState {
    /// Binds progress to `catalog` by hunt id, so that lookups compare indexes. Done
    /// once per state and catalog: after a restore, or when a new hunts file is in
    /// force. Progress in hunts the catalog lacks is kept, and used again if they return.
    ///
    /// Binding lays each record out again by step id when the hunt's steps or order
    /// changed ([`HuntProgress::rebind`](progress::HuntProgress::rebind)). It happens at the customer's first event under
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

/// A reward code held by a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

    /// Whether an answer it gave was only "not now": its codes are elsewhere (a
    /// cluster's escrow) and must be fetched first. The caller then drops everything
    /// the event did and applies it again once they are here.
    fn stalled(&self) -> bool {
        false
    }
}

/// The in-memory allocator for one process lives with the shared pools it uses.
pub use crate::rewards::LocalAllocator;

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
}
