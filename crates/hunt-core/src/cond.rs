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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cel::common::ast::{Expr, LiteralValue, operators};
use serde_json::Value as Json;

use crate::time::Timestamp;

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

/// A compiled condition.
pub struct Condition {
    source: String,
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
        let program = Arc::new(program);
        let plan = match Pred::from_expr(program.expression()) {
            Some(pred) => Plan::Fast(pred),
            None => Plan::Cel(program.clone()),
        };
        Ok(Condition {
            source: source.to_string(),
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
            plan: Plan::Fast(Pred::Const(true)),
            program: None,
            uses_progress: false,
            errors: AtomicU64::new(0),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
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

/// Reports identifiers that are not variables of `scope`, with a suggestion.
fn check_variables(
    program: &cel::Program,
    e: &cel::IdedExpr,
    scope: Scope,
    bound: &mut Vec<String>,
    source: &str,
    out: &mut Vec<CompileError>,
) {
    match &e.expr {
        Expr::Ident(name) => {
            if name.starts_with('@')
                || bound.iter().any(|b| b == name)
                || scope.variables().contains(&name.as_str())
            {
                return;
            }
            let (offset, len) = program
                .source_info()
                .offset_for(e.id)
                .map(|(s, t)| (s as usize, (t.saturating_sub(s)) as usize))
                .unwrap_or((0, 0));
            let offset = char_to_byte(source, offset);
            let vars = scope.variables();
            let help = match crate::diag::did_you_mean(name, vars.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => match scope {
                    Scope::Audience => {
                        "an audience sees only `user` (`user.id`, `user.traits`)".to_string()
                    }
                    Scope::Step => {
                        "a step condition sees `event`, `user` and `progress`".to_string()
                    }
                },
            };
            out.push(CompileError {
                offset,
                len: len.max(name.len()),
                message: format!("unknown variable `{name}`"),
                help: Some(help),
            });
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                check_variables(program, t, scope, bound, source, out);
            }
            for a in &c.args {
                check_variables(program, a, scope, bound, source, out);
            }
        }
        Expr::Select(s) => check_variables(program, &s.operand, scope, bound, source, out),
        Expr::List(l) => {
            for x in &l.elements {
                check_variables(program, x, scope, bound, source, out);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    check_variables(program, &me.key, scope, bound, source, out);
                    check_variables(program, &me.value, scope, bound, source, out);
                }
            }
        }
        Expr::Comprehension(c) => {
            check_variables(program, &c.iter_range, scope, bound, source, out);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            for x in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                check_variables(program, x, scope, bound, source, out);
            }
            bound.truncate(depth);
        }
        Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map(|(b, _)| b)
        .unwrap_or(text.len())
}

// ---------------------------------------------------------------------------------------
// The CEL interpreter path.

thread_local! {
    /// The standard environment, built once per thread (building it is not cheap).
    static ENV: Arc<cel::Env> = Arc::new(cel::Env::stdlib());
}

fn eval_cel(program: &cel::Program, input: &Input) -> Result<bool, String> {
    let env = ENV.with(Arc::clone);
    let mut ctx = cel::Context::with_env(env);
    if let Some(ev) = input.event {
        let mut m = std::collections::HashMap::new();
        m.insert(key("id"), cel::Value::String(Arc::new(ev.id.to_string())));
        m.insert(
            key("type"),
            cel::Value::String(Arc::new(ev.kind.to_string())),
        );
        m.insert(key("time"), cel::Value::Timestamp(ev.time.to_chrono()));
        m.insert(key("data"), json_map_to_cel(ev.data));
        ctx.add_variable_from_value(
            "event",
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) }),
        );
    }
    let mut u = std::collections::HashMap::new();
    u.insert(
        key("id"),
        cel::Value::String(Arc::new(input.user_id.to_string())),
    );
    let traits = input
        .traits
        .iter()
        .map(|(k, v)| (key(k), json_to_cel(v)))
        .collect();
    u.insert(
        key("traits"),
        cel::Value::Map(cel::objects::Map {
            map: Arc::new(traits),
        }),
    );
    ctx.add_variable_from_value(
        "user",
        cel::Value::Map(cel::objects::Map { map: Arc::new(u) }),
    );
    if let Some(p) = input.progress {
        let steps: std::collections::HashMap<_, _> = p
            .step_ids
            .iter()
            .zip(p.counts)
            .map(|(id, n)| (key(id), cel::Value::Int(i64::from(*n))))
            .collect();
        let mut m = std::collections::HashMap::new();
        m.insert(key("found"), cel::Value::Int(i64::from(p.found)));
        m.insert(
            key("steps"),
            cel::Value::Map(cel::objects::Map {
                map: Arc::new(steps),
            }),
        );
        ctx.add_variable_from_value(
            "progress",
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) }),
        );
    }
    // A panic inside the interpreter is a failed evaluation, never a crash of the engine.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx)))
        .map_err(|_| "the CEL interpreter failed".to_string())?;
    match result {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "condition gave {:?}, not a boolean",
            other.type_of()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn key(s: &str) -> cel::objects::Key {
    cel::objects::Key::String(Arc::new(s.to_string()))
}

fn json_map_to_cel(m: &serde_json::Map<String, Json>) -> cel::Value {
    let map = m.iter().map(|(k, v)| (key(k), json_to_cel(v))).collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// JSON to CEL: integers that fit `i64` are `int`, larger ones `uint`, others `double`.
pub fn json_to_cel(v: &Json) -> cel::Value {
    match v {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(a) => cel::Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(m) => json_map_to_cel(m),
    }
}

// ---------------------------------------------------------------------------------------
// The fast path.

/// A condition in a shape the fast path evaluates natively.
#[derive(Debug, Clone, PartialEq)]
enum Pred {
    Const(bool),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
    Cmp(Path, CmpOp, Lit),
    In(Path, Vec<Lit>),
    Str(Path, StrOp, String),
    Has(Path),
    /// A boolean field used as a condition on its own.
    Truthy(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

/// A field a condition reads.
#[derive(Debug, Clone, PartialEq)]
enum Path {
    EventId,
    EventType,
    /// `event.data` followed by keys.
    EventData(Vec<String>),
    UserId,
    /// `user.traits` followed by keys.
    UserTraits(Vec<String>),
    ProgressFound,
}

/// A value read from the input, borrowed.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    /// A list or a map: only equality (always unequal to a literal) is decided here.
    Composite,
}

impl Pred {
    fn from_expr(e: &cel::IdedExpr) -> Option<Pred> {
        match &e.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => Some(Pred::Const(**b)),
            Expr::Call(c) if c.target.is_none() => {
                let f = c.func_name.as_str();
                match (f, c.args.as_slice()) {
                    (operators::LOGICAL_AND, [a, b]) => Some(Pred::And(
                        Box::new(Pred::from_expr(a)?),
                        Box::new(Pred::from_expr(b)?),
                    )),
                    (operators::LOGICAL_OR, [a, b]) => Some(Pred::Or(
                        Box::new(Pred::from_expr(a)?),
                        Box::new(Pred::from_expr(b)?),
                    )),
                    (operators::LOGICAL_NOT, [a]) => Some(Pred::Not(Box::new(Pred::from_expr(a)?))),
                    (operators::IN, [a, list]) => {
                        let path = Path::from_expr(a)?;
                        let Expr::List(l) = &list.expr else {
                            return None;
                        };
                        let lits = l
                            .elements
                            .iter()
                            .map(Lit::from_expr)
                            .collect::<Option<Vec<_>>>()?;
                        Some(Pred::In(path, lits))
                    }
                    (_, [a, b]) => {
                        let op = match f {
                            operators::EQUALS => CmpOp::Eq,
                            operators::NOT_EQUALS => CmpOp::Ne,
                            operators::LESS => CmpOp::Lt,
                            operators::LESS_EQUALS => CmpOp::Le,
                            operators::GREATER => CmpOp::Gt,
                            operators::GREATER_EQUALS => CmpOp::Ge,
                            _ => return None,
                        };
                        if let (Some(p), Some(l)) = (Path::from_expr(a), Lit::from_expr(b)) {
                            Some(Pred::Cmp(p, op, l))
                        } else if let (Some(l), Some(p)) = (Lit::from_expr(a), Path::from_expr(b)) {
                            Some(Pred::Cmp(p, op.flipped(), l))
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            }
            Expr::Call(c) => {
                let target = c.target.as_ref()?;
                let op = match c.func_name.as_str() {
                    "contains" => StrOp::Contains,
                    "startsWith" => StrOp::StartsWith,
                    "endsWith" => StrOp::EndsWith,
                    _ => return None,
                };
                let [arg] = c.args.as_slice() else {
                    return None;
                };
                let Some(Lit::Str(s)) = Lit::from_expr(arg) else {
                    return None;
                };
                Some(Pred::Str(Path::from_expr(target)?, op, s))
            }
            Expr::Select(s) if s.test => {
                // `has(x.f)`: only on maps we can see into.
                let mut parent = Path::from_expr_maps(&s.operand, true)?;
                match &mut parent {
                    Path::EventData(keys) | Path::UserTraits(keys) => keys.push(s.field.clone()),
                    _ => return None,
                }
                Some(Pred::Has(parent))
            }
            Expr::Select(_) => Some(Pred::Truthy(Path::from_expr(e)?)),
            _ => None,
        }
    }

    /// See [`Condition::required_equality`]. `a && b` is false when either side is
    /// false (whatever the other side does), so a key on either side holds for both.
    fn key(&self) -> Option<(&[String], Vec<&str>)> {
        match self {
            Pred::Cmp(Path::EventData(k), CmpOp::Eq, Lit::Str(s)) if !k.is_empty() => {
                Some((k, vec![s.as_str()]))
            }
            Pred::In(Path::EventData(k), lits) if !k.is_empty() => {
                let strs: Option<Vec<&str>> = lits
                    .iter()
                    .map(|l| match l {
                        Lit::Str(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                strs.map(|s| (k.as_slice(), s))
            }
            Pred::And(a, b) => a.key().or_else(|| b.key()),
            _ => None,
        }
    }

    fn never(&self, on: &str) -> bool {
        match self {
            Pred::Const(b) => !b,
            Pred::Cmp(Path::EventType, CmpOp::Eq, Lit::Str(s)) => !on.is_empty() && s != on,
            Pred::In(Path::EventType, lits) => {
                !on.is_empty() && !lits.iter().any(|l| matches!(l, Lit::Str(s) if s == on))
            }
            Pred::And(a, b) => a.never(on) || b.never(on),
            Pred::Or(a, b) => a.never(on) && b.never(on),
            _ => false,
        }
    }

    fn eval(&self, input: &Input) -> Result<bool, ()> {
        match self {
            Pred::Const(b) => Ok(*b),
            // CEL's logic: a definite answer on either side wins over an error.
            Pred::And(a, b) => match a.eval(input) {
                Ok(false) => Ok(false),
                Ok(true) => b.eval(input),
                Err(()) => match b.eval(input) {
                    Ok(false) => Ok(false),
                    _ => Err(()),
                },
            },
            Pred::Or(a, b) => match a.eval(input) {
                Ok(true) => Ok(true),
                Ok(false) => b.eval(input),
                Err(()) => match b.eval(input) {
                    Ok(true) => Ok(true),
                    _ => Err(()),
                },
            },
            Pred::Not(a) => a.eval(input).map(|b| !b),
            Pred::Cmp(path, op, lit) => compare(path.read(input)?, *op, lit),
            Pred::In(path, lits) => {
                let v = path.read(input)?;
                let mut any = false;
                for l in lits {
                    if equals(v, l)? {
                        any = true;
                        break;
                    }
                }
                Ok(any)
            }
            Pred::Str(path, op, needle) => match path.read(input)? {
                Val::Str(s) => Ok(match op {
                    StrOp::Contains => s.contains(needle.as_str()),
                    StrOp::StartsWith => s.starts_with(needle.as_str()),
                    StrOp::EndsWith => s.ends_with(needle.as_str()),
                }),
                _ => Err(()),
            },
            Pred::Has(path) => path.has(input),
            Pred::Truthy(path) => match path.read(input)? {
                Val::Bool(b) => Ok(b),
                _ => Err(()),
            },
        }
    }
}

impl CmpOp {
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            op => op,
        }
    }
}

impl Lit {
    fn from_expr(e: &cel::IdedExpr) -> Option<Lit> {
        match &e.expr {
            Expr::Literal(l) => Some(match l {
                LiteralValue::Null => Lit::Null,
                LiteralValue::Boolean(b) => Lit::Bool(**b),
                LiteralValue::Int(i) => Lit::Int(**i),
                LiteralValue::UInt(u) => Lit::UInt(**u),
                LiteralValue::Double(d) => Lit::Float(**d),
                LiteralValue::String(s) => Lit::Str(s.inner().to_string()),
                LiteralValue::Bytes(_) => return None,
            }),
            // `-5` parses as a negation call on a literal.
            Expr::Call(c)
                if c.func_name == operators::NEGATE && c.target.is_none() && c.args.len() == 1 =>
            {
                match Lit::from_expr(&c.args[0])? {
                    Lit::Int(i) => i.checked_neg().map(Lit::Int),
                    Lit::Float(f) => Some(Lit::Float(-f)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl Path {
    fn from_expr(e: &cel::IdedExpr) -> Option<Path> {
        Path::from_expr_maps(e, false)
    }

    /// A path; with `whole_maps`, `event.data` and `user.traits` themselves are paths too
    /// (only `has()` reads them so).
    fn from_expr_maps(e: &cel::IdedExpr, whole_maps: bool) -> Option<Path> {
        // Collect `root.a.b["c"]` from the outside in.
        let mut keys = Vec::new();
        let mut cur = e;
        let root = loop {
            match &cur.expr {
                Expr::Select(s) if !s.test => {
                    keys.push(s.field.clone());
                    cur = &s.operand;
                }
                Expr::Call(c)
                    if c.func_name == operators::INDEX
                        && c.target.is_none()
                        && c.args.len() == 2 =>
                {
                    let Some(Lit::Str(k)) = Lit::from_expr(&c.args[1]) else {
                        return None;
                    };
                    keys.push(k);
                    cur = &c.args[0];
                }
                Expr::Ident(name) => break name.as_str(),
                _ => return None,
            }
        };
        keys.reverse();
        let mut it = keys.into_iter();
        let first = it.next()?;
        let rest: Vec<String> = it.collect();
        match (root, first.as_str(), rest.len()) {
            ("event", "id", 0) => Some(Path::EventId),
            ("event", "type", 0) => Some(Path::EventType),
            ("event", "data", _) if whole_maps || !rest.is_empty() => Some(Path::EventData(rest)),
            ("user", "id", 0) => Some(Path::UserId),
            ("user", "traits", _) if whole_maps || !rest.is_empty() => Some(Path::UserTraits(rest)),
            ("progress", "found", 0) => Some(Path::ProgressFound),
            _ => None,
        }
    }

    fn read<'a>(&self, input: &Input<'a>) -> Result<Val<'a>, ()> {
        match self {
            Path::EventId => input.event.map(|e| Val::Str(e.id)).ok_or(()),
            Path::EventType => input.event.map(|e| Val::Str(e.kind)).ok_or(()),
            Path::EventData(keys) => {
                let data = input.event.ok_or(())?.data;
                lookup(|k| data.get(k), keys)
            }
            Path::UserId => Ok(Val::Str(input.user_id)),
            Path::UserTraits(keys) => lookup(|k| input.traits.get(k), keys),
            Path::ProgressFound => input
                .progress
                .map(|p| Val::Int(i64::from(p.found)))
                .ok_or(()),
        }
    }

    fn has(&self, input: &Input) -> Result<bool, ()> {
        let data = match self {
            Path::EventData(_) => Some(input.event.ok_or(())?.data),
            Path::UserTraits(_) => None,
            _ => return Err(()),
        };
        let top = |k: &str| match data {
            Some(d) => d.get(k),
            None => input.traits.get(k),
        };
        let (Path::EventData(keys) | Path::UserTraits(keys)) = self else {
            return Err(());
        };
        let (last, parents) = keys.split_last().ok_or(())?;
        let Some((first, parents)) = parents.split_first() else {
            return Ok(top(last).is_some());
        };
        let mut m = match top(first) {
            Some(Json::Object(inner)) => inner,
            _ => return Err(()),
        };
        for k in parents {
            match m.get(k) {
                Some(Json::Object(inner)) => m = inner,
                _ => return Err(()),
            }
        }
        Ok(m.contains_key(last))
    }
}

/// The value at `keys`, the first looked up by `top`, the rest in nested objects.
fn lookup<'a>(top: impl Fn(&str) -> Option<&'a Json>, keys: &[String]) -> Result<Val<'a>, ()> {
    let (first, rest) = keys.split_first().ok_or(())?;
    let mut v = top(first).ok_or(())?;
    for k in rest {
        match v {
            Json::Object(m) => v = m.get(k).ok_or(())?,
            _ => return Err(()),
        }
    }
    Ok(match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Int(i)
            } else if let Some(u) = n.as_u64() {
                Val::UInt(u)
            } else {
                Val::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Val::Str(s),
        Json::Array(_) | Json::Object(_) => Val::Composite,
    })
}

/// A number as CEL orders numbers across `int`, `uint` and `double`.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
}

fn num_of_val(v: Val) -> Option<Num> {
    match v {
        Val::Int(i) => Some(Num::I(i)),
        Val::UInt(u) => Some(Num::U(u)),
        Val::Float(f) => Some(Num::F(f)),
        _ => None,
    }
}

fn num_of_lit(l: &Lit) -> Option<Num> {
    match l {
        Lit::Int(i) => Some(Num::I(*i)),
        Lit::UInt(u) => Some(Num::U(*u)),
        Lit::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

fn num_cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    use Num::*;
    match (a, b) {
        (I(x), I(y)) => Some(x.cmp(&y)),
        (U(x), U(y)) => Some(x.cmp(&y)),
        (I(x), U(y)) => Some(if x < 0 {
            std::cmp::Ordering::Less
        } else {
            (x as u64).cmp(&y)
        }),
        (U(x), I(y)) => Some(if y < 0 {
            std::cmp::Ordering::Greater
        } else {
            x.cmp(&(y as u64))
        }),
        (F(x), F(y)) => x.partial_cmp(&y),
        (I(x), F(y)) => (x as f64).partial_cmp(&y),
        (F(x), I(y)) => x.partial_cmp(&(y as f64)),
        (U(x), F(y)) => (x as f64).partial_cmp(&y),
        (F(x), U(y)) => x.partial_cmp(&(y as f64)),
    }
}

/// CEL equality of a value with a literal: values of different types are unequal.
fn equals(v: Val, l: &Lit) -> Result<bool, ()> {
    if let (Some(a), Some(b)) = (num_of_val(v), num_of_lit(l)) {
        return Ok(num_cmp(a, b) == Some(std::cmp::Ordering::Equal));
    }
    Ok(match (v, l) {
        (Val::Null, Lit::Null) => true,
        (Val::Bool(a), Lit::Bool(b)) => a == *b,
        (Val::Str(a), Lit::Str(b)) => a == b,
        _ => false,
    })
}

fn compare(v: Val, op: CmpOp, l: &Lit) -> Result<bool, ()> {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => return equals(v, l),
        CmpOp::Ne => return equals(v, l).map(|b| !b),
        _ => {}
    }
    let ord = if let (Some(a), Some(b)) = (num_of_val(v), num_of_lit(l)) {
        // NaN compares as neither less nor greater nor equal: every ordering is false.
        match num_cmp(a, b) {
            Some(o) => o,
            None => return Ok(false),
        }
    } else {
        match (v, l) {
            (Val::Str(a), Lit::Str(b)) => a.cmp(b.as_str()),
            (Val::Bool(a), Lit::Bool(b)) => a.cmp(b),
            _ => return Err(()),
        }
    };
    Ok(match op {
        CmpOp::Lt => ord == Less,
        CmpOp::Le => ord != Greater,
        CmpOp::Gt => ord == Greater,
        CmpOp::Ge => ord != Less,
        CmpOp::Eq | CmpOp::Ne => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
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
        let errs = Condition::compile("user.traits.x == 1 && event.type == 'a'", Scope::Audience)
            .unwrap_err();
        assert_eq!(errs[0].message, "unknown variable `event`");
        assert_eq!(errs[0].offset, 22);
        // Comprehension variables are bound, not unknown.
        Condition::compile("event.data.items.exists(i, i.sku == 'x')", Scope::Step).unwrap();
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
}
