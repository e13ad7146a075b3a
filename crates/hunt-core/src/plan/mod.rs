//! What a new hunts-file version changes, hunt by hunt and step by step, and how many
//! customers in progress each change touches (`hunt diff`, `PUT /v1/config?dry_run=true`).
//!
//! [`Plan::new`] compares two catalogs. [`Plan::count`] then takes customers one at a
//! time and adds up whom each change touches, by laying their progress out under both
//! versions exactly as the engine will ([`HuntProgress::rebind`](crate::engine::HuntProgress::rebind)). [`Plan::check_grants`]
//! refuses what cannot be made safely: a pool shrunk below the codes already granted, or
//! a granted code no longer in its pool. The rules themselves are in `docs/engine.md`,
//! "When the hunts file changes".
//!
//! Here: the plan, its changes and counting. `hunts.rs`, `pools.rs` and `sinks.rs`: what
//! changed in each. `count.rs`: whom a change touches. `grants.rs`: the codes already
//! granted against a new version.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::engine::UserState;

mod count;
mod grants;
mod hunts;
mod pools;
mod sinks;

use count::{laid_out, touches};
pub use grants::refusals;
use hunts::hunt;
use pools::pools;
use sinks::sinks;

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    pub kind: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<Arc<str>>,
    /// What changed, e.g. "count 2 → 3".
    pub detail: String,
    /// What it does to customers already in progress.
    pub effect: String,
    /// How many customers it touches (see [`ChangeKind`]), once counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customers: Option<u64>,
}

/// The kinds of change, and whom each counts in [`Change::customers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Customers whose progress, kept while the hunt was out of the file, resumes.
    HuntAdded,
    /// Customers in progress, whose progress is kept but stops.
    HuntRemoved,
    /// Customers in progress, who now also need the step.
    StepAdded,
    /// Customers in progress who had found the step and lose that find.
    StepRemoved,
    /// Customers in progress in a sequence who lose finds past their new place.
    StepsReordered,
    /// Customers in progress who have not yet found the step and must match it anew
    /// (its event type or condition changed), or whose count now reaches the new one.
    StepChanged,
    /// Customers in progress who lose finds past their place (to `sequence`), or none.
    OrderChanged,
    /// Customers in progress whose finds now complete the hunt at their next event
    /// (lowered), or who now need more finds (raised).
    CompleteAfterChanged,
    /// Customers in progress (the new rule applies from their next event).
    HuntChanged,
    /// Customers holding codes from the pool (they keep them).
    PoolAdded,
    PoolRemoved,
    PoolChanged,
    SinkAdded,
    SinkRemoved,
    SinkChanged,
    SettingsChanged,
}

/// Why a version cannot be put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Refusal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Arc<str>>,
    pub reason: String,
}

/// Everything a new version changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Why it cannot be put in force (empty when it can).
    pub refusals: Vec<Refusal>,
    /// Customers looked at by [`Plan::count`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customers: Option<u64>,
}

impl Change {
    fn new(kind: ChangeKind, detail: String, effect: &str) -> Change {
        Change {
            kind,
            hunt: None,
            step: None,
            pool: None,
            sink: None,
            detail,
            effect: effect.to_string(),
            customers: None,
        }
    }

    fn hunt(mut self, h: &Arc<str>) -> Change {
        self.hunt = Some(h.clone());
        self
    }

    fn step(mut self, s: &Arc<str>) -> Change {
        self.step = Some(s.clone());
        self
    }

    fn pool(mut self, p: &Arc<str>) -> Change {
        self.pool = Some(p.clone());
        self
    }

    fn sink(mut self, s: &Arc<str>) -> Change {
        self.sink = Some(s.clone());
        self
    }

    /// One line for a person: what changed, and whom it touches if counted.
    pub fn describe(&self) -> String {
        let mut line = self.detail.clone();
        if let Some(n) = self.customers {
            let (one, many) = match self.kind {
                ChangeKind::HuntAdded => (
                    "customer resumes the progress they kept",
                    "customers resume the progress they kept",
                ),
                ChangeKind::HuntRemoved => (
                    "customer in progress keeps it, but it stops",
                    "customers in progress keep it, but it stops",
                ),
                ChangeKind::StepAdded => (
                    "customer in progress now needs it",
                    "customers in progress now need it",
                ),
                ChangeKind::StepRemoved => ("customer loses a find", "customers lose a find"),
                ChangeKind::StepsReordered | ChangeKind::OrderChanged => (
                    "customer loses finds past their place",
                    "customers lose finds past their place",
                ),
                ChangeKind::StepChanged | ChangeKind::CompleteAfterChanged => {
                    ("customer is affected", "customers are affected")
                }
                ChangeKind::HuntChanged => ("customer in progress", "customers in progress"),
                ChangeKind::PoolAdded | ChangeKind::PoolRemoved | ChangeKind::PoolChanged => (
                    "customer holds codes from it (and keeps them)",
                    "customers hold codes from it (and keep them)",
                ),
                _ => ("customer", "customers"),
            };
            line += &format!(": {} {}", thousands(n), if n == 1 { one } else { many });
        }
        line
    }
}

/// `1204` as `1,204`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Plan {
    /// The changes from `old` to `new`: settings, pools, sinks, then hunts in the new
    /// file's order (removed hunts last), each hunt's own fields before its steps.
    pub fn new(old: &Catalog, new: &Catalog) -> Plan {
        let mut changes = Vec::new();
        if old.max_lateness != new.max_lateness {
            changes.push(Change::new(
                ChangeKind::SettingsChanged,
                format!(
                    "settings.max_lateness {} → {}",
                    old.max_lateness, new.max_lateness
                ),
                "events received from now on are judged by it",
            ));
        }
        pools(old, new, &mut changes);
        sinks(old, new, &mut changes);
        for h in &new.hunts {
            match old.hunt_index(&h.id) {
                Some(o) => hunt(old, &old.hunts[o], new, h, &mut changes),
                None => changes.push(
                    Change::new(
                        ChangeKind::HuntAdded,
                        format!("hunt {} added", h.id),
                        "customers join as usual; progress kept from an earlier version \
                         with this hunt id resumes",
                    )
                    .hunt(&h.id),
                ),
            }
        }
        for h in &old.hunts {
            if new.hunt_index(&h.id).is_none() {
                changes.push(
                    Change::new(
                        ChangeKind::HuntRemoved,
                        format!("hunt {} removed", h.id),
                        "progress and codes are kept; it counts again if the hunt comes back",
                    )
                    .hunt(&h.id),
                );
            }
        }
        Plan {
            changes,
            refusals: Vec::new(),
            customers: None,
        }
    }

    /// Refuses the version if the codes already granted do not fit it: `grants` are
    /// (hunt, pool, code) of every customer.
    pub fn check_grants<'a>(
        &mut self,
        new: &Catalog,
        grants: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        self.refusals = refusals(new, grants);
    }

    /// Adds the customers `state` touches to each change's count.
    pub fn count(&mut self, old: &Catalog, new: &Catalog, state: &UserState) {
        *self.customers.get_or_insert(0) += 1;
        for c in &mut self.changes {
            c.customers.get_or_insert(0);
        }
        for p in state.hunts() {
            let before = laid_out(old, p);
            let after = laid_out(new, p);
            for c in &mut self.changes {
                if c.hunt.as_deref() != Some(&**p.hunt()) {
                    continue;
                }
                if touches(c, old, new, p, before.as_ref(), after.as_ref()) {
                    *c.customers.get_or_insert(0) += 1;
                }
            }
        }
        for c in &mut self.changes {
            let pooly = matches!(
                c.kind,
                ChangeKind::PoolAdded | ChangeKind::PoolRemoved | ChangeKind::PoolChanged
            );
            if pooly
                && state
                    .rewards
                    .iter()
                    .any(|g| c.pool.as_deref() == Some(&*g.pool))
            {
                *c.customers.get_or_insert(0) += 1;
            }
        }
    }

    /// Adds another part's counts (the same plan, counted over other customers).
    pub fn add_counts(&mut self, other: &Plan) {
        if let Some(n) = other.customers {
            *self.customers.get_or_insert(0) += n;
        }
        for (c, o) in self.changes.iter_mut().zip(&other.changes) {
            if let Some(n) = o.customers {
                *c.customers.get_or_insert(0) += n;
            }
        }
    }
}
