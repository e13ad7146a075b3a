//! The `hunt` command as a user runs it: exit codes, what it prints, what it refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cluster;
#[path = "harness/crash.rs"]
mod crash;
mod dashboard;
mod serve;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hunt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the hunt binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_examples() {
    let out = hunt(&[
        "check",
        "examples/black-friday-eggs.yaml",
        "examples/detective.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("examples/black-friday-eggs.yaml: ok — 2 hunt(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("examples/detective.yaml: ok — 1 hunt(s)"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_1() {
    let out = hunt(&["check", "crates/hunt-core/tests/fixtures/bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "unknown field `titel` in a hunt",
        "did you mean `title`?",
        "bad.yaml:13:5",
        "duplicate hunt id `eggs`",
        "unknown pool `smal`",
        "invalid condition",
        "`complete_after` is 3",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(text(&out.stdout).contains("error(s)"));
}

#[test]
fn check_json_lists_problems_with_line_and_column() {
    let out = hunt(&[
        "check",
        "--json",
        "crates/hunt-core/tests/fixtures/bad.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let first = &v.as_array().unwrap()[0];
    assert_eq!(first["file"], "crates/hunt-core/tests/fixtures/bad.yaml");
    assert!(first["line"].as_u64().is_some() && first["column"].as_u64().is_some());
}

#[test]
fn check_refuses_unreadable_and_binary_files_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let out = hunt(&["check", bin.to_str().unwrap(), "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2), "could not run");
    let err = text(&out.stderr);
    assert!(err.contains("is not UTF-8 text"), "{err}");
    assert!(err.contains("cannot read no/such/file.yaml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A file read with errors in it is 1; one that cannot be read makes it 2.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nhunts: 7\n").unwrap();
    assert_eq!(
        hunt(&["check", bad.to_str().unwrap()]).status.code(),
        Some(1)
    );
    let out = hunt(&["check", bad.to_str().unwrap(), "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_events_warns_of_fields_and_types_the_recorded_events_never_carry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typos.yaml");
    let src = std::fs::read_to_string(root().join("examples/black-friday-eggs.yaml"))
        .unwrap()
        .replace(
            "event.data.query.contains(\"golden\")",
            "event.data.qury.contains(\"golden\")",
        )
        .replace("on: cart_add", "on: add_to_cart");
    std::fs::write(&file, &src).unwrap();
    let f = file.to_str().unwrap();
    // Where the misspelt field is written: line and column, counted from 1.
    let (line, written) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("qury"))
        .unwrap();
    let place = format!(
        "typos.yaml:{}:{}",
        line + 1,
        written.find("qury").unwrap() + 1
    );
    // Alone, the file is fine: nothing says which fields events carry.
    let out = hunt(&["check", f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("qury"));
    let sample = "examples/traffic/sample.ndjson";
    let out = hunt(&["check", f, "--events", sample]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings only: {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    for needle in [
        "`event.data.qury` occurs in none of the 367 `search` events in examples/traffic/sample.ndjson, and step `egg-search` of hunt `golden-eggs` reads it",
        "did you mean `event.data.query`?",
        &place,
        "no `add_to_cart` event in examples/traffic/sample.ndjson",
        "`cart_add` (345)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        text(&out.stdout).contains("2 warning(s)"),
        "{}",
        text(&out.stdout)
    );
    // The examples' own conditions read only fields the sample carries.
    let out = hunt(&[
        "check",
        "examples/black-friday-eggs.yaml",
        "examples/detective.yaml",
        "examples/welcome.yaml",
        "--events",
        sample,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stdout).contains("warning"),
        "{}",
        text(&out.stdout)
    );
    // Events that cannot be read, or none of whose lines is an event: the check could
    // not run.
    let out = hunt(&["check", f, "--events", "no/such.ndjson"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no/such.ndjson"));
    let junk = dir.path().join("junk.ndjson");
    std::fs::write(&junk, "not json\n{\"also\": \"not an event\"}\n").unwrap();
    let out = hunt(&["check", f, "--events", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no event could be read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn test_runs_cases_and_fails_with_a_diff() {
    let out = hunt(&["test", "examples/detective.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("4 passed, 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("d.yaml");
    let src = std::fs::read_to_string(root().join("examples/detective.yaml")).unwrap();
    std::fs::write(
        &broken,
        src.replace(
            "holmes granted detective SLEUTH-01",
            "holmes granted detective SLEUTH-09",
        ),
    )
    .unwrap();
    let out = hunt(&["test", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL  the case is solved in order"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- holmes granted detective SLEUTH-09"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+ holmes granted detective SLEUTH-01"),
        "{stdout}"
    );
    assert!(stdout.contains("3 passed, 1 failed"), "{stdout}");

    // --filter runs only the matching cases: the failing one is left out.
    let out = hunt(&["test", broken.to_str().unwrap(), "--filter", "cold trail"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("1 passed, 0 failed"),
        "{}",
        text(&out.stdout)
    ); // A filter that matches no case is not a pass: it could not run what was asked.
    let out = hunt(&["test", broken.to_str().unwrap(), "--filter", "nomatch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("no test case of"), "{err}");
    assert!(err.contains("\"nomatch\""), "{err}");
    assert!(err.contains("cold trail"), "the cases are named: {err}");
}

#[test]
fn a_failing_case_says_which_condition_could_not_be_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("typo.yaml");
    std::fs::write(
        &f,
        r#"version: 1
pools:
  - { id: p, codes: [A1] }
hunts:
  - id: h
    steps:
      - { id: look, on: search, when: 'event.data.qury.contains("egg")' }
    reward: { pool: p }
tests:
  - name: a search for eggs finds the step
    start: "2026-11-23T10:00:00Z"
    events:
      - { user: ann, type: search, at: +0s, data: { query: egg } }
    expect:
      - ann found h/look
"#,
    )
    .unwrap();
    let out = hunt(&["test", f.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  a search for eggs finds the step"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "why: in hunt h, the condition of step look could not be evaluated 1 time(s)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("event.data.qury.contains(\"egg\")"),
        "{stdout}"
    );
}

#[test]
fn init_writes_a_starter_that_checks_and_passes_its_tests_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("shop.yaml");
    let out = hunt(&["init", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("hunt test"), "{said}");
    assert!(said.contains("hunt serve --config"), "{said}");
    assert_eq!(hunt(&["check", f.to_str().unwrap()]).status.code(), Some(0));
    let tested = hunt(&["test", f.to_str().unwrap()]);
    assert_eq!(tested.status.code(), Some(0));
    assert!(
        text(&tested.stdout).contains("2 passed, 0 failed"),
        "{}",
        text(&tested.stdout)
    );
    // Never over a file that is there.
    std::fs::write(&f, "mine\n").unwrap();
    let again = hunt(&["init", f.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("exists; nothing was written"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "mine\n");
}

#[test]
fn schema_is_json_schema_for_the_file() {
    let out = hunt(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "Treasure Hunt Engine hunts file");
    assert!(
        v["$defs"]["StepSpec"]["properties"]["within"]["description"]
            .as_str()
            .unwrap()
            .contains("sequence")
    );
}

/// A hunts file with every bounded number set: `hunt check` accepts it as written.
const BOUNDS_FILE: &str = "\
version: 1
pools:
  - id: p
    generate: { prefix: C-, count: 5, digits: 12 }
sinks:
  - id: s
    url: http://127.0.0.1:9/hook
    concurrency: 2
    max_attempts: 3
    breaker_failures: 4
hunts:
  - id: h
    steps:
      - { id: a, on: page_view, count: 2 }
    complete_after: 1
    max_winners: 3
    reward: { pool: p, per_user: 1 }
    notify: [s]
";

#[test]
fn the_schema_and_check_agree_on_every_bound() {
    let out = hunt(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let f = dir.path().join("bounds.yaml");
        std::fs::write(&f, text).unwrap();
        hunt(&["check", f.to_str().unwrap()]).status.code()
    };
    assert_eq!(check(BOUNDS_FILE), Some(0), "the file as written is valid");
    // (definition, field, what it is set to in the file, lowest, highest). The
    // lowest `digits` depends on the codes' count, which a schema cannot say.
    type Bound = (
        &'static str,
        &'static str,
        &'static str,
        Option<u64>,
        Option<u64>,
    );
    let bounds: [Bound; 9] = [
        (
            "GenerateSpec",
            "count",
            "count: 5",
            Some(1),
            Some(1_000_000_000),
        ),
        (
            "SinkSpec",
            "concurrency",
            "concurrency: 2",
            Some(1),
            Some(256),
        ),
        (
            "SinkSpec",
            "max_attempts",
            "max_attempts: 3",
            Some(1),
            Some(1000),
        ),
        (
            "SinkSpec",
            "breaker_failures",
            "breaker_failures: 4",
            Some(1),
            Some(1000),
        ),
        ("StepSpec", "count", "count: 2 }", Some(1), None),
        (
            "HuntSpec",
            "complete_after",
            "complete_after: 1",
            Some(1),
            None,
        ),
        ("HuntSpec", "max_winners", "max_winners: 3", Some(1), None),
        ("RewardSpec", "per_user", "per_user: 1 }", Some(1), None),
        ("GenerateSpec", "digits", "digits: 12", None, Some(32)),
    ];
    for (def, field, written, low, high) in bounds {
        let prop = &schema["$defs"][def]["properties"][field];
        if let Some(low) = low {
            assert_eq!(prop["minimum"], low, "{def}.{field}: {prop}");
        }
        assert_eq!(prop["maximum"].as_u64(), high, "{def}.{field}: {prop}");
        let set = |n: u64| {
            let line = written.replacen(
                written
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .trim_end_matches('}')
                    .trim(),
                &n.to_string(),
                1,
            );
            assert!(BOUNDS_FILE.contains(written), "{written}");
            BOUNDS_FILE.replacen(written, &line, 1)
        };
        if let Some(low) = low {
            assert_eq!(
                check(&set(low)),
                Some(0),
                "{def}.{field} = {low} is allowed"
            );
            assert_eq!(
                check(&set(low - 1)),
                Some(1),
                "{def}.{field} = {} is refused",
                low - 1
            );
        }
        if let Some(high) = high {
            assert_eq!(
                check(&set(high)),
                Some(0),
                "{def}.{field} = {high} is allowed"
            );
            assert_eq!(
                check(&set(high + 1)),
                Some(1),
                "{def}.{field} = {} is refused",
                high + 1
            );
        }
    }
    // Steps: at least one, at most 64; codes: 1-128 characters.
    let steps = &schema["$defs"]["HuntSpec"]["properties"]["steps"];
    assert_eq!(
        (steps["minItems"].as_u64(), steps["maxItems"].as_u64()),
        (Some(1), Some(64)),
        "{steps}"
    );
    let codes = &schema["$defs"]["PoolSpec"]["properties"]["codes"];
    assert!(codes.to_string().contains("\"maxLength\":128"), "{codes}");
    assert!(codes.to_string().contains("\"minLength\":1"), "{codes}");
}

#[test]
fn gen_traffic_is_seeded() {
    let a = hunt(&[
        "gen-traffic",
        "--users",
        "30",
        "--events",
        "300",
        "--seed",
        "5",
    ]);
    let b = hunt(&[
        "gen-traffic",
        "--users",
        "30",
        "--events",
        "300",
        "--seed",
        "5",
    ]);
    let c = hunt(&[
        "gen-traffic",
        "--users",
        "30",
        "--events",
        "300",
        "--seed",
        "6",
    ]);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    assert_eq!(text(&a.stdout).lines().count(), 300);
    let bad = hunt(&["gen-traffic", "--hunters", "2"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--hunters must be between 0 and 1"));
    // The hunts file the traffic is made for: valid, 20 hunts.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    let out = hunt(&[
        "gen-traffic",
        "--events",
        "10",
        "--hunts-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let checked = hunt(&["check", file.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stdout));
    assert_eq!(
        std::fs::read_to_string(&file)
            .unwrap()
            .matches("\n  - id: hunt-")
            .count(),
        20
    );
}

#[test]
fn simulate_reports_per_hunt_and_skips_bad_lines_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.ndjson");
    let mut lines = std::fs::read_to_string(root().join("examples/traffic/sample.ndjson")).unwrap();
    lines.push_str("{not json}\n{\"id\":\"x\",\"type\":\"Bad Type\",\"user\":\"u\"}\n");
    std::fs::write(&events, lines).unwrap();
    let out = hunt(&[
        "simulate",
        "examples/black-friday-eggs.yaml",
        "--events",
        events.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(":3001: skipped"), "{err}");
    assert!(err.contains(":3002: skipped: `type` must match"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"], 3000);
    assert_eq!(v["bad_lines"], 2);
    let eggs = &v["hunts"][0];
    assert_eq!(eggs["hunt"], "golden-eggs");
    assert!(eggs["participants"].as_u64().unwrap() > 0);
    assert_eq!(eggs["funnel"].as_array().unwrap().len(), 5);
    let wrap = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "free-gift-wrap")
        .unwrap();
    assert_eq!(wrap["granted"], 3, "the 3-code pool runs out on the sample");
    assert!(wrap["ran_out_at"].is_string());

    let table = hunt(&[
        "simulate",
        "examples/black-friday-eggs.yaml",
        "--events",
        "examples/traffic/sample.ndjson",
    ]);
    let stdout = text(&table.stdout);
    assert!(
        stdout.contains("golden-eggs") && stdout.contains("Ran out at"),
        "{stdout}"
    );
}

#[test]
fn the_sample_traffic_is_what_the_readme_says() {
    // README: 3,000 events drawn from 120 customers, of whom 101 appear, made by this
    // command.
    let out = hunt(&[
        "gen-traffic",
        "--users",
        "120",
        "--events",
        "3000",
        "--seed",
        "2",
        "--hunters",
        "0.6",
        "--span",
        "6h",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let sample = std::fs::read(root().join("examples/traffic/sample.ndjson")).unwrap();
    assert_eq!(out.stdout, sample, "the README's command makes the sample");
    let users: std::collections::HashSet<String> = text(&sample)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user"].to_string())
        .collect();
    assert_eq!(text(&sample).lines().count(), 3000);
    assert_eq!(users.len(), 101);
}
