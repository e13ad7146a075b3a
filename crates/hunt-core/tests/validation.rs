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
