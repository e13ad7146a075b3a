//! Conditions: CEL expressions compiled once when a hunts file loads.
//!
//! A condition sees `event` (`id`, `type`, `time`, `data`), `user` (`id`, `traits`) and
//! `progress` (`found`, `steps`), depending on where it is written. The common shapes —
//! a field compared with a literal, `in` a literal list, `contains`/`startsWith`/
//! `endsWith`, `has()`, joined by `&&`, `||`, `!` — run on a native fast path over the
//! event's JSON, without building CEL values; anything else runs in the CEL
//! interpreter. Both give the same answer (a differential test holds them to it).
//!
//! A condition that fails at run time (missing field, wrong type) is false; the failure
//! is counted on the condition and never stops the engine.
//!
//! Here: compiling a condition and evaluating it by its plan. `check.rs`: the variables
//! a condition may use. `fast.rs`: the native fast path. `interpreter.rs`: the CEL
//! interpreter path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value as Json;

use crate::time::Timestamp;

mod check;
mod fast;
mod interpreter;
#[cfg(test)]
mod tests;

use check::{check_variables, data_paths, place_of};
use fast::Pred;
use interpreter::eval_cel;
pub use interpreter::json_to_cel;

/// Which variables a condition may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A hunt's `audience`: `user` only.
    Audience,
    /// A step's `when`: `event`, `user`, `progress`.
    Step,
}

impl Scope {
    fn variables(self) -> &'static [&'static str] {
        match self {
            Scope::Audience => &["user"],
            Scope::Step => &["event", "user", "progress"],
        }
    }
}

/// A compile problem, with its byte range inside the expression's text.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: Option<String>,
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub event: Option<EventView<'a>>,
    pub user_id: &'a str,
    pub traits: &'a crate::engine::Traits,
    pub progress: Option<ProgressView<'a>>,
}

/// The parts of an event a condition can see.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub time: Timestamp,
    pub data: &'a serde_json::Map<String, Json>,
}

/// A customer's progress in the hunt the condition belongs to.
#[derive(Debug, Clone, Copy)]
pub struct ProgressView<'a> {
    /// Steps found so far.
    pub found: u32,
    /// Step ids and, beside them, how many matching events each has seen.
    pub step_ids: &'a [Arc<str>],
    pub counts: &'a [u32],
}

/// A field below `event.data` that a condition reads, with where its first part is
/// written inside the condition's text.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPath {
    /// The parts below `data`: `["a", "b"]` for `event.data.a.b`.
    pub path: Vec<String>,
    pub offset: usize,
    pub len: usize,
}

impl DataPath {
    /// `a.b`
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// A compiled condition.
pub struct Condition {
    source: String,
    /// The `event.data` fields it reads.
    data_paths: Vec<DataPath>,
    plan: Plan,
    /// The CEL program, kept for [`Condition::eval_interpreted`] even when the fast path
    /// runs.
    program: Option<Arc<cel::Program>>,
    /// Whether the condition reads `progress` (the engine then loads progress first).
    uses_progress: bool,
    /// Run-time failures (missing field, wrong type), each of which counted as false.
    errors: AtomicU64,
}

enum Plan {
    Fast(Pred),
    Cel(Arc<cel::Program>),
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("fast", &self.is_fast())
            .finish()
    }
}

/// The longest condition accepted, in bytes: conditions are one-liners; this bounds the
/// parser's work on a mistaken paste.
pub const CONDITION_BYTES_MAX: usize = 4096;

impl Condition {
    /// Compiles `source` for `scope`; every problem found is returned.
    pub fn compile(source: &str, scope: Scope) -> Result<Condition, Vec<CompileError>> {
        if source.len() > CONDITION_BYTES_MAX {
            return Err(vec![CompileError {
                offset: 0,
                len: 0,
                message: format!(
                    "condition is {} bytes, over the limit of {CONDITION_BYTES_MAX}",
                    source.len()
                ),
                help: None,
            }]);
        }
        if source.trim().is_empty() {
            return Err(vec![CompileError {
                offset: 0,
                len: 0,
                message: "empty condition".into(),
                help: Some("write a CEL expression, e.g. `event.data.category == \"shoes\"`, or leave the field out".into()),
            }]);
        }
        // The CEL parser is third-party code; a panic inside it must not take us down.
        let parsed = std::panic::catch_unwind(|| cel::Program::compile(source));
        let program = match parsed {
            Ok(Ok(p)) => p,
            Ok(Err(errs)) => {
                return Err(errs
                    .errors
                    .iter()
                    .map(|e| {
                        let (line, col) = (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize);
                        CompileError {
                            offset: crate::diag::offset_of(source, line, col),
                            len: 1,
                            message: format!("invalid condition: {}", e.msg),
                            help: Some("conditions are CEL, e.g. `event.data.price >= 50 && user.traits.tier == \"gold\"`".into()),
                        }
                    })
                    .collect());
            }
            Err(_) => {
                return Err(vec![CompileError {
                    offset: 0,
                    len: source.len(),
                    message: "the CEL parser could not read this condition".into(),
                    help: None,
                }]);
            }
        };
        let mut errors = Vec::new();
        check_variables(
            &program,
            program.expression(),
            scope,
            &mut Vec::new(),
            source,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let uses_progress = program.references().has_variable("progress");
        let mut found = Vec::new();
        data_paths(program.expression(), &mut Vec::new(), &mut found);
        let data_paths = found
            .into_iter()
            .map(|(path, id)| {
                let (offset, len) = place_of(&program, id, &["event", "data", &path[0]], source);
                DataPath { path, offset, len }
            })
            .collect();
        let program = Arc::new(program);
        let plan = match Pred::from_expr(program.expression()) {
            Some(pred) => Plan::Fast(pred),
            None => Plan::Cel(program.clone()),
        };
        Ok(Condition {
            source: source.to_string(),
            data_paths,
            plan,
            program: Some(program),
            uses_progress,
            errors: AtomicU64::new(0),
        })
    }

    /// A condition that always holds (a step without `when`).
    pub fn always() -> Condition {
        Condition {
            source: "true".into(),
            data_paths: Vec::new(),
            plan: Plan::Fast(Pred::Const(true)),
            program: None,
            uses_progress: false,
            errors: AtomicU64::new(0),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `event.data` fields it reads, in the order they are written.
    pub fn data_paths(&self) -> &[DataPath] {
        &self.data_paths
    }

    /// Whether this condition runs on the native fast path.
    pub fn is_fast(&self) -> bool {
        matches!(self.plan, Plan::Fast(_))
    }

    /// Whether the condition is false for every event of type `on` (an empty `on`:
    /// for every input), as far as its shape shows. Used to warn of steps that can
    /// never be found.
    pub fn never_holds_for(&self, on: &str) -> bool {
        match &self.plan {
            Plan::Fast(p) => p.never(on),
            Plan::Cel(_) => false,
        }
    }

    /// A conjunct the condition requires: `event.data.<path>` must equal one of these
    /// strings, or the whole condition is false. The catalog indexes steps by it.
    pub fn required_equality(&self) -> Option<(&[String], Vec<&str>)> {
        match &self.plan {
            Plan::Fast(p) => p.key(),
            Plan::Cel(_) => None,
        }
    }

    /// Whether the condition reads `progress`.
    pub fn uses_progress(&self) -> bool {
        self.uses_progress
    }

    /// Counts one failed evaluation made through [`Condition::eval_checked`].
    pub fn count_failure(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// How many evaluations failed at run time (and counted as false).
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// True when the condition holds; false when it does not or cannot be evaluated.
    pub fn eval(&self, input: &Input) -> bool {
        match self.eval_checked(input) {
            Ok(b) => b,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The result, or why the condition could not be evaluated.
    pub fn eval_checked(&self, input: &Input) -> Result<bool, String> {
        match &self.plan {
            Plan::Fast(p) => p.eval(input).map_err(|()| "evaluation failed".to_string()),
            Plan::Cel(program) => eval_cel(program, input),
        }
    }

    /// Evaluates through the CEL interpreter only, ignoring the fast path (for tests
    /// and the reference model).
    pub fn eval_interpreted(&self, input: &Input) -> Result<bool, String> {
        match &self.program {
            Some(p) => eval_cel(p, input),
            None => Ok(true),
        }
    }
}
