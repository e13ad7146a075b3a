//! Every error of a hunts file is reported in one run, with its place and a hint.

use hunt_core::catalog::Catalog;
use hunt_core::diag::{Report, Severity};
use proptest::prelude::*;

fn problems(report: &Report) -> Vec<(Severity, usize, usize, String, Option<String>)> {
    report
        .problems
        .iter()
        .map(|p| {
            let at = report.line_col(p.span.offset);
            (
                p.severity,
                at.line,
                at.column,
                p.message.clone(),
                p.help.clone(),
            )
        })
        .collect()
}

/// Finds the problem whose message contains `needle`, or fails listing them all.
fn find<'a>(
    all: &'a [(Severity, usize, usize, String, Option<String>)],
    needle: &str,
) -> &'a (Severity, usize, usize, String, Option<String>) {
    all.iter()
        .find(|p| p.3.contains(needle))
        .unwrap_or_else(|| panic!("no problem mentions {needle:?}; got {all:#?}"))
}

#[test]
fn every_error_in_a_bad_file_is_reported_at_once() {
    let src = include_str!("fixtures/bad.yaml");
    let report = Catalog::load("bad.yaml", src).expect_err("the file is bad");
    let all = problems(&report);

    let p = find(&all, "unknown field `titel`");
    assert_eq!((p.1, p.2), (13, 5));
    assert_eq!(p.4.as_deref(), Some("did you mean `title`?"));

    assert_eq!((find(&all, "duplicate pool id `small`").1), 5);
    assert_eq!((find(&all, "duplicate hunt id `eggs`").1), 25);
    let dup = find(&all, "duplicate step id `one`");
    assert_eq!(dup.1, 20);
    assert!(dup.4.as_deref().unwrap().contains("line 16"), "{dup:?}");

    let p = find(&all, "invalid URL");
    assert_eq!((p.1, p.2), (9, 10));
    let p = find(&all, "bad duration in `timeout`");
    assert_eq!(p.1, 10);

    let p = find(&all, "ends (`until`");
    assert_eq!(p.1, 14);

    // The CEL error points inside the expression, at the second `==`.
    let p = find(&all, "invalid condition");
    assert_eq!(p.1, 18);
    assert!(
        (27..=33).contains(&p.2),
        "column {} should fall inside the expression",
        p.2
    );

    let p = find(&all, "`within` in step `one` of an `any` hunt");
    assert_eq!((p.1, p.2), (19, 17));
    assert!(p.4.as_deref().unwrap().contains("order: sequence"));

    let p = find(&all, "`complete_after` is 3");
    assert_eq!(p.1, 22);

    let p = find(&all, "unknown pool `smal`");
    assert_eq!(p.4.as_deref(), Some("did you mean `small`?"));
    let p = find(&all, "unknown sink `crn`");
    assert_eq!(p.4.as_deref(), Some("did you mean `crm`?"));

    let p = find(&all, "bad duration in `within`");
    assert_eq!(p.1, 32);

    let p = find(&all, "can never be found");
    assert_eq!(p.0, Severity::Warning);
    let p = find(&all, "hunt `capped` can never complete");
    assert_eq!(p.0, Severity::Warning);
    let p = find(&all, "fewer than `max_winners` 10");
    assert_eq!(p.0, Severity::Warning);

    // Reported in file order, and nothing twice.
    let offsets: Vec<usize> = report.problems.iter().map(|p| p.span.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    assert!(report.errors() >= 13, "{all:#?}");
}

#[test]
fn warnings_alone_do_not_fail_a_file() {
    let src = "version: 1\npools:\n  - id: p\n    codes: [A]\nhunts:\n  - id: h\n    steps:\n      - { id: s, on: purchase }\n    reward: { pool: p }\n    max_winners: 5\n";
    let (_, report) = Catalog::load("w.yaml", src).expect("warnings only");
    assert_eq!(report.errors(), 0);
    assert_eq!(report.warnings(), 1);
}

#[test]
fn structural_mistakes_are_named() {
    let cases: &[(&str, &str)] = &[
        ("", "must be a mapping"),
        ("version: 2\n", "unsupported version 2"),
        ("hunts: []\n", "missing `version`"),
        (
            "version: 1\nhunts: {}\n",
            "`hunts` of the hunts file must be a list",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: []\n",
            "hunt `h` has no steps",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    order: random\n    steps: [{id: s, on: x}]\n",
            "`order` must be `any` or `sequence`",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: [{id: s, on: Page View}]\n",
            "not a valid event type",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: [{id: s, on: x, count: 0}]\n",
            "`count` must be at least 1",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: [{id: s, on: x, count: -2}]\n",
            "must not be negative",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    audience: event.type == 'x'\n    steps: [{id: s, on: x}]\n",
            "unknown variable `event`",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    order: sequence\n    steps: [{id: s, on: x, within: 5m}]\n",
            "`within` on the first step",
        ),
        (
            "version: 1\npools:\n  - id: p\n    codes: [A, A]\n",
            "listed twice",
        ),
        (
            "version: 1\npools:\n  - id: p\n    generate: {prefix: X, count: 1000, digits: 2}\n",
            "cannot hold",
        ),
        (
            "version: 1\npools:\n  - id: p\n",
            "exactly one of `codes` and `generate`",
        ),
        (
            "version: 1\nsinks:\n  - id: s\n    url: https://x.example\n    secret_env: my secret\n",
            "not an environment variable name",
        ),
        ("version: 1\nhunts: [\n", "invalid YAML"),
        ("version: 1\nversion: 1\n", "duplicate"),
        (
            "version: 1\ntests:\n  - name: t\n    events: [{user: u, type: x, at: +5m}]\n    expect: []\n",
            "has no `start`",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: [{id: s, on: x}]\ntests:\n  - name: t\n    start: \"2026-01-01T00:00:00Z\"\n    events: []\n    expect: [u found h/z]\n",
            "hunt `h` has no step `z`",
        ),
        (
            "version: 1\nhunts:\n  - id: h\n    steps: [{id: s, on: x}]\ntests:\n  - name: t\n    start: \"2026-01-01T00:00:00Z\"\n    events: []\n    expect: [u fund h/s]\n",
            "did you mean `found`?",
        ),
    ];
    for (src, needle) in cases {
        let report = Catalog::load("x.yaml", src).expect_err(src);
        assert!(
            report.problems.iter().any(|p| p.message.contains(needle)
                || p.help.as_deref().is_some_and(|h| h.contains(needle))),
            "{src:?} should report {needle:?}; got {:#?}",
            report.problems
        );
    }
}

#[test]
fn diagnostics_render_with_file_line_and_column() {
    let report = Catalog::load("bad.yaml", include_str!("fixtures/bad.yaml")).unwrap_err();
    let json = report.to_json();
    let first = &json[0];
    assert_eq!(first["file"], "bad.yaml");
    assert!(first["line"].as_u64().unwrap() >= 1);
    assert!(first["column"].as_u64().unwrap() >= 1);
    assert_eq!(first["severity"], "error");
}

/// An alias bomb: each level's list holds the previous level ten times, so the last
/// alias stands for 10^levels scalars.
fn alias_bomb(levels: usize) -> String {
    let mut s = String::from("version: 1\nx0: &a0 [\"lol\"]\n");
    for i in 1..=levels {
        let prev = format!("*a{}", i - 1);
        s.push_str(&format!("x{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    s
}

#[test]
fn an_alias_bomb_is_refused_before_it_is_built_and_a_few_aliases_are_fine() {
    // 10^5 scalars behind the last alias: refused at the alias limit (the parser's own
    // default would build them all), and 10^7 as well.
    for levels in [5, 7] {
        let report = Catalog::load("bomb.yaml", &alias_bomb(levels)).unwrap_err();
        let all = problems(&report);
        let p = find(&all, "invalid YAML");
        assert_eq!(p.0, Severity::Error);
        assert!(p.3.contains("alias"), "names the aliases: {p:?}");
    }
    // A hunts file that reuses a condition and a list through aliases reads as usual.
    let src = r#"
version: 1
pools:
  - { id: p, codes: [A1, B2] }
hunts:
  - id: h
    audience: &gold user.traits.tier == "gold"
    steps:
      - { id: a, on: search, when: *gold }
      - { id: b, on: page_view, when: *gold }
    reward: { pool: p }
"#;
    let (catalog, _) =
        Catalog::load("reuse.yaml", src).unwrap_or_else(|r| panic!("{:#?}", r.problems));
    assert_eq!(catalog.hunts[0].steps.len(), 2);
}

#[test]
fn a_declared_event_type_refuses_conditions_on_fields_it_does_not_carry() {
    let src = r#"version: 1
events:
  - { type: product_view, data: [product, category, price] }
  - { type: product_view, data: [sku] }
  - { type: Bad!, data: [x] }
  - { type: search, data: [query, price.amount] }
hunts:
  - id: h
    steps:
      - { id: a, on: product_view, when: event.data.categry == "shoes" }
      - { id: b, on: product_view, when: 'has(event.data.price) && event.data["colour"] == "red"' }
      - { id: c, on: page_view, when: event.data.anything == 1 }
"#;
    let report = Catalog::load("decl.yaml", src).unwrap_err();
    let all = problems(&report);
    let p = find(&all, "no field `categry`");
    assert_eq!((p.0, p.1, p.2), (Severity::Error, 10, 53), "{p:?}");
    assert_eq!(
        p.4.as_deref(),
        Some(
            "did you mean `event.data.category`? `product_view` declares `product`, `category`, `price`"
        )
    );
    let p = find(&all, "no field `colour`");
    assert!(
        p.4.as_deref()
            .unwrap()
            .contains("add the field to its declaration"),
        "{p:?}"
    );
    find(&all, "event type `product_view` is declared twice");
    find(&all, "`Bad!` is not a valid event type");
    find(&all, "`price.amount` is not a field name");
    // An undeclared type is not checked, and a declared field is fine.
    assert!(
        !all.iter()
            .any(|p| p.3.contains("anything") || p.3.contains("`price`")),
        "{all:#?}"
    );
}

#[test]
fn misspelt_fields_of_event_and_user_are_errors_in_a_hunts_file() {
    let src = r#"version: 1
hunts:
  - id: h
    audience: user.trait.country == "US"
    steps:
      - { id: a, on: cart_add, when: event.dta.price >= 100 }
"#;
    let report = Catalog::load("typo.yaml", src).unwrap_err();
    let all = problems(&report);
    let p = find(&all, "`user` has no field `trait`");
    assert_eq!((p.1, p.2), (4, 20), "{p:?}");
    assert!(
        p.4.as_deref()
            .unwrap()
            .starts_with("did you mean `user.traits`?")
    );
    let p = find(&all, "`event` has no field `dta`");
    assert_eq!((p.1, p.2), (6, 44), "{p:?}");
}

fn mangled_example() -> impl Strategy<Value = String> {
    let base = include_str!("../../../examples/black-friday-eggs.yaml")
        .as_bytes()
        .to_vec();
    let len = base.len();
    proptest::collection::vec((0..len, 0u8..6, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for (pos, op, byte) in edits {
            if b.is_empty() {
                break;
            }
            let pos = pos.min(b.len().saturating_sub(1));
            match op {
                0 => b[pos] = byte,
                1 => {
                    b.remove(pos);
                }
                2 => b.insert(pos, byte),
                3 => b.truncate(pos),
                4 => b.insert(pos, b' '),
                _ => b.insert(pos, b'\n'),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any input: a catalog or a report with errors — never a panic.
    #[test]
    fn loading_never_panics_on_mangled_files(src in mangled_example()) {
        match Catalog::load("m.yaml", &src) {
            Ok((c, r)) => prop_assert!(r.errors() == 0 && !c.hunts.is_empty() || c.hunts.is_empty()),
            Err(r) => prop_assert!(r.errors() > 0),
        }
    }

    #[test]
    fn loading_never_panics_on_arbitrary_text(src in ".{0,400}") {
        let _ = Catalog::load("a.yaml", &src);
    }
}
