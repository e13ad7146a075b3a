//! The fast path: conditions in the common shapes, evaluated natively over the event's
//! JSON without building CEL values.

use cel::common::ast::{Expr, LiteralValue, operators};
use serde_json::Value as Json;

use super::Input;

/// A condition in a shape the fast path evaluates natively.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Pred {
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
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

/// A field a condition reads.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Path {
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
    pub(super) fn from_expr(e: &cel::IdedExpr) -> Option<Pred> {
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
    pub(super) fn key(&self) -> Option<(&[String], Vec<&str>)> {
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

    pub(super) fn never(&self, on: &str) -> bool {
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

    pub(super) fn eval(&self, input: &Input) -> Result<bool, ()> {
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
