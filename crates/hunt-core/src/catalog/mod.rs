//! The validated, compiled form of a hunts file: what the engine runs.
//!
//! Stage two of reading a hunts file (stage one is `spec`): every reference is
//! resolved, every condition compiled, every rule checked, and every problem collected
//! with its place. A [`Catalog`] exists only for a file without errors; warnings travel
//! with it. Events are routed by an index from event type to candidate steps.
//!
//! Here: the model (catalog, pools, sinks, hunts, steps). `index.rs`: the index from
//! event type to candidate steps. `compile/`: building a catalog from a read file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod compile;
mod index;

pub use index::{Candidate, Candidates, TypeIndex};

/// Maps keyed by text from the hunts file: a fast hash with fixed seeds (their keys are
/// the file's, so no caller can flood them; lookups with event text only probe).
type FixedMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Gives each loaded catalog an identity for binding customer state to it.
static NEXT_CATALOG_ID: AtomicU64 = AtomicU64::new(1);

use crate::cond::Condition;
use crate::diag::{Report, Span};
use crate::spec::{self, Order};
use crate::time::{Duration, Timestamp};

/// The most steps a hunt may have (progress keeps found steps in a 64-bit set).
pub const STEPS_MAX: usize = 64;
/// The most codes a generated pool may hold.
pub const GENERATED_CODES_MAX: u64 = 1_000_000_000;
/// Default for `settings.max_lateness`.
pub const MAX_LATENESS_DEFAULT: Duration = Duration::from_secs(3600);
/// Default for a sink's `timeout`.
pub const SINK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Defaults for a sink's delivery settings.
pub const SINK_CONCURRENCY_DEFAULT: u32 = 8;
pub const SINK_ATTEMPTS_DEFAULT: u32 = 12;
pub const SINK_AGE_DEFAULT: Duration = Duration::from_secs(24 * 3600);
pub const SINK_BREAKER_FAILURES_DEFAULT: u32 = 5;
pub const SINK_BREAKER_OPEN_DEFAULT: Duration = Duration::from_secs(30);
/// The most deliveries one sink may have in flight.
pub const SINK_CONCURRENCY_MAX: u64 = 256;

/// A compiled hunts file.
#[derive(Debug)]
pub struct Catalog {
    pub pools: Vec<Pool>,
    pub sinks: Vec<Sink>,
    pub hunts: Vec<Hunt>,
    /// How far an event's own time may lag its receipt and still count.
    pub max_lateness: Duration,
    /// The file's test cases, checked and ready to run.
    pub tests: Vec<TestCase>,
    /// For each event type, the steps it can reveal, indexed by required field values.
    by_type: FixedMap<String, TypeIndex>,
    /// This catalog's identity in the process (never 0), to which customer state binds.
    pub id: u64,
}

/// A pool of reward codes.
#[derive(Debug)]
pub struct Pool {
    pub id: Arc<str>,
    pub codes: Codes,
}

/// Where a pool's codes come from.
#[derive(Debug)]
pub enum Codes {
    Listed(Vec<String>),
    Generated {
        prefix: String,
        digits: usize,
        start: u64,
        count: u64,
    },
}

impl Pool {
    /// How many codes the pool holds.
    pub fn size(&self) -> u64 {
        match &self.codes {
            Codes::Listed(c) => c.len() as u64,
            Codes::Generated { count, .. } => *count,
        }
    }

    /// The position of `code` in the pool, if it is one of its codes.
    pub fn index_of(&self, code: &str) -> Option<u64> {
        match &self.codes {
            Codes::Listed(c) => c.iter().position(|x| x == code).map(|i| i as u64),
            Codes::Generated {
                prefix,
                start,
                count,
                ..
            } => {
                let n: u64 = code.strip_prefix(prefix.as_str())?.parse().ok()?;
                let i = n.checked_sub(*start)?;
                (i < *count && self.code(i).as_deref() == Some(code)).then_some(i)
            }
        }
    }

    /// The `index`-th code (0-based), if the pool has that many.
    pub fn code(&self, index: u64) -> Option<String> {
        match &self.codes {
            Codes::Listed(c) => c.get(usize::try_from(index).ok()?).cloned(),
            Codes::Generated {
                prefix,
                digits,
                start,
                count,
            } => (index < *count)
                .then(|| format!("{prefix}{:0digits$}", start + index, digits = *digits)),
        }
    }
}

/// A notification destination (delivery is the server's job).
#[derive(Debug)]
pub struct Sink {
    pub id: Arc<str>,
    pub url: String,
    pub timeout: Duration,
    pub secret_env: Option<String>,
    pub concurrency: u32,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

/// A compiled hunt.
#[derive(Debug)]
pub struct Hunt {
    pub id: Arc<str>,
    pub title: Option<String>,
    /// Inclusive start, if any.
    pub from: Option<Timestamp>,
    /// Exclusive end, if any.
    pub until: Option<Timestamp>,
    pub audience: Option<Condition>,
    pub order: Order,
    pub steps: Vec<Step>,
    /// Step ids in order, as conditions see them in `progress.steps`.
    pub step_ids: Arc<[Arc<str>]>,
    /// The hunt's id and step ids, shared with the progress records laid out by them.
    pub layout: Arc<crate::engine::Layout>,
    pub complete_after: u32,
    pub reward: Option<Reward>,
    pub max_winners: Option<u64>,
    /// Indexes into [`Catalog::sinks`].
    pub notify: Vec<usize>,
}

impl Hunt {
    /// Whether `t` falls in the hunt's active window.
    pub fn is_active(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }
}

/// A compiled step.
#[derive(Debug)]
pub struct Step {
    pub id: Arc<str>,
    pub on: String,
    pub when: Condition,
    /// The `event.data` fields `when` reads (`a.b` for `event.data.a.b`), each with
    /// where it is written in the file: for `hunt check --events`.
    pub data_fields: Vec<(String, Span)>,
    pub count: u32,
    pub within: Option<Duration>,
    pub clue: Option<Arc<str>>,
}

/// A hunt's reward.
#[derive(Debug, Clone, Copy)]
pub struct Reward {
    /// Index into [`Catalog::pools`].
    pub pool: usize,
    pub per_user: u32,
}

/// A checked test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub events: Vec<crate::engine::Event>,
    pub expect: Vec<crate::testing::Expected>,
    /// Where the case was written, for reports.
    pub span: Span,
}

impl Catalog {
    /// Reads, validates and compiles a hunts file. `Err` carries a report with at least
    /// one error; `Ok` carries the catalog and a report of warnings (maybe empty).
    #[allow(clippy::result_large_err)]
    pub fn load(name: &str, source: &str) -> Result<(Catalog, Report), Report> {
        let source = Arc::new(source.to_string());
        let mut problems = Vec::new();
        let catalog = match crate::yaml::parse(&source) {
            Ok(root) => spec::read(&root, &mut problems)
                .and_then(|f| compile::compile(&f, &source, &mut problems)),
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let report = Report::new(name, source, problems);
        match catalog {
            Some(c) if report.errors() == 0 => Ok((c, report)),
            _ => Err(report),
        }
    }

    /// The steps an event can reveal (a superset: their conditions still decide).
    pub fn candidates(
        &self,
        kind: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Candidates> {
        self.by_type.get(kind).map(|ix| ix.candidates(data))
    }

    pub fn hunt_index(&self, id: &str) -> Option<usize> {
        self.hunts.iter().position(|h| &*h.id == id)
    }

    /// Run-time condition failures so far, per hunt and condition (`audience` or a step id).
    pub fn condition_errors(&self) -> Vec<(Arc<str>, Arc<str>, u64)> {
        let mut out = Vec::new();
        for h in &self.hunts {
            if let Some(a) = &h.audience
                && a.error_count() > 0
            {
                out.push((h.id.clone(), Arc::from("audience"), a.error_count()));
            }
            for s in &h.steps {
                if s.when.error_count() > 0 {
                    out.push((h.id.clone(), s.id.clone(), s.when.error_count()));
                }
            }
        }
        out
    }
}

/// Event types: `[a-z0-9_.:-]{1,64}`, as in the product contract.
pub fn is_valid_event_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}
