//! Running a recorded stream through the engine in memory, and what it tells per hunt.
//!
//! Each event is received at its own time (or, without one, at the previous event's),
//! so a simulation replays the stream as it happened.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::engine::{DenyReason, Engine, Event, LocalAllocator, Outcome, UserState};
use crate::time::Timestamp;

/// Figures for one hunt.
#[derive(Debug, Clone, Serialize)]
pub struct HuntStats {
    pub hunt: Arc<str>,
    /// Customers who made any progress.
    pub participants: u64,
    /// Per step, in file order: how many customers found it.
    pub funnel: Vec<(Arc<str>, u64)>,
    pub completions: u64,
    pub rewards_granted: u64,
    pub rewards_denied: Vec<(DenyReason, u64)>,
    pub trails_gone_cold: u64,
}

/// Figures for one pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    pub pool: Arc<str>,
    pub size: u64,
    pub granted: u64,
    /// When the last code was granted, if the pool ran out.
    pub ran_out_at: Option<Timestamp>,
}

/// A simulation in progress.
pub struct Simulation {
    engine: Engine,
    alloc: LocalAllocator,
    users: HashMap<String, UserState>,
    hunts: Vec<HuntAcc>,
    ran_out: Vec<Option<Timestamp>>,
    pub events: u64,
    pub outcomes: u64,
    last_time: Timestamp,
    scratch: Vec<Outcome>,
}

#[derive(Default)]
struct HuntAcc {
    participants: u64,
    found: Vec<u64>,
    completions: u64,
    granted: u64,
    denied: HashMap<DenyReason, u64>,
    cold: u64,
}

impl Simulation {
    pub fn new(catalog: Arc<Catalog>) -> Simulation {
        let hunts = catalog
            .hunts
            .iter()
            .map(|h| HuntAcc {
                found: vec![0; h.steps.len()],
                ..HuntAcc::default()
            })
            .collect();
        Simulation {
            alloc: LocalAllocator::new(&catalog),
            ran_out: vec![None; catalog.pools.len()],
            engine: Engine::new(catalog),
            users: HashMap::new(),
            hunts,
            events: 0,
            outcomes: 0,
            last_time: Timestamp(0),
            scratch: Vec::new(),
        }
    }

    /// Applies one event; returns its outcomes.
    pub fn apply(&mut self, event: &Event) -> &[Outcome] {
        let received = event.time.unwrap_or(self.last_time).max(self.last_time);
        self.last_time = received;
        self.events += 1;
        let state = match self.users.get_mut(&event.user) {
            Some(s) => s,
            None => self.users.entry(event.user.clone()).or_default(),
        };
        let joined_before = state.hunts().len();
        self.scratch.clear();
        self.engine
            .apply(state, event, received, &mut self.alloc, &mut self.scratch);
        let catalog = self.engine.catalog();
        for p in &state.hunts()[joined_before..] {
            if let Some(h) = catalog.hunt_index(p.hunt()) {
                self.hunts[h].participants += 1;
            }
        }
        for o in &self.scratch {
            let Some(h) = catalog.hunt_index(o.hunt()) else {
                continue;
            };
            let acc = &mut self.hunts[h];
            match o {
                Outcome::StepFound { step, .. } => {
                    if let Some(s) = catalog.hunts[h].step_ids.iter().position(|x| x == step) {
                        acc.found[s] += 1;
                    }
                }
                Outcome::HuntCompleted { .. } => acc.completions += 1,
                Outcome::RewardGranted { .. } => {
                    acc.granted += 1;
                    if let Some(r) = catalog.hunts[h].reward
                        && self.alloc.used(r.pool) >= catalog.pools[r.pool].size()
                        && self.ran_out[r.pool].is_none()
                    {
                        self.ran_out[r.pool] = Some(received);
                    }
                }
                Outcome::RewardDenied { reason, .. } => {
                    *acc.denied.entry(*reason).or_default() += 1
                }
                Outcome::TrailCold { .. } => acc.cold += 1,
            }
        }
        self.outcomes += self.scratch.len() as u64;
        &self.scratch
    }

    pub fn hunt_stats(&self) -> Vec<HuntStats> {
        let catalog = self.engine.catalog();
        catalog
            .hunts
            .iter()
            .zip(&self.hunts)
            .map(|(h, acc)| {
                let mut denied: Vec<_> = acc.denied.iter().map(|(r, n)| (*r, *n)).collect();
                denied.sort();
                HuntStats {
                    hunt: h.id.clone(),
                    participants: acc.participants,
                    funnel: h
                        .step_ids
                        .iter()
                        .cloned()
                        .zip(acc.found.iter().copied())
                        .collect(),
                    completions: acc.completions,
                    rewards_granted: acc.granted,
                    rewards_denied: denied,
                    trails_gone_cold: acc.cold,
                }
            })
            .collect()
    }

    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let catalog = self.engine.catalog();
        catalog
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| PoolStats {
                pool: p.id.clone(),
                size: p.size(),
                granted: self.alloc.used(i),
                ran_out_at: self.ran_out[i],
            })
            .collect()
    }

    pub fn customers(&self) -> usize {
        self.users.len()
    }
}
