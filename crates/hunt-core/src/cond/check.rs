//! Checking, at compile time, that a condition uses only the variables of its scope.

use cel::common::ast::Expr;

use super::{CompileError, Scope};

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
