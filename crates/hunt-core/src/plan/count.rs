//! Whom a change touches: a customer's progress laid out under both versions, exactly
//! as the engine will lay it out.

use crate::catalog::{Catalog, Hunt};
use crate::engine::HuntProgress;

use super::{Change, ChangeKind};

/// A progress record as the engine lays it out under `catalog` (`None` if the hunt is not
/// in it).
pub(super) fn laid_out(catalog: &Catalog, p: &HuntProgress) -> Option<HuntProgress> {
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
pub(super) fn touches(
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
