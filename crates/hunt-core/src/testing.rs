//! Test cases written in a hunts file: events in, outcomes expected.
//!
//! An expected outcome is one line, in the same words the runner prints:
//! `USER found HUNT/STEP`, `USER completed HUNT`, `USER granted HUNT [CODE]`,
//! `USER denied HUNT REASON`, `USER cold HUNT/STEP`. A case passes when the outcomes
//! of its events, in order, are exactly the expected ones; a failure shows a diff.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, TestCase};
use crate::diag::{Problem, did_you_mean};
use crate::engine::{DenyReason, Engine, Event, LocalAllocator, Outcome, UserState};
use crate::spec::{HuntSpec, Sp, TestSpec};
use crate::time::{Duration, Timestamp};

/// One expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Found {
        user: String,
        hunt: String,
        step: String,
    },
    Completed {
        user: String,
        hunt: String,
    },
    /// `code: None` accepts any code.
    Granted {
        user: String,
        hunt: String,
        code: Option<String>,
    },
    Denied {
        user: String,
        hunt: String,
        reason: DenyReason,
    },
    Cold {
        user: String,
        hunt: String,
        step: String,
    },
}

const SYNTAX: &str = "write `USER found HUNT/STEP`, `USER completed HUNT`, `USER granted HUNT [CODE]`, \
                      `USER denied HUNT REASON` or `USER cold HUNT/STEP`";

impl Expected {
    /// Parses one line; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Expected, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let split = |w: &str| -> Result<(String, String), String> {
            w.split_once('/')
                .filter(|(h, s)| !h.is_empty() && !s.is_empty())
                .map(|(h, s)| (h.to_string(), s.to_string()))
                .ok_or_else(|| format!("expected HUNT/STEP, found `{w}`"))
        };
        match words.as_slice() {
            [user, "found", hs] => {
                let (hunt, step) = split(hs)?;
                Ok(Expected::Found {
                    user: user.to_string(),
                    hunt,
                    step,
                })
            }
            [user, "cold", hs] => {
                let (hunt, step) = split(hs)?;
                Ok(Expected::Cold {
                    user: user.to_string(),
                    hunt,
                    step,
                })
            }
            [user, "completed", hunt] => Ok(Expected::Completed {
                user: user.to_string(),
                hunt: hunt.to_string(),
            }),
            [user, "granted", hunt] => Ok(Expected::Granted {
                user: user.to_string(),
                hunt: hunt.to_string(),
                code: None,
            }),
            [user, "granted", hunt, code] => Ok(Expected::Granted {
                user: user.to_string(),
                hunt: hunt.to_string(),
                code: Some(code.to_string()),
            }),
            [user, "denied", hunt, reason] => match DenyReason::parse(reason) {
                Some(reason) => Ok(Expected::Denied {
                    user: user.to_string(),
                    hunt: hunt.to_string(),
                    reason,
                }),
                None => Err(format!(
                    "unknown reason `{reason}`: use pool_empty, winners_cap, per_user_limit or not_in_audience"
                )),
            },
            [_, verb, ..]
                if !["found", "cold", "completed", "granted", "denied"].contains(verb) =>
            {
                let hint = did_you_mean(verb, ["found", "cold", "completed", "granted", "denied"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                Err(format!("unknown outcome `{verb}`{hint}; {SYNTAX}"))
            }
            _ => Err(format!("cannot read `{line}`; {SYNTAX}")),
        }
    }

    fn hunt_and_step(&self) -> (&str, Option<&str>) {
        match self {
            Expected::Found { hunt, step, .. } | Expected::Cold { hunt, step, .. } => {
                (hunt, Some(step))
            }
            Expected::Completed { hunt, .. }
            | Expected::Granted { hunt, .. }
            | Expected::Denied { hunt, .. } => (hunt, None),
        }
    }

    /// Whether an actual outcome for `user` is this expectation.
    pub fn matches(&self, user: &str, o: &Outcome) -> bool {
        match (self, o) {
            (
                Expected::Found {
                    user: u,
                    hunt: h,
                    step: s,
                },
                Outcome::StepFound { hunt, step, .. },
            )
            | (
                Expected::Cold {
                    user: u,
                    hunt: h,
                    step: s,
                },
                Outcome::TrailCold { hunt, step },
            ) => u == user && **h == **hunt && **s == **step,
            (Expected::Completed { user: u, hunt: h }, Outcome::HuntCompleted { hunt }) => {
                u == user && **h == **hunt
            }
            (
                Expected::Granted {
                    user: u,
                    hunt: h,
                    code: c,
                },
                Outcome::RewardGranted { hunt, code, .. },
            ) => u == user && **h == **hunt && c.as_ref().is_none_or(|c| c == code),
            (
                Expected::Denied {
                    user: u,
                    hunt: h,
                    reason: r,
                },
                Outcome::RewardDenied { hunt, reason, .. },
            ) => u == user && **h == **hunt && r == reason,
            _ => false,
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Found { user, hunt, step } => write!(f, "{user} found {hunt}/{step}"),
            Expected::Cold { user, hunt, step } => write!(f, "{user} cold {hunt}/{step}"),
            Expected::Completed { user, hunt } => write!(f, "{user} completed {hunt}"),
            Expected::Granted {
                user,
                hunt,
                code: Some(c),
            } => write!(f, "{user} granted {hunt} {c}"),
            Expected::Granted {
                user,
                hunt,
                code: None,
            } => write!(f, "{user} granted {hunt}"),
            Expected::Denied { user, hunt, reason } => {
                write!(f, "{user} denied {hunt} {}", reason.as_str())
            }
        }
    }
}

/// An outcome in the words of an expectation.
pub fn describe(user: &str, o: &Outcome) -> String {
    match o {
        Outcome::StepFound { hunt, step, .. } => format!("{user} found {hunt}/{step}"),
        Outcome::TrailCold { hunt, step } => format!("{user} cold {hunt}/{step}"),
        Outcome::HuntCompleted { hunt } => format!("{user} completed {hunt}"),
        Outcome::RewardGranted { hunt, code, .. } => format!("{user} granted {hunt} {code}"),
        Outcome::RewardDenied { hunt, reason, .. } => {
            format!("{user} denied {hunt} {}", reason.as_str())
        }
    }
}

/// Checks and converts a file's test cases, reporting problems into `problems`.
pub fn compile_cases(
    problems: &mut Vec<Problem>,
    tests: &[TestSpec],
    hunts: &[HuntSpec],
) -> Vec<TestCase> {
    let default_start = hunts
        .iter()
        .filter_map(|h| h.active.as_ref()?.from.as_ref())
        .filter_map(|t| Timestamp::parse(&t.value).ok())
        .min();
    let steps_of: HashMap<&str, Vec<&str>> = hunts
        .iter()
        .map(|h| {
            (
                h.id.value.as_str(),
                h.steps.iter().map(|s| s.id.value.as_str()).collect(),
            )
        })
        .collect();
    let hunt_ids: Vec<&str> = hunts.iter().map(|h| h.id.value.as_str()).collect();
    let mut cases = Vec::new();
    for t in tests {
        let before = problems.len();
        let start = match &t.start {
            Some(s) => match Timestamp::parse(&s.value) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(Problem::error(s.span, format!("bad `start`: {e}")));
                    None
                }
            },
            None => default_start,
        };
        let mut events = Vec::new();
        let mut at = start;
        for (i, e) in t.events.iter().enumerate() {
            if let Some(a) = &e.at {
                at = event_time(problems, a, start, &t.name);
            } else if at.is_none() {
                problems.push(
                    Problem::error(
                        e.user.span,
                        format!("test `{}`: this event has no time", t.name.value),
                    )
                    .with_help("give the event `at:` (a time, or `+5m` after the case's `start`)"),
                );
            }
            let event = Event {
                id: e.id.clone().unwrap_or_else(|| format!("t{}", i + 1)),
                kind: e.kind.value.clone(),
                user: e.user.value.clone(),
                time: at,
                data: e.data.clone().unwrap_or_default(),
                traits: e.traits.clone().unwrap_or_default(),
            };
            if let Err(msg) = event.validate() {
                problems.push(Problem::error(
                    e.kind.span,
                    format!("test `{}`: invalid event: {msg}", t.name.value),
                ));
            }
            events.push(event);
        }
        let mut expect = Vec::new();
        for line in &t.expect {
            match Expected::parse(&line.value) {
                Ok(x) => {
                    check_refs(problems, &x, line, &hunt_ids, &steps_of);
                    expect.push(x);
                }
                Err(msg) => problems.push(Problem::error(line.span, msg)),
            }
        }
        if problems.len() == before {
            cases.push(TestCase {
                name: t.name.value.clone(),
                events,
                expect,
                span: t.name.span,
            });
        }
    }
    cases
}

fn event_time(
    problems: &mut Vec<Problem>,
    a: &Sp<String>,
    start: Option<Timestamp>,
    name: &Sp<String>,
) -> Option<Timestamp> {
    if let Some(rel) = a.value.trim().strip_prefix('+') {
        let d = match Duration::parse(rel) {
            Ok(d) => d,
            Err(e) => {
                problems.push(Problem::error(a.span, format!("bad `at`: {e}")));
                return None;
            }
        };
        match start {
            Some(s) => Some(s.plus(d)),
            None => {
                problems.push(
                    Problem::error(
                        a.span,
                        format!(
                            "test `{}` uses a relative time but has no `start`",
                            name.value
                        ),
                    )
                    .with_help(
                        "give the case `start:`, or give a hunt `active.from` to count from",
                    ),
                );
                None
            }
        }
    } else {
        match Timestamp::parse(&a.value) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(
                    Problem::error(a.span, format!("bad `at`: {e}"))
                        .with_help("or write `+5m` after `start`"),
                );
                None
            }
        }
    }
}

fn check_refs(
    problems: &mut Vec<Problem>,
    x: &Expected,
    line: &Sp<String>,
    hunt_ids: &[&str],
    steps_of: &HashMap<&str, Vec<&str>>,
) {
    let (hunt, step) = x.hunt_and_step();
    let Some(steps) = steps_of.get(hunt) else {
        let mut p = Problem::error(
            line.span,
            format!("unknown hunt `{hunt}` in an expected outcome"),
        );
        if let Some(s) = did_you_mean(hunt, hunt_ids.iter().copied()) {
            p = p.with_help(format!("did you mean `{s}`?"));
        }
        problems.push(p);
        return;
    };
    if let Some(step) = step
        && !steps.contains(&step)
    {
        let mut p = Problem::error(line.span, format!("hunt `{hunt}` has no step `{step}`"));
        if let Some(s) = did_you_mean(step, steps.iter().copied()) {
            p = p.with_help(format!("did you mean `{s}`?"));
        }
        problems.push(p);
    }
}

/// A line of a case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    /// Expected and produced.
    Same(String),
    /// Expected but not produced.
    Missing(String),
    /// Produced but not expected.
    Unexpected(String),
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub diff: Vec<DiffLine>,
}

/// Runs one case from a fresh state: each event is received at its own time.
pub fn run_case(catalog: &Arc<Catalog>, case: &TestCase) -> CaseResult {
    let engine = Engine::new(catalog.clone());
    let mut alloc = LocalAllocator::new(catalog);
    let mut users: HashMap<&str, UserState> = HashMap::new();
    let mut actual: Vec<(String, Outcome)> = Vec::new();
    let mut out = Vec::new();
    for e in &case.events {
        let received = e.time.unwrap_or_default();
        out.clear();
        engine.apply(
            users.entry(&e.user).or_default(),
            e,
            received,
            &mut alloc,
            &mut out,
        );
        actual.extend(out.drain(..).map(|o| (e.user.clone(), o)));
    }
    let diff = diff(&case.expect, &actual);
    let passed = diff.iter().all(|d| matches!(d, DiffLine::Same(_)));
    CaseResult {
        name: case.name.clone(),
        passed,
        diff,
    }
}

/// A longest-common-subsequence diff of expected against actual outcomes.
fn diff(expect: &[Expected], actual: &[(String, Outcome)]) -> Vec<DiffLine> {
    let (n, m) = (expect.len(), actual.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expect[i].matches(&actual[j].0, &actual[j].1) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && expect[i].matches(&actual[j].0, &actual[j].1) {
            out.push(DiffLine::Same(describe(&actual[j].0, &actual[j].1)));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(DiffLine::Unexpected(describe(&actual[j].0, &actual[j].1)));
            j += 1;
        } else {
            out.push(DiffLine::Missing(expect[i].to_string()));
            i += 1;
        }
    }
    out
}
