//! The engine's rules, given a hunts file, when events arrive, then these outcomes.

use std::collections::HashMap;
use std::sync::Arc;

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Engine, Event, LocalAllocator, Outcome, UserState};
use hunt_core::testing::describe;
use hunt_core::time::Timestamp;
use serde_json::json;

const T0: i64 = 1_795_766_400_000; // 2026-11-27T08:00:00Z

/// Applies events (user, type, data, traits, event time offset in s, receive offset in s)
/// and returns every outcome in the test syntax.
struct World {
    engine: Engine,
    alloc: LocalAllocator,
    users: HashMap<String, UserState>,
    n: u32,
}

impl World {
    fn given(src: &str) -> World {
        let catalog: Arc<Catalog> = crate::load(src);
        World {
            alloc: LocalAllocator::new(&catalog),
            engine: Engine::new(catalog),
            users: HashMap::new(),
            n: 0,
        }
    }

    fn when_at(
        &mut self,
        user: &str,
        kind: &str,
        data: serde_json::Value,
        time_s: Option<i64>,
        received_s: i64,
    ) -> Vec<String> {
        self.n += 1;
        let e = Event {
            id: format!("e{}", self.n),
            kind: kind.into(),
            user: user.into(),
            time: time_s.map(|s| Timestamp(T0 + s * 1000)),
            data: data.as_object().cloned().unwrap_or_default(),
            traits: data
                .get("traits")
                .and_then(|t| t.as_object().cloned())
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        let state = self.users.entry(user.into()).or_default();
        self.engine.apply(
            state,
            &e,
            Timestamp(T0 + received_s * 1000),
            &mut self.alloc,
            &mut out,
        );
        out.iter().map(|o| describe(user, o)).collect()
    }

    fn when(&mut self, user: &str, kind: &str, data: serde_json::Value, at_s: i64) -> Vec<String> {
        self.when_at(user, kind, data, Some(at_s), at_s)
    }
}

const TWO_STEPS: &str = r#"
version: 1
pools:
  - { id: p, codes: [C1, C2] }
hunts:
  - id: h
    steps:
      - { id: a, on: view, when: "event.data.x == 1" }
      - { id: b, on: view, when: "event.data.x >= 1", count: 2 }
    reward: { pool: p }
"#;

#[test]
fn one_event_can_find_several_steps_in_file_order() {
    let mut w = World::given(TWO_STEPS);
    assert_eq!(w.when("u", "view", json!({"x": 1}), 0), vec!["u found h/a"]);
    assert_eq!(
        w.when("u", "view", json!({"x": 1}), 1),
        vec!["u found h/b", "u completed h", "u granted h C1"]
    );
    // Completed: nothing more happens.
    assert!(w.when("u", "view", json!({"x": 1}), 2).is_empty());
}

#[test]
fn events_of_other_types_or_failing_conditions_do_nothing() {
    let mut w = World::given(TWO_STEPS);
    assert!(w.when("u", "click", json!({"x": 1}), 0).is_empty());
    assert!(w.when("u", "view", json!({"x": 0}), 1).is_empty());
    assert!(w.when("u", "view", json!({"y": "missing x"}), 2).is_empty());
    assert!(
        w.users["u"].hunts().is_empty(),
        "no progress without a match"
    );
    assert_eq!(
        w.engine.catalog().condition_errors().len(),
        2,
        "the missing field counted on both steps"
    );
}

#[test]
fn per_user_limit_counts_across_hunts_sharing_a_pool() {
    let mut w = World::given(
        r#"
version: 1
pools: [{ id: p, generate: { prefix: "P", count: 10 } }]
hunts:
  - { id: h1, steps: [{ id: s, on: buy }], reward: { pool: p } }
  - { id: h2, steps: [{ id: s, on: buy }], reward: { pool: p } }
  - { id: h3, steps: [{ id: s, on: buy }], reward: { pool: p, per_user: 2 } }
"#,
    );
    assert_eq!(
        w.when("u", "buy", json!({}), 0),
        vec![
            "u found h1/s",
            "u completed h1",
            "u granted h1 P01",
            "u found h2/s",
            "u completed h2",
            "u denied h2 per_user_limit",
            "u found h3/s",
            "u completed h3",
            "u granted h3 P02",
        ]
    );
}

#[test]
fn the_winners_cap_and_the_pool_size_both_hold() {
    let mut w = World::given(
        r#"
version: 1
pools: [{ id: p, codes: [A, B, C] }]
hunts:
  - { id: capped, steps: [{ id: s, on: buy }], reward: { pool: p }, max_winners: 1 }
  - { id: open, steps: [{ id: s, on: win }], reward: { pool: p } }
"#,
    );
    assert_eq!(w.when("a", "buy", json!({}), 0)[2], "a granted capped A");
    assert_eq!(
        w.when("b", "buy", json!({}), 1)[2],
        "b denied capped winners_cap"
    );
    assert_eq!(w.when("c", "win", json!({}), 2)[2], "c granted open B");
    assert_eq!(w.when("d", "win", json!({}), 3)[2], "d granted open C");
    assert_eq!(
        w.when("e", "win", json!({}), 4)[2],
        "e denied open pool_empty"
    );
}

#[test]
fn audience_gates_joining_and_is_checked_again_at_the_reward() {
    let mut w = World::given(
        r#"
version: 1
pools: [{ id: p, codes: [A] }]
hunts:
  - id: h
    audience: user.traits.tier == "gold"
    steps: [{ id: s1, on: view }, { id: s2, on: buy }]
    reward: { pool: p }
"#,
    );
    assert!(
        w.when("u", "view", json!({"traits": {"tier": "silver"}}), 0)
            .is_empty()
    );
    assert_eq!(
        w.when("u", "view", json!({"traits": {"tier": "gold"}}), 1),
        vec!["u found h/s1"]
    );
    // Joined; the tier drops before the reward.
    assert_eq!(
        w.when("u", "buy", json!({"traits": {"tier": "silver"}}), 2),
        vec![
            "u found h/s2",
            "u completed h",
            "u denied h not_in_audience"
        ]
    );
}

#[test]
fn traits_merge_and_null_removes_one() {
    let mut w = World::given(TWO_STEPS);
    w.when("u", "x", json!({"traits": {"a": 1, "b": "two"}}), 0);
    w.when("u", "x", json!({"traits": {"a": null, "c": true}}), 1);
    assert_eq!(
        serde_json::Value::Object(w.users["u"].traits.to_map()),
        json!({"b": "two", "c": true})
    );
}

#[test]
fn windows_late_and_future_events() {
    let mut w = World::given(
        r#"
version: 1
settings: { max_lateness: 10m }
hunts:
  - id: h
    active: { from: "2026-11-27T08:00:00Z", until: "2026-11-27T09:00:00Z" }
    steps: [{ id: s, on: view, count: 4 }]
"#,
    );
    // Before the window: nothing.
    assert!(w.when("u", "view", json!({}), -1).is_empty());
    // A late event within max_lateness counts at its own time.
    w.when_at("u", "view", json!({}), Some(100), 400);
    // Later than max_lateness behind its receipt: counts for nothing.
    w.when_at("u", "view", json!({}), Some(100), 100 + 601);
    assert_eq!(w.users["u"].hunts()[0].counts[0], 1);
    // A claimed future time is clamped to the receipt: received inside the window, so
    // it counts even though it claims a time after `until`.
    w.when_at("u", "view", json!({}), Some(7200), 3000);
    assert_eq!(w.users["u"].hunts()[0].counts[0], 2);
    // No time at all: the receipt's.
    w.when_at("u", "view", json!({}), None, 3100);
    assert_eq!(w.users["u"].hunts()[0].counts[0], 3);
    // Received after the window closed: nothing.
    assert!(w.when("u", "view", json!({}), 3600).is_empty());
}

#[test]
fn sequence_needs_order_and_respects_within() {
    let mut w = World::given(
        r#"
version: 1
hunts:
  - id: h
    order: sequence
    steps:
      - { id: a, on: a, clue: "start here" }
      - { id: b, on: b, within: 1m, clue: "then b" }
      - { id: c, on: c, within: 1m, clue: "then c" }
"#,
    );
    assert!(
        w.when("u", "b", json!({}), 0).is_empty(),
        "b before a does not count"
    );
    assert_eq!(w.when("u", "a", json!({}), 10), vec!["u found h/a"]);
    // A late event that happened before `a` was found is not in sequence.
    assert!(w.when_at("u", "b", json!({}), Some(5), 20).is_empty());
    assert_eq!(w.when("u", "b", json!({}), 60), vec!["u found h/b"]);
    // Too late for c: the trail goes cold and starts over.
    assert_eq!(w.when("u", "c", json!({}), 121), vec!["u cold h/c"]);
    assert_eq!(w.users["u"].hunts()[0].found_count, 0);
    assert_eq!(w.when("u", "a", json!({}), 130), vec!["u found h/a"]);
}

#[test]
fn found_outcomes_carry_the_next_clue() {
    let mut w = World::given(
        r#"
version: 1
hunts:
  - id: h
    order: sequence
    steps: [{ id: a, on: a, clue: "go to a" }, { id: b, on: b, clue: "now b" }]
"#,
    );
    let catalog = w.engine.catalog().clone();
    let e = Event {
        id: "1".into(),
        kind: "a".into(),
        user: "u".into(),
        time: None,
        data: Default::default(),
        traits: Default::default(),
    };
    let mut out = Vec::new();
    w.engine.apply(
        w.users.entry("u".into()).or_default(),
        &e,
        Timestamp(T0),
        &mut w.alloc,
        &mut out,
    );
    assert_eq!(
        out,
        vec![Outcome::StepFound {
            hunt: catalog.hunts[0].id.clone(),
            step: "a".into(),
            found: 1,
            next_clue: Some("now b".into())
        }]
    );
    assert_eq!(
        serde_json::to_value(&out[0]).unwrap(),
        json!({"kind": "step_found", "hunt": "h", "step": "a", "found": 1, "next_clue": "now b"})
    );
}

#[test]
fn progress_is_visible_to_conditions() {
    let mut w = World::given(
        r#"
version: 1
hunts:
  - id: h
    steps:
      - { id: first, on: view }
      - { id: bonus, on: view, when: "progress.found >= 1 && progress.steps.first == 1" }
"#,
    );
    // Conditions see progress as it was before the event: only `first` now.
    assert_eq!(w.when("u", "view", json!({}), 0), vec!["u found h/first"]);
    assert_eq!(
        w.when("u", "view", json!({}), 1),
        vec!["u found h/bonus", "u completed h"]
    );
}

#[test]
fn indexed_conditions_still_count_failures_on_missing_fields() {
    let mut w = World::given(
        r#"
version: 1
hunts:
  - id: h
    steps:
      - { id: a, on: view, when: 'event.data.sku == "s1" && event.data.price > 5' }
      - { id: b, on: view, when: 'event.data.sku in ["s2", "s3"]' }
"#,
    );
    assert!(
        w.when("u", "view", json!({"sku": "s9", "price": 10}), 0)
            .is_empty()
    );
    assert!(w.when("u", "view", json!({"sku": 7}), 1).is_empty());
    assert!(
        w.engine.catalog().condition_errors().is_empty(),
        "a present field is no failure"
    );
    assert!(w.when("u", "view", json!({"price": 10}), 2).is_empty());
    assert_eq!(
        w.engine.catalog().condition_errors().len(),
        2,
        "a missing field is a failure, counted"
    );
    assert_eq!(
        w.when("u", "view", json!({"sku": "s3"}), 3),
        vec!["u found h/b"]
    );
    assert_eq!(
        w.when("u", "view", json!({"sku": "s1", "price": 6}), 4),
        vec!["u found h/a", "u completed h"]
    );
}

#[test]
fn progress_carries_over_to_a_reloaded_catalog_and_a_restored_state() {
    let v1 = "version: 1\nhunts:\n  - { id: a, steps: [{ id: s, on: x }, { id: t, on: y }] }\n  - { id: b, steps: [{ id: s, on: x }] }\n";
    // The same hunts, listed in another order: indexes change, ids do not.
    let v2 = "version: 1\nhunts:\n  - { id: b, steps: [{ id: s, on: x }] }\n  - { id: a, steps: [{ id: s, on: x }, { id: t, on: y }] }\n";
    let mut w = World::given(v1);
    assert_eq!(
        w.when("u", "x", json!({}), 0),
        vec!["u found a/s", "u found b/s", "u completed b"]
    );
    // Through serde, as a snapshot would keep it.
    let saved = serde_json::to_string(&w.users["u"]).unwrap();
    let mut w2 = World::given(v2);
    w2.users
        .insert("u".into(), serde_json::from_str(&saved).unwrap());
    assert!(
        w2.when("u", "x", json!({}), 1).is_empty(),
        "b is complete and a/s found already"
    );
    assert_eq!(
        w2.when("u", "y", json!({}), 2),
        vec!["u found a/t", "u completed a"]
    );
}

#[test]
fn failures_count_only_for_steps_still_to_find() {
    let mut w = World::given(
        "version: 1\nhunts:\n  - id: h\n    steps:\n      - { id: a, on: v, when: 'event.data.x == 1' }\n      - { id: b, on: v, when: 'event.data.y == \"z\"' }\n",
    );
    assert_eq!(
        w.when("u", "v", json!({"x": 1, "y": "q"}), 0),
        vec!["u found h/a"]
    );
    // `a` is found: its condition failing on a missing `x` is not counted.
    assert!(w.when("u", "v", json!({"y": "q"}), 1).is_empty());
    assert!(
        w.engine.catalog().condition_errors().is_empty(),
        "{:?}",
        w.engine.catalog().condition_errors()
    );
    // `b` is still to find: its failure is counted.
    assert!(w.when("u", "v", json!({"x": 1}), 2).is_empty());
    assert_eq!(w.engine.catalog().condition_errors().len(), 1);
}

#[test]
fn past_the_trait_limit_new_traits_are_not_stored_but_known_ones_update() {
    let mut profile = hunt_core::engine::Traits::default();
    let many: serde_json::Map<String, serde_json::Value> = (0..hunt_core::engine::TRAITS_MAX + 5)
        .map(|i| (format!("t{i:03}"), json!(i)))
        .collect();
    hunt_core::engine::merge_traits(&mut profile, &many);
    assert_eq!(profile.len(), hunt_core::engine::TRAITS_MAX);
    let update = json!({"t000": "changed", "brand_new": 1});
    hunt_core::engine::merge_traits(&mut profile, update.as_object().unwrap());
    assert_eq!(profile.get("t000"), Some(&json!("changed")));
    assert!(!profile.contains_key("brand_new"));
    // `null` removes a trait, which makes room for a new one.
    let update = json!({"t001": null});
    hunt_core::engine::merge_traits(&mut profile, update.as_object().unwrap());
    assert!(!profile.contains_key("t001"));
    let update = json!({"brand_new": 1});
    hunt_core::engine::merge_traits(&mut profile, update.as_object().unwrap());
    assert_eq!(profile.get("brand_new"), Some(&json!(1)));
    assert_eq!(profile.len(), hunt_core::engine::TRAITS_MAX);
    // Kept in name order, and serialized as a JSON object.
    let names: Vec<&str> = profile.iter().map(|(k, _)| k).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let text = serde_json::to_string(&profile).unwrap();
    assert!(
        text.starts_with(r#"{"brand_new":1,"t000":"changed","t002":2,"#),
        "{text}"
    );
    let back: hunt_core::engine::Traits = serde_json::from_str(&text).unwrap();
    assert_eq!(back, profile);
}
