//! `hunt_core::plan`: the changes between two versions, whom each touches, and what is
//! refused; and the engine laying progress out by id when a version changes.

use std::collections::HashMap;

use hunt_core::engine::{Engine, Event, LocalAllocator, UserState};
use hunt_core::plan::{ChangeKind, Plan, refusals};
use hunt_core::testing::describe;
use hunt_core::time::Timestamp;

const T0: i64 = 1_795_766_400_000;

fn file(order: &str, complete_after: u32, steps: &[(&str, u32)], codes: &str) -> String {
    let mut y = format!(
        "version: 1\npools:\n  - {{ id: p, codes: [{codes}] }}\nhunts:\n  - id: h\n    order: {order}\n    complete_after: {complete_after}\n    reward: {{ pool: p, per_user: 1 }}\n    steps:\n"
    );
    for (id, count) in steps {
        y += &format!("      - {{ id: {id}, on: {id}, count: {count} }}\n");
    }
    y
}

/// Customers, each given as the event types they sent, in order, under `src`.
fn customers(src: &str, sent: &[(&str, &[&str])]) -> HashMap<String, UserState> {
    let catalog = crate::load(src);
    let engine = Engine::new(catalog.clone());
    let mut alloc = LocalAllocator::new(&catalog);
    let mut users = HashMap::new();
    let mut out = Vec::new();
    for (i, (user, kinds)) in sent.iter().enumerate() {
        for (j, kind) in kinds.iter().enumerate() {
            let e = Event {
                id: format!("e{i}-{j}"),
                kind: kind.to_string(),
                user: user.to_string(),
                time: None,
                data: Default::default(),
                traits: Default::default(),
            };
            let state: &mut UserState = users.entry(user.to_string()).or_default();
            engine.apply(
                state,
                &e,
                Timestamp(T0 + j as i64 * 1000),
                &mut alloc,
                &mut out,
            );
        }
    }
    users
}

fn counted(old: &str, new: &str, users: &HashMap<String, UserState>) -> Plan {
    let (old, new) = (crate::load(old), crate::load(new));
    let mut plan = Plan::new(&old, &new);
    for u in users.values() {
        plan.count(&old, &new, u);
    }
    plan
}

fn customers_of(plan: &Plan, kind: ChangeKind) -> Option<u64> {
    plan.changes
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {:#?}", plan.changes))
        .customers
}

#[test]
fn a_sequence_reordered_counts_the_customers_who_lose_finds_past_their_place() {
    let old = file("sequence", 3, &[("a", 1), ("b", 1), ("c", 1)], "X1");
    let new = file("sequence", 3, &[("b", 1), ("a", 1), ("c", 1)], "X1");
    // ann found a: her place in [b, a, c] is 0, she loses a. bo found a and b: keeps both.
    let users = customers(&old, &[("ann", &["a"]), ("bo", &["a", "b"]), ("cy", &[])]);
    let plan = counted(&old, &new, &users);
    assert_eq!(plan.changes.len(), 1, "{:#?}", plan.changes);
    assert_eq!(customers_of(&plan, ChangeKind::StepsReordered), Some(1));
    assert!(
        plan.changes[0]
            .describe()
            .ends_with(": 1 customer loses finds past their place"),
        "{}",
        plan.changes[0].describe()
    );
}

#[test]
fn a_lowered_completion_rule_completes_at_the_next_event_whatever_it_is() {
    let old = file("any", 3, &[("a", 1), ("b", 1), ("c", 1)], "X1, X2");
    let new = file("any", 2, &[("a", 1), ("b", 1), ("c", 1)], "X1, X2");
    let mut users = customers(&old, &[("ann", &["a", "b"]), ("bo", &["a"])]);
    let plan = counted(&old, &new, &users);
    assert_eq!(
        customers_of(&plan, ChangeKind::CompleteAfterChanged),
        Some(1)
    );

    // Under the new version, ann's next event (of a type no step takes) completes it.
    let catalog = crate::load(&new);
    let engine = Engine::new(catalog.clone());
    let mut alloc = LocalAllocator::new(&catalog);
    let mut out = Vec::new();
    let e = Event {
        id: "n1".into(),
        kind: "unrelated".into(),
        user: "ann".into(),
        time: None,
        data: Default::default(),
        traits: Default::default(),
    };
    engine.apply(
        users.get_mut("ann").unwrap(),
        &e,
        Timestamp(T0 + 60_000),
        &mut alloc,
        &mut out,
    );
    let got: Vec<String> = out.iter().map(|o| describe("ann", o)).collect();
    assert_eq!(got, ["ann completed h", "ann granted h X1"]);
    out.clear();
    let e = Event {
        user: "bo".into(),
        id: "n2".into(),
        ..e
    };
    engine.apply(
        users.get_mut("bo").unwrap(),
        &e,
        Timestamp(T0 + 60_000),
        &mut alloc,
        &mut out,
    );
    assert!(out.is_empty(), "bo has one find: {out:?}");
}

#[test]
fn a_lowered_count_counts_the_customers_it_reaches() {
    let old = file("any", 2, &[("a", 3), ("b", 1)], "X1");
    let new = file("any", 2, &[("a", 2), ("b", 1)], "X1");
    let users = customers(
        &old,
        &[("ann", &["a", "a"]), ("bo", &["a"]), ("cy", &["b"])],
    );
    let plan = counted(&old, &new, &users);
    assert_eq!(
        customers_of(&plan, ChangeKind::StepChanged),
        Some(1),
        "only ann's count reaches 2"
    );
}

#[test]
fn granted_codes_must_stay_in_their_pool() {
    let new = crate::load(&file("any", 1, &[("a", 1)], "X1, X3"));
    assert!(refusals(&new, [("h", "p", "X1")]).is_empty());
    let r = refusals(&new, [("h", "p", "X1"), ("h", "p", "X2")]);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].reason
            .contains("no longer holds 1 code(s) already granted (for example X2)"),
        "{r:?}"
    );
    let r = refusals(&new, [("h", "p", "X1"), ("h", "p", "X2"), ("h", "p", "X3")]);
    assert!(
        r[0].reason
            .contains("would hold 2 codes, but 3 are already granted"),
        "{r:?}"
    );
    // A grant from a pool the new file does not have refuses nothing.
    assert!(refusals(&new, [("h", "gone", "Z9")]).is_empty());
}

#[test]
fn identical_files_change_nothing() {
    let f = file("sequence", 2, &[("a", 1), ("b", 2)], "X1");
    let plan = Plan::new(&crate::load(&f), &crate::load(&f));
    assert!(plan.changes.is_empty(), "{:#?}", plan.changes);
}

#[test]
fn a_step_added_before_found_steps_of_a_sequence_counts_those_who_lose_their_place() {
    let old = file("sequence", 3, &[("a", 1), ("b", 1), ("c", 1)], "X1");
    let new = file(
        "sequence",
        4,
        &[("x", 1), ("a", 1), ("b", 1), ("c", 1)],
        "X1",
    );
    // ann found a and b; her place in [x, a, b, c] is 0: she loses both. cy's event
    // counted for no step (c is not next), so she has no progress.
    let users = customers(&old, &[("ann", &["a", "b"]), ("cy", &["c"])]);
    let plan = counted(&old, &new, &users);
    assert_eq!(
        customers_of(&plan, ChangeKind::StepsReordered),
        Some(1),
        "{:#?}",
        plan.changes
    );
    assert_eq!(customers_of(&plan, ChangeKind::StepAdded), Some(1));
    // Added at the end, nobody loses anything.
    let new = file(
        "sequence",
        4,
        &[("a", 1), ("b", 1), ("c", 1), ("x", 1)],
        "X1",
    );
    let plan = counted(&old, &new, &users);
    assert!(
        plan.changes
            .iter()
            .all(|c| c.kind != ChangeKind::StepsReordered),
        "{:#?}",
        plan.changes
    );
}
