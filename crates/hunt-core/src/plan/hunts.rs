//! What changed in one hunt: its own fields, then its steps (added, changed, removed,
//! reordered).

use std::sync::Arc;

use crate::catalog::{Catalog, Hunt, Step};
use crate::spec::Order;

use super::{Change, ChangeKind};

fn order_name(o: Order) -> &'static str {
    match o {
        Order::Any => "any",
        Order::Sequence => "sequence",
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".into(), |v| v.to_string())
}

pub(super) fn hunt(
    old_cat: &Catalog,
    old: &Hunt,
    new_cat: &Catalog,
    new: &Hunt,
    out: &mut Vec<Change>,
) {
    title_window_audience(old, new, out);
    order(old, new, out);
    complete_after(old, new, out);
    reward_and_notify(old_cat, old, new_cat, new, out);
    steps(old, new, out);
}

/// A change to one of hunt `id`'s own fields.
fn changed(id: &Arc<str>, what: String, effect: &str) -> Change {
    Change::new(
        ChangeKind::HuntChanged,
        format!("hunt {id}: {what}"),
        effect,
    )
    .hunt(id)
}

/// The hunt's title, active window and audience.
fn title_window_audience(old: &Hunt, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
    if old.title != new.title {
        out.push(changed(
            id,
            format!("title {} → {}", opt(&old.title), opt(&new.title)),
            "shown from now on",
        ));
    }
    if old.from != new.from || old.until != new.until {
        out.push(changed(
            id,
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
            id,
            format!("audience {} → {}", opt(&aud(old)), opt(&aud(new))),
            "customers already taking part go on; the new audience decides who joins \
             and who is rewarded at completion",
        ));
    }
}

/// The order its steps must be found in.
fn order(old: &Hunt, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
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
}

/// How many steps complete it.
fn complete_after(old: &Hunt, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
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
}

/// Its reward, cap on winners and sinks.
fn reward_and_notify(
    old_cat: &Catalog,
    old: &Hunt,
    new_cat: &Catalog,
    new: &Hunt,
    out: &mut Vec<Change>,
) {
    let id = &new.id;
    let reward = |c: &Catalog, h: &Hunt| {
        h.reward
            .map(|r| format!("{} (per_user {})", c.pools[r.pool].id, r.per_user))
    };
    if reward(old_cat, old) != reward(new_cat, new) {
        out.push(changed(
            id,
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
            id,
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
            id,
            format!(
                "notify [{}] → [{}]",
                notify(old_cat, old).join(", "),
                notify(new_cat, new).join(", ")
            ),
            "outcomes from now on go to the new sinks",
        ));
    }
}

/// Its steps: added, changed, removed, reordered.
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
        step(id, o, s, out);
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
    reordered(old, new, out);
}

/// What changed in step `s` (`o` in the old version) of hunt `id`.
fn step(id: &Arc<str>, o: &Step, s: &Step, out: &mut Vec<Change>) {
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

/// Steps kept in both versions that now come in another order, or, in a sequence, steps
/// added before steps already there.
fn reordered(old: &Hunt, new: &Hunt, out: &mut Vec<Change>) {
    let id = &new.id;
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
