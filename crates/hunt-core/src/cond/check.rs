//! Checking, at compile time, that a condition uses only the variables of its scope,
//! and only the fields those variables have; and finding the `event.data` fields it
//! reads, for the checks that know which fields an event type carries.

use cel::common::ast::{Expr, LiteralValue};

use super::{CompileError, Scope};

/// The fields of each variable: its shape is fixed, whatever the events carry.
fn shape(variable: &str) -> &'static [&'static str] {
    match variable {
        "event" => &["id", "type", "time", "data"],
        "user" => &["id", "traits"],
        "progress" => &["found", "steps"],
        _ => &[],
    }
}

/// `a, b and c`, each in backticks.
fn listed(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// The field a select (`x.f`, `has(x.f)`) or an index by a string (`x['f']`) reads,
/// and what it reads it from.
fn selected(e: &cel::IdedExpr) -> Option<(&cel::IdedExpr, &str)> {
    match &e.expr {
        Expr::Select(s) => Some((&*s.operand, s.field.as_str())),
        Expr::Call(c) if c.func_name == "_[_]" && c.target.is_none() && c.args.len() == 2 => {
            match &c.args[1].expr {
                Expr::Literal(LiteralValue::String(s)) => Some((&c.args[0], s.as_ref())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The field a select or a string index reads from a variable that no comprehension
/// shadows: (variable, field, the variable's expression id).
fn field_of_variable<'e>(
    e: &'e cel::IdedExpr,
    bound: &[String],
) -> Option<(&'e str, &'e str, u64)> {
    let (operand, field) = selected(e)?;
    match &operand.expr {
        Expr::Ident(name) if !bound.iter().any(|b| b == name) => {
            Some((name.as_str(), field, operand.id))
        }
        _ => None,
    }
}

/// The byte range of the last of `words` in `source`, each looked for after the one
/// before, from the expression `id`'s place (or that place when one is not found).
pub(super) fn place_of(
    program: &cel::Program,
    id: u64,
    words: &[&str],
    source: &str,
) -> (usize, usize) {
    let (start, len) = program
        .source_info()
        .offset_for(id)
        .map(|(s, t)| (s as usize, (t.saturating_sub(s)) as usize))
        .unwrap_or((0, 0));
    let start = on_boundary(source, start);
    let mut at = start;
    let mut last = 0;
    for w in words {
        match source.get(at + last..).and_then(|rest| rest.find(w)) {
            Some(i) => {
                at += last + i;
                last = w.len();
            }
            None => return (start, len.max(1)),
        }
    }
    (at, last.max(1))
}

/// Reports identifiers that are not variables of `scope`, with a suggestion.
pub(super) fn check_variables(
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
            let offset = on_boundary(source, offset);
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
        Expr::Call(_) | Expr::Select(_) => check_field(program, e, scope, bound, source, out),
        _ => {}
    }
    each_child(e, bound, &mut |x, bound| {
        check_variables(program, x, scope, bound, source, out)
    });
}

/// Calls `f` on each expression directly inside `e`, with a comprehension's variables
/// in `bound` while its body is visited.
fn each_child(
    e: &cel::IdedExpr,
    bound: &mut Vec<String>,
    f: &mut dyn FnMut(&cel::IdedExpr, &mut Vec<String>),
) {
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                f(t, bound);
            }
            for a in &c.args {
                f(a, bound);
            }
        }
        Expr::Select(s) => f(&s.operand, bound),
        Expr::List(l) => {
            for x in &l.elements {
                f(x, bound);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    f(&me.key, bound);
                    f(&me.value, bound);
                }
            }
        }
        Expr::Comprehension(c) => {
            f(&c.iter_range, bound);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            for x in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                f(x, bound);
            }
            bound.truncate(depth);
        }
        Expr::Ident(_) | Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// A field of `event`, `user` or `progress` that it does not have.
fn check_field(
    program: &cel::Program,
    e: &cel::IdedExpr,
    scope: Scope,
    bound: &[String],
    source: &str,
    out: &mut Vec<CompileError>,
) {
    let Some((variable, field, id)) = field_of_variable(e, bound) else {
        return;
    };
    let fields = shape(variable);
    if !scope.variables().contains(&variable) || fields.is_empty() || fields.contains(&field) {
        return;
    }
    let (offset, len) = place_of(program, id, &[variable, field], source);
    let has = format!("`{variable}` has {}", listed(fields));
    let help = match crate::diag::did_you_mean(field, fields.iter().copied()) {
        Some(s) => format!("did you mean `{variable}.{s}`? {has}"),
        None if variable == "event" => {
            format!("{has}; an event's own fields are in `event.data` (`event.data.{field}`)")
        }
        None if variable == "user" => {
            format!("{has}; a customer's traits are in `user.traits` (`user.traits.{field}`)")
        }
        None => has,
    };
    out.push(CompileError {
        offset,
        len,
        message: format!("`{variable}` has no field `{field}`"),
        help: Some(help),
    });
}

/// The `event.data` fields a condition reads, each as its path below `data` (`a.b` for
/// `event.data.a.b`) with the id of its `event`: for `has(event.data.a.b)` and
/// `event.data["a"]` too. A path stops at the first part that is not a plain field
/// (an index by a number or a variable).
pub(super) fn data_paths(
    e: &cel::IdedExpr,
    bound: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, u64)>,
) {
    if let Some(found) = data_path(e, bound) {
        out.push(found);
        return;
    }
    each_child(e, bound, &mut |x, bound| data_paths(x, bound, out));
}

/// `e` as a path below `event.data`, when it is one (at least one field deep), with the
/// id of its `event`.
fn data_path(e: &cel::IdedExpr, bound: &[String]) -> Option<(Vec<String>, u64)> {
    let mut path = Vec::new();
    let mut at = e;
    loop {
        let (operand, field) = selected(at)?;
        if let Some(("event", "data", id)) = field_of_variable(at, bound) {
            if path.is_empty() {
                return None;
            }
            path.reverse();
            return Some((path, id));
        }
        path.push(field.to_string());
        at = operand;
    }
}

/// The parser's offsets are bytes (its input stream steps over UTF-8 characters):
/// kept inside the text and on a character's first byte.
fn on_boundary(text: &str, offset: usize) -> usize {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
