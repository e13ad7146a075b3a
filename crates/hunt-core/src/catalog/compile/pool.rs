//! Compiling a reward pool: its codes listed or generated, checked.

use std::collections::HashMap;
use std::sync::Arc;

use super::Ctx;
use crate::catalog::{Codes, GENERATED_CODES_MAX, Pool};
use crate::spec;

pub(super) fn compile_pool(cx: &mut Ctx, p: &spec::PoolSpec) -> Option<Pool> {
    cx.id(&p.id, "pool");
    let codes = match (&p.codes, &p.generate) {
        (Some(_), Some(_)) | (None, None) => {
            cx.error(
                p.id.span,
                format!("pool `{}` must have exactly one of `codes` and `generate`", p.id.value),
                Some("list the codes under `codes`, or describe them with `generate: {prefix, count}`".into()),
            );
            return None;
        }
        (Some(codes), None) => {
            if codes.is_empty() {
                cx.error(
                    p.id.span,
                    format!("pool `{}` has an empty `codes` list", p.id.value),
                    None,
                );
            }
            let mut seen: HashMap<&str, ()> = HashMap::new();
            for c in codes {
                if c.value.is_empty() || c.value.len() > 128 {
                    cx.error(c.span, "a code must be 1-128 characters", None);
                }
                if seen.insert(&c.value, ()).is_some() {
                    cx.error(
                        c.span,
                        format!("code `{}` is listed twice in pool `{}`", c.value, p.id.value),
                        Some("each code is handed out once; a duplicate would be granted to two customers".into()),
                    );
                }
            }
            Codes::Listed(codes.iter().map(|c| c.value.clone()).collect())
        }
        (None, Some(g)) => {
            if g.count.value == 0 || g.count.value > GENERATED_CODES_MAX {
                cx.error(
                    g.count.span,
                    format!("`count` must be between 1 and {GENERATED_CODES_MAX}"),
                    None,
                );
                return None;
            }
            let start = g.start.unwrap_or(1);
            let last = start.saturating_add(g.count.value - 1);
            let needed = last.to_string().len();
            let digits = match &g.digits {
                Some(d) if (d.value as usize) < needed => {
                    cx.error(
                        d.span,
                        format!(
                            "{} digits cannot hold the last code's counter {last}",
                            d.value
                        ),
                        Some(format!("use `digits: {needed}` or more")),
                    );
                    needed
                }
                Some(d) if d.value > 32 => {
                    cx.error(d.span, "`digits` must be at most 32", None);
                    needed
                }
                Some(d) => d.value as usize,
                None => needed,
            };
            Codes::Generated {
                prefix: g.prefix.clone(),
                digits,
                start,
                count: g.count.value,
            }
        }
    };
    Some(Pool {
        id: Arc::from(p.id.value.as_str()),
        codes,
    })
}
