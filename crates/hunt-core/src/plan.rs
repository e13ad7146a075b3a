//! What a new hunts-file version changes, hunt by hunt and step by step, and how many
//! customers in progress each change touches (`hunt diff`, `PUT /v1/config?dry_run=true`).
//!
//! [`Plan::new`] compares two catalogs. [`Plan::count`] then takes customers one at a
//! time and adds up whom each change touches, by laying their progress out under both
//! versions exactly as the engine will ([`HuntProgress::rebind`]). [`Plan::check_grants`]
//! refuses what cannot be made safely: a pool shrunk below the codes already granted, or
//! a granted code no longer in its pool. The rules themselves are in `docs/engine.md`,
//! "When the hunts file changes".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Codes, Hunt, Pool, Sink};
use crate::engine::{HuntProgress, UserState};
use crate::spec::Order;

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Arc<str>>,
    pub reason: String,
}

/// Everything a new version changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

fn order_name(o: Order) -> &'static str {
    match o {
        Order::Any => "any",
        Order::Sequence => "sequence",
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".into(), |v| v.to_string())
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

/// A progress record as the engine lays it out under `catalog` (`None` if the hunt is not
/// in it).
fn laid_out(catalog: &Catalog, p: &HuntProgress) -> Option<HuntProgress> {
    let h = catalog.hunt_index(p.hunt())?;
    let mut p = p.clone();
    p.rebind(&catalog.hunts[h]);
    Some(p)
}

fn in_progress(p: Option<&HuntProgress>) -> bool {
    p.is_some_and(|p| p.completed_at.is_none())
}

fn has_found(p: &HuntProgress, step: &str) -> bool {
    p.found_ids().any(|s| &**s == step)
}

/// Whether change `c` touches the customer whose record is `p`.
fn touches(
    c: &Change,
    old: &Catalog,
    new: &Catalog,
    p: &HuntProgress,
    before: Option<&HuntProgress>,
    after: Option<&HuntProgress>,
) -> bool {
    let step = c.step.as_deref().unwrap_or("");
    match c.kind {
        ChangeKind::HuntAdded => p.completed_at.is_none(),
        ChangeKind::HuntRemoved | ChangeKind::HuntChanged => in_progress(before),
        // A step that comes back keeps the finds its records still hold.
        ChangeKind::StepAdded => in_progress(before) && !after.is_some_and(|a| has_found(a, step)),
        ChangeKind::StepRemoved => {
            in_progress(before) && before.is_some_and(|b| has_found(b, step))
        }
        ChangeKind::StepsReordered | ChangeKind::OrderChanged => {
            in_progress(before)
                && match (before, after) {
                    // Finds of steps in both versions that the new layout drops.
                    (Some(b), Some(a)) => b
                        .found_ids()
                        .any(|s| a.steps().contains(s) && !has_found(a, s)),
                    _ => false,
                }
        }
        ChangeKind::StepChanged => {
            if !in_progress(before) || after.is_none_or(|a| has_found(a, step)) {
                return false;
            }
            let (Some(o), Some(n)) = (
                old.hunt_index(c.hunt.as_deref().unwrap_or("")),
                new.hunt_index(c.hunt.as_deref().unwrap_or("")),
            ) else {
                return false;
            };
            let count_of = |h: &Hunt| h.steps.iter().find(|s| &*s.id == step).map(|s| s.count);
            match (count_of(&old.hunts[o]), count_of(&new.hunts[n])) {
                (Some(a), Some(b)) if b < a => after.is_some_and(|x| x.count_of(step) >= b),
                (Some(a), Some(b)) if b > a => true,
                _ => true,
            }
        }
        ChangeKind::CompleteAfterChanged => {
            let id = c.hunt.as_deref().unwrap_or("");
            let (Some(o), Some(n)) = (old.hunt_index(id), new.hunt_index(id)) else {
                return false;
            };
            let (was, now) = (old.hunts[o].complete_after, new.hunts[n].complete_after);
            in_progress(before) && after.is_some_and(|a| now > was || a.found_count >= now)
        }
        _ => false,
    }
}

fn hunt(old_cat: &Catalog, old: &Hunt, new_cat: &Catalog, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
    let changed = |what: String, effect: &str| {
        Change::new(
            ChangeKind::HuntChanged,
            format!("hunt {id}: {what}"),
            effect,
        )
        .hunt(id)
    };
    if old.title != new.title {
        out.push(changed(
            format!("title {} → {}", opt(&old.title), opt(&new.title)),
            "shown from now on",
        ));
    }
    if old.from != new.from || old.until != new.until {
        out.push(changed(
            format!(
                "active {}..{} → {}..{}",
                opt(&old.from),
                opt(&old.until),
                opt(&new.from),
                opt(&new.until)
            ),
            "events are judged by the new window from now on; progress is kept",
        ));
    }
    let aud = |h: &Hunt| h.audience.as_ref().map(|a| a.source().to_string());
    if aud(old) != aud(new) {
        out.push(changed(
            format!("audience {} → {}", opt(&aud(old)), opt(&aud(new))),
            "customers already taking part go on; the new audience decides who joins \
             and who is rewarded at completion",
        ));
    }
    if old.order != new.order {
        let effect = match new.order {
            Order::Sequence => {
                "each customer's place is the longest prefix of the steps, in order, they \
                 had found; finds past it are dropped"
            }
            Order::Any => "finds are kept; the remaining steps may be found in any order",
        };
        out.push(
            Change::new(
                ChangeKind::OrderChanged,
                format!(
                    "hunt {id}: order {} → {}",
                    order_name(old.order),
                    order_name(new.order)
                ),
                effect,
            )
            .hunt(id),
        );
    }
    if old.complete_after != new.complete_after {
        let (word, effect) = if new.complete_after < old.complete_after {
            (
                "lowered",
                "customers whose finds reach it complete the hunt at their next event while \
                 it is active",
            )
        } else {
            ("raised", "customers in progress need more finds")
        };
        out.push(
            Change::new(
                ChangeKind::CompleteAfterChanged,
                format!(
                    "hunt {id}: complete_after {word} {} → {}",
                    old.complete_after, new.complete_after
                ),
                effect,
            )
            .hunt(id),
        );
    }
    let reward = |c: &Catalog, h: &Hunt| {
        h.reward
            .map(|r| format!("{} (per_user {})", c.pools[r.pool].id, r.per_user))
    };
    if reward(old_cat, old) != reward(new_cat, new) {
        out.push(changed(
            format!(
                "reward {} → {}",
                opt(&reward(old_cat, old)),
                opt(&reward(new_cat, new))
            ),
            "customers who complete from now on get the new reward; codes granted are kept",
        ));
    }
    if old.max_winners != new.max_winners {
        out.push(changed(
            format!(
                "max_winners {} → {}",
                opt(&old.max_winners),
                opt(&new.max_winners)
            ),
            "counts the winners so far; below them, nobody else wins, and nobody loses a code",
        ));
    }
    let notify = |c: &Catalog, h: &Hunt| {
        h.notify
            .iter()
            .map(|s| c.sinks[*s].id.to_string())
            .collect::<Vec<_>>()
    };
    if notify(old_cat, old) != notify(new_cat, new) {
        out.push(changed(
            format!(
                "notify [{}] → [{}]",
                notify(old_cat, old).join(", "),
                notify(new_cat, new).join(", ")
            ),
            "outcomes from now on go to the new sinks",
        ));
    }
    steps(old, new, out);
}

fn steps(old: &Hunt, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
    for s in &new.steps {
        let Some(o) = old.steps.iter().find(|o| o.id == s.id) else {
            out.push(
                Change::new(
                    ChangeKind::StepAdded,
                    format!("step {} added to hunt {id}", s.id),
                    "customers in progress have not found it",
                )
                .hunt(id)
                .step(&s.id),
            );
            continue;
        };
        let mut what = Vec::new();
        if o.on != s.on {
            what.push(format!("on {} → {}", o.on, s.on));
        }
        if o.when.source() != s.when.source() {
            what.push(format!(
                "when {:?} → {:?}",
                o.when.source(),
                s.when.source()
            ));
        }
        if o.count != s.count {
            what.push(format!("count {} → {}", o.count, s.count));
        }
        if o.within != s.within {
            what.push(format!("within {} → {}", opt(&o.within), opt(&s.within)));
        }
        if o.clue != s.clue {
            what.push("clue changed".to_string());
        }
        if !what.is_empty() {
            let effect = if o.count > s.count {
                "finds are kept; a customer whose count reaches the new one finds the step at \
                 their next matching event"
            } else {
                "finds are kept; the new rule judges events from now on, counts so far stay"
            };
            out.push(
                Change::new(
                    ChangeKind::StepChanged,
                    format!("step {} of hunt {id}: {}", s.id, what.join(", ")),
                    effect,
                )
                .hunt(id)
                .step(&s.id),
            );
        }
    }
    for o in &old.steps {
        if !new.steps.iter().any(|s| s.id == o.id) {
            out.push(
                Change::new(
                    ChangeKind::StepRemoved,
                    format!("step {} removed from hunt {id}", o.id),
                    "its finds and counts are dropped",
                )
                .hunt(id)
                .step(&o.id),
            );
        }
    }
    let kept_old: Vec<&Arc<str>> = old
        .step_ids
        .iter()
        .filter(|s| new.step_ids.contains(s))
        .collect();
    let kept_new: Vec<&Arc<str>> = new
        .step_ids
        .iter()
        .filter(|s| old.step_ids.contains(s))
        .collect();
    // In a sequence, a step added before a step customers may have found moves their
    // place back as surely as a reorder does.
    let last_kept = new.step_ids.iter().rposition(|s| old.step_ids.contains(s));
    let inserted_before: Vec<&Arc<str>> = new
        .step_ids
        .iter()
        .enumerate()
        .filter(|(i, s)| !old.step_ids.contains(s) && last_kept.is_some_and(|l| *i < l))
        .map(|(_, s)| s)
        .collect();
    if kept_old == kept_new && new.order == Order::Sequence && !inserted_before.is_empty() {
        let list = inserted_before
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        out.push(
            Change::new(
                ChangeKind::StepsReordered,
                format!("sequence hunt {id}: step(s) {list} added before steps already there"),
                "each customer's place is the longest prefix of the new order they had \
                 found; finds past the new step are dropped",
            )
            .hunt(id),
        );
    }
    if kept_old != kept_new {
        let effect = match new.order {
            Order::Sequence => {
                "each customer's place is the longest prefix of the new order they had \
                 found; finds past it are dropped"
            }
            Order::Any => "finds are kept: an any-order hunt does not depend on order",
        };
        let list = |v: &[&Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        out.push(
            Change::new(
                ChangeKind::StepsReordered,
                format!(
                    "steps of hunt {id} reordered: [{}] → [{}]",
                    list(&kept_old).join(", "),
                    list(&kept_new).join(", ")
                ),
                effect,
            )
            .hunt(id),
        );
    }
}

fn codes_text(p: &Pool) -> String {
    match &p.codes {
        Codes::Listed(c) => format!("{} listed codes", c.len()),
        Codes::Generated {
            prefix,
            digits,
            start,
            count,
        } => format!(
            "{count} codes {prefix}{:0digits$}…",
            start,
            digits = *digits
        ),
    }
}

fn same_codes(a: &Pool, b: &Pool) -> bool {
    match (&a.codes, &b.codes) {
        (Codes::Listed(x), Codes::Listed(y)) => x == y,
        (
            Codes::Generated {
                prefix: p1,
                digits: d1,
                start: s1,
                count: c1,
            },
            Codes::Generated {
                prefix: p2,
                digits: d2,
                start: s2,
                count: c2,
            },
        ) => (p1, d1, s1, c1) == (p2, d2, s2, c2),
        _ => false,
    }
}

fn pools(old: &Catalog, new: &Catalog, out: &mut Vec<Change>) {
    for p in &new.pools {
        match old.pools.iter().find(|o| o.id == p.id) {
            None => out.push(
                Change::new(
                    ChangeKind::PoolAdded,
                    format!("pool {} added ({})", p.id, codes_text(p)),
                    "codes already granted from a pool of this id count as taken",
                )
                .pool(&p.id),
            ),
            Some(o) if !same_codes(o, p) => out.push(
                Change::new(
                    ChangeKind::PoolChanged,
                    format!("pool {}: {} → {}", p.id, codes_text(o), codes_text(p)),
                    "codes granted are kept and count as taken; the others are free",
                )
                .pool(&p.id),
            ),
            Some(_) => {}
        }
    }
    for o in &old.pools {
        if !new.pools.iter().any(|p| p.id == o.id) {
            out.push(
                Change::new(
                    ChangeKind::PoolRemoved,
                    format!("pool {} removed", o.id),
                    "customers keep the codes they were granted",
                )
                .pool(&o.id),
            );
        }
    }
}

fn sink_text(s: &Sink) -> String {
    format!(
        "{} (timeout {}, max_attempts {}, concurrency {})",
        s.url, s.timeout, s.max_attempts, s.concurrency
    )
}

fn sinks(old: &Catalog, new: &Catalog, out: &mut Vec<Change>) {
    for s in &new.sinks {
        match old.sinks.iter().find(|o| o.id == s.id) {
            None => out.push(
                Change::new(
                    ChangeKind::SinkAdded,
                    format!("sink {} added: {}", s.id, sink_text(s)),
                    "outcomes from now on are sent to it",
                )
                .sink(&s.id),
            ),
            Some(o)
                if sink_text(o) != sink_text(s)
                    || o.secret_env != s.secret_env
                    || o.max_age != s.max_age
                    || o.breaker_failures != s.breaker_failures
                    || o.breaker_open_for != s.breaker_open_for =>
            {
                out.push(
                    Change::new(
                        ChangeKind::SinkChanged,
                        format!("sink {}: {} → {}", s.id, sink_text(o), sink_text(s)),
                        "deliveries waiting and new ones use the new settings",
                    )
                    .sink(&s.id),
                )
            }
            Some(_) => {}
        }
    }
    for o in &old.sinks {
        if !new.sinks.iter().any(|s| s.id == o.id) {
            out.push(
                Change::new(
                    ChangeKind::SinkRemoved,
                    format!("sink {} removed", o.id),
                    "deliveries waiting for it stay in the queue and the dead-letter queue",
                )
                .sink(&o.id),
            );
        }
    }
}

/// Why the codes already granted do not fit `new`: per pool of the new file, the granted
/// codes it no longer holds.
pub fn refusals<'a>(
    new: &Catalog,
    grants: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Vec<Refusal> {
    // Per pool of the new file: codes granted, and those it lacks (with one example).
    let mut per_pool: HashMap<&str, (u64, u64, Option<&'a str>)> = HashMap::new();
    for (_, pool, code) in grants {
        let Some(p) = new.pools.iter().find(|p| &*p.id == pool) else {
            continue;
        };
        let e = per_pool.entry(&p.id).or_default();
        e.0 += 1;
        if p.index_of(code).is_none() {
            e.1 += 1;
            e.2.get_or_insert(code);
        }
    }
    let mut out: BTreeMap<&str, Refusal> = BTreeMap::new();
    for p in &new.pools {
        let Some((granted, missing, example)) = per_pool.get(&*p.id) else {
            continue;
        };
        let reason = if *granted > p.size() {
            format!(
                "pool {} would hold {} codes, but {} are already granted",
                p.id,
                p.size(),
                granted
            )
        } else if *missing > 0 {
            format!(
                "pool {} no longer holds {} code(s) already granted (for example {}); \
                 customers keep their codes, so a pool must keep every code it granted",
                p.id,
                missing,
                example.unwrap_or_default()
            )
        } else {
            continue;
        };
        out.insert(
            &p.id,
            Refusal {
                pool: Some(p.id.clone()),
                reason,
            },
        );
    }
    out.into_values().collect()
}
