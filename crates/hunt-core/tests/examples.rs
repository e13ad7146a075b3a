//! The shipped examples are valid and their own test cases pass.

use hunt_core::catalog::Catalog;
use hunt_core::testing::run_case;
use std::sync::Arc;

fn check_example(name: &str, src: &str) {
    let (catalog, report) =
        Catalog::load(name, src).unwrap_or_else(|r| panic!("{name}: {:#?}", r.problems));
    assert_eq!(
        report.problems.len(),
        0,
        "{name} should have no warnings: {:#?}",
        report.problems
    );
    assert!(
        catalog.tests.len() >= 3,
        "{name} should carry its test cases"
    );
    let catalog = Arc::new(catalog);
    for case in &catalog.tests {
        let result = run_case(&catalog, case);
        assert!(
            result.passed,
            "{name}: case {:?} failed: {:#?}",
            case.name, result.diff
        );
    }
}

/// The examples run whatever today's date: every hunt in them is open now and for
/// decades to come (a newcomer following the README sees what it says).
#[test]
fn every_example_hunt_is_open_whatever_the_date() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let in_fifty_years = now + 50 * 366 * 24 * 3_600_000;
    for (name, src) in [
        (
            "welcome.yaml",
            include_str!("../../../examples/welcome.yaml"),
        ),
        (
            "black-friday-eggs.yaml",
            include_str!("../../../examples/black-friday-eggs.yaml"),
        ),
        (
            "detective.yaml",
            include_str!("../../../examples/detective.yaml"),
        ),
    ] {
        let (catalog, _) = Catalog::load(name, src).unwrap();
        for h in &catalog.hunts {
            for t in [now, in_fifty_years] {
                assert!(
                    h.is_active(hunt_core::time::Timestamp(t)),
                    "{name}: hunt `{}` is closed at {t}",
                    h.id
                );
            }
        }
    }
}

#[test]
fn black_friday_eggs() {
    check_example(
        "black-friday-eggs.yaml",
        include_str!("../../../examples/black-friday-eggs.yaml"),
    );
}

#[test]
fn detective() {
    check_example(
        "detective.yaml",
        include_str!("../../../examples/detective.yaml"),
    );
}

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let src = include_str!("../../../examples/detective.yaml").replace(
        "holmes granted detective SLEUTH-01",
        "holmes granted detective SLEUTH-02",
    );
    let catalog = Arc::new(Catalog::load("d.yaml", &src).unwrap().0);
    let result = run_case(&catalog, &catalog.tests[0]);
    assert!(!result.passed);
    use hunt_core::testing::DiffLine::*;
    assert!(
        result
            .diff
            .contains(&Missing("holmes granted detective SLEUTH-02".into()))
    );
    assert!(
        result
            .diff
            .contains(&Unexpected("holmes granted detective SLEUTH-01".into()))
    );
}

#[test]
fn the_benchmark_hunts_file_is_valid() {
    let (catalog, report) =
        hunt_core::catalog::Catalog::load("bench.yaml", &hunt_core::traffic::bench_hunts_file(20))
            .unwrap_or_else(|r| panic!("{} errors", r.errors()));
    assert_eq!(catalog.hunts.len(), 20);
    assert_eq!(report.errors(), 0);
}
