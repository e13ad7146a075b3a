//! Any text as a condition, compiled in every scope; a condition that compiles is
//! evaluated over fuzzed data and traits. Never a panic, and where the fast path
//! evaluates a condition it agrees with the CEL interpreter.
#![no_main]
use hunt_core::cond::{Condition, EventView, Input, ProgressView, Scope};
use hunt_core::engine::Traits;
use hunt_core::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    // The condition, then (after a NUL) JSON for `data` and `traits`.
    let (text, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let json: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
    let object = |v: &Value| match v {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let event_data = object(&json["data"]);
    let traits = Traits::from(object(&json["traits"]));
    let counts = [1u32, 0, 3];
    let step_ids: Vec<std::sync::Arc<str>> = ["a", "b", "c"].iter().map(|s| (*s).into()).collect();
    for scope in [Scope::Step, Scope::Audience] {
        let Ok(c) = Condition::compile(&text, scope) else {
            continue;
        };
        let input = Input {
            event: (scope == Scope::Step).then_some(EventView {
                id: "e-1",
                kind: "product_view",
                time: Timestamp(1_795_766_400_000),
                data: &event_data,
            }),
            user_id: "u-1",
            traits: &traits,
            progress: (scope == Scope::Step).then_some(ProgressView {
                found: 1,
                step_ids: &step_ids,
                counts: &counts,
            }),
        };
        let fast = c.eval_checked(&input);
        let _ = c.eval(&input);
        if c.is_fast() {
            let slow = c.eval_interpreted(&input);
            assert_eq!(
                fast.as_ref().ok(),
                slow.as_ref().ok(),
                "{text:?} on {json}: fast path {fast:?}, CEL {slow:?}"
            );
        }
    }
});
