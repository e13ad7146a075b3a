//! Tests of conditions: the fast path against the CEL interpreter, compile errors and
//! run-time failures.

use super::*;
use proptest::prelude::*;

fn input<'a>(
    data: &'a serde_json::Map<String, Json>,
    traits: &'a crate::engine::Traits,
) -> Input<'a> {
    Input {
        event: Some(EventView {
            id: "e-1",
            kind: "product_view",
            time: Timestamp(0),
            data,
        }),
        user_id: "u-1",
        traits,
        progress: Some(ProgressView {
            found: 2,
            step_ids: &[],
            counts: &[],
        }),
    }
}

/// Conditions in the fast path's shapes, over the fields the generator fills.
const SHAPES: &[&str] = &[
    "event.data.x == 5",
    "event.data.x == 5.0",
    "event.data.x != 'a'",
    "event.data.x > 3",
    "event.data.x >= 2.5",
    "event.data.x < 'm'",
    "3 <= event.data.x",
    "event.data.x == null",
    "event.data.x == true",
    "event.data.x in ['a', 'b', 5]",
    "event.data.x in [1, 2.0, 3]",
    "event.data.x.contains('b')",
    "event.data.x.startsWith('a')",
    "event.data.x.endsWith('c')",
    "has(event.data.x)",
    "has(event.data.o.y)",
    "event.data.o.y == 'a'",
    "event.data['x'] == 'a'",
    "event.data.x",
    "!(event.data.x == 'a')",
    "event.data.x == 'a' && user.traits.t == 'gold'",
    "event.data.x == 'a' || user.traits.t == 'gold'",
    "user.traits.t != 'gold' && event.data.x > 1",
    "user.traits.t > 2 || event.data.x < 1",
    "event.type == 'product_view' && event.id.startsWith('e-')",
    "user.id == 'u-1' && progress.found >= 2",
    "event.data.x == -3",
    "event.data.x < 18446744073709551615u",
];

fn json_value() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-5i64..10).prop_map(Json::from),
        prop_oneof![Just(2.5f64), Just(5.0), Just(-0.5), Just(1e300)].prop_map(Json::from),
        Just(Json::from(u64::MAX)),
        prop_oneof![
            Just("a"),
            Just("abc"),
            Just("b"),
            Just("m"),
            Just("zz"),
            Just("")
        ]
        .prop_map(Json::from),
        Just(serde_json::json!([1, "a"])),
        Just(serde_json::json!({"y": "a"})),
    ]
}

fn map_of(v: Option<Json>, key: &str) -> serde_json::Map<String, Json> {
    let mut m = serde_json::Map::new();
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
    m
}

#[test]
fn every_shape_runs_on_the_fast_path() {
    for s in SHAPES {
        let c = Condition::compile(s, Scope::Step).unwrap();
        assert!(c.is_fast(), "{s} should use the fast path");
    }
    let slow = Condition::compile("size(event.data.x) > 2", Scope::Step).unwrap();
    assert!(!slow.is_fast());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// The fast path and the CEL interpreter agree on value and on failure.
    #[test]
    fn fast_path_agrees_with_cel(
        shape in 0..SHAPES.len(),
        x in proptest::option::of(json_value()),
        o in proptest::option::of(json_value()),
        t in proptest::option::of(json_value()),
    ) {
        let mut data = map_of(x, "x");
        if let Some(o) = o {
            data.insert("o".into(), o);
        }
        let traits = crate::engine::Traits::from(map_of(t, "t"));
        let c = Condition::compile(SHAPES[shape], Scope::Step).unwrap();
        let inp = input(&data, &traits);
        let fast = c.eval_checked(&inp).is_ok_and(|b| b);
        let fast_err = c.eval_checked(&inp).is_err();
        let slow = c.eval_interpreted(&inp);
        prop_assert_eq!(fast, slow.as_ref().is_ok_and(|b| *b), "{} on {:?}: cel says {:?}", SHAPES[shape], data, slow);
        prop_assert_eq!(fast_err, slow.is_err(), "{} on {:?}: cel says {:?}", SHAPES[shape], data, slow);
    }
}

#[test]
fn unknown_variables_are_named_with_a_suggestion() {
    let errs = Condition::compile("evnt.data.x == 1", Scope::Step).unwrap_err();
    assert_eq!(errs[0].message, "unknown variable `evnt`");
    assert_eq!(errs[0].help.as_deref(), Some("did you mean `event`?"));
    assert_eq!(errs[0].offset, 0);
    let errs =
        Condition::compile("user.traits.x == 1 && event.type == 'a'", Scope::Audience).unwrap_err();
    assert_eq!(errs[0].message, "unknown variable `event`");
    assert_eq!(errs[0].offset, 22);
    // Comprehension variables are bound, not unknown.
    Condition::compile("event.data.items.exists(i, i.sku == 'x')", Scope::Step).unwrap();
}

#[test]
fn unknown_fields_of_event_user_and_progress_are_named_with_a_suggestion() {
    let src = "user.trait.country == 'US'";
    let errs = Condition::compile(src, Scope::Step).unwrap_err();
    assert_eq!(errs[0].message, "`user` has no field `trait`");
    assert_eq!(
        errs[0].help.as_deref(),
        Some("did you mean `user.traits`? `user` has `id` and `traits`")
    );
    assert_eq!(&src[errs[0].offset..errs[0].offset + errs[0].len], "trait");
    let src = "event.data.x == 1 && event.dta.price > 3";
    let errs = Condition::compile(src, Scope::Step).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].message, "`event` has no field `dta`");
    assert!(
        errs[0]
            .help
            .as_deref()
            .unwrap()
            .starts_with("did you mean `event.data`?")
    );
    assert_eq!(&src[errs[0].offset..errs[0].offset + errs[0].len], "dta");
    // Text that is not ASCII before the field does not move the place.
    let src = "user.traits.city == 'Zürich' && event.dta > 1 && user.traits.n == '東京'";
    let errs = Condition::compile(src, Scope::Step).unwrap_err();
    assert_eq!(&src[errs[0].offset..errs[0].offset + errs[0].len], "dta");
    let errs = Condition::compile("'東京' == 'x' && evnt.data.a == 1", Scope::Step).unwrap_err();
    assert_eq!(errs[0].message, "unknown variable `evnt`");
    assert_eq!(errs[0].offset, "'東京' == 'x' && ".len());
    // Far from any field: where an event's own fields are.
    let errs = Condition::compile("event.price > 3", Scope::Step).unwrap_err();
    assert!(
        errs[0]
            .help
            .as_deref()
            .unwrap()
            .contains("`event.data.price`"),
        "{errs:?}"
    );
    // In has(), by index, in an audience, and in progress.
    for (src, scope) in [
        ("has(event.dta)", Scope::Step),
        ("event['kind'] == 'x'", Scope::Step),
        ("user.tratis.tier == 'gold'", Scope::Audience),
        ("progress.fund > 1", Scope::Step),
    ] {
        let errs = Condition::compile(src, scope).unwrap_err();
        assert!(errs[0].message.contains("has no field"), "{src}: {errs:?}");
    }
    // Every field of each shape is fine, and a comprehension's variable is its own.
    Condition::compile(
        "event.id != '' && event.type == 'a' && event.time > timestamp('2026-01-01T00:00:00Z') \
         && has(event.data.x) && user.id != '' && user.traits.tier == 'gold' \
         && progress.found > 0 && progress.steps.a > 0 \
         && event.data.items.exists(event, event.sku == 'x')",
        Scope::Step,
    )
    .unwrap();
}

#[test]
fn the_event_data_fields_a_condition_reads_are_listed_with_their_place() {
    let src = "event.data.a.b == 1 && has(event.data.c) && event.data['d'] > 2 \
               && event.data.items.exists(i, i.sku == event.data.e) && event.type == 'x'";
    let c = Condition::compile(src, Scope::Step).unwrap();
    let paths: Vec<String> = c.data_paths().iter().map(|p| p.dotted()).collect();
    assert_eq!(paths, ["a.b", "c", "d", "items", "e"]);
    for p in c.data_paths() {
        assert_eq!(&src[p.offset..p.offset + p.len], p.path[0], "{p:?}");
    }
    let src = "user.traits.city == 'Zürich' && event.data.price > 1";
    let c = Condition::compile(src, Scope::Step).unwrap();
    let p = &c.data_paths()[0];
    assert_eq!(&src[p.offset..p.offset + p.len], "price");
    assert!(Condition::always().data_paths().is_empty());
}

#[test]
fn syntax_errors_point_inside_the_expression() {
    let errs = Condition::compile("event.data.x == == 2", Scope::Step).unwrap_err();
    assert!(
        errs[0].message.starts_with("invalid condition"),
        "{:?}",
        errs
    );
    assert!(errs[0].offset >= 13 && errs[0].offset <= 16, "{:?}", errs);
}

#[test]
fn runtime_failures_are_false_and_counted() {
    let data = serde_json::Map::new();
    let traits = crate::engine::Traits::default();
    let c = Condition::compile("event.data.missing == 'x'", Scope::Step).unwrap();
    assert!(!c.eval(&input(&data, &traits)));
    let c2 = Condition::compile("size(event.data.missing) > 1", Scope::Step).unwrap();
    assert!(!c2.eval(&input(&data, &traits)));
    let c3 = Condition::compile("event.type", Scope::Step).unwrap();
    assert!(!c3.eval(&input(&data, &traits)));
    assert_eq!(
        (c.error_count(), c2.error_count(), c3.error_count()),
        (1, 1, 1)
    );
}
