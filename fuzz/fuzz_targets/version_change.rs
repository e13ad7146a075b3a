//! A customer's state, an old and a new hunts file, and events around the switch from
//! one to the other. Never a panic: the state is laid out again by step id, the plan
//! counts the customer, the refusals read their codes; and putting back what one event
//! changed (`Undo`) gives exactly the state before it.
#![no_main]
use std::sync::Arc;

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Engine, Event, LocalAllocator, Undo, UserState};
use hunt_core::plan::{Plan, refusals};
use hunt_core::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn catalog(bytes: &[u8]) -> Option<Arc<Catalog>> {
    let text = std::str::from_utf8(bytes).ok()?;
    Catalog::load("fuzz.yaml", text).ok().map(|(c, _)| Arc::new(c))
}

/// Every record of a hunt in `catalog` is laid out by it after an event.
fn check_layout(state: &UserState, catalog: &Catalog) {
    for p in state.hunts() {
        if let Some(h) = catalog.hunt_index(p.hunt()) {
            let hunt = &catalog.hunts[h];
            assert_eq!(p.steps(), &*hunt.step_ids, "laid out by the version in force");
            assert_eq!(p.counts.len(), hunt.steps.len());
            assert_eq!(p.found_count, p.found.count_ones());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The old file, NUL, the new file, NUL, then JSON:
    // {"state": UserState, "events": [Event…], "switch_at": n}
    let mut parts = data.splitn(3, |b| *b == 0);
    let (Some(old), Some(new), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Some(old), Some(new)) = (catalog(old), catalog(new)) else {
        return;
    };
    let json: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
    let mut state: UserState = serde_json::from_value(json["state"].clone()).unwrap_or_default();
    let events: Vec<Event> = serde_json::from_value(json["events"].clone()).unwrap_or_default();
    let switch_at = json["switch_at"].as_u64().unwrap_or(0) as usize;

    let mut plan = Plan::new(&old, &new);
    plan.count(&old, &new, &state);
    let grants: Vec<(String, String, String)> = state
        .rewards
        .iter()
        .map(|g| (g.hunt.to_string(), g.pool.to_string(), g.code.clone()))
        .collect();
    let _ = refusals(
        &new,
        grants.iter().map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str())),
    );

    let mut alloc = LocalAllocator::new(&old);
    let mut engine = Engine::new(old.clone());
    let mut out = Vec::new();
    let mut undo = Undo::default();
    for (i, e) in events.iter().enumerate() {
        if i == switch_at {
            engine = Engine::new(new.clone());
            alloc = LocalAllocator::new(&new);
        }
        let received = e.time.unwrap_or(Timestamp(1_795_766_400_000));
        // Applied, then put back: the same state as before.
        let before = (state.traits.clone(), state.hunts().to_vec(), state.rewards.clone());
        engine.apply_undoable(&mut state, e, received, &mut alloc, &mut out, &mut undo);
        undo.restore(&mut state);
        assert_eq!(
            (state.traits.clone(), state.hunts().to_vec(), state.rewards.clone()),
            before,
            "undo gives back the state before event {i}"
        );
        // Then for good.
        out.clear();
        engine.apply(&mut state, e, received, &mut alloc, &mut out);
        check_layout(&state, engine.catalog());
        let _ = engine.visible_hunts(&state, &e.user, received);
    }
});
