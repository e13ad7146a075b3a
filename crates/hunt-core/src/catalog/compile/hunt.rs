//! Compiling a hunt: its window, audience, steps, completion rule, reward, cap and sinks,
//! each checked.

use std::sync::Arc;

use super::Ctx;
use crate::catalog::{Hunt, Pool, Reward, STEPS_MAX, Step, is_valid_event_type};
use crate::cond::{Condition, Scope};
use crate::diag::{Severity, Span};
use crate::spec::{self, Order, Sp};
use crate::time::Timestamp;

pub(super) fn compile_hunt(
    cx: &mut Ctx,
    h: &spec::HuntSpec,
    pool_ids: &[&str],
    sink_ids: &[&str],
    pools: &[Pool],
) -> Option<Hunt> {
    let errors_before = error_count(cx);
    cx.id(&h.id, "hunt");
    let hid = &h.id.value;
    let (from, until) = active_window(cx, h);
    let audience = h
        .audience
        .as_ref()
        .and_then(|a| cx.condition(a, Scope::Audience));
    check_step_count(cx, h);
    cx.unique(h.steps.iter().map(|s| &s.id), "step");
    let mut steps = Vec::new();
    for (i, s) in h.steps.iter().enumerate() {
        steps.push(compile_step(cx, h.order, i, s));
    }
    let n = steps.len() as u64;
    let complete_after = compile_complete_after(cx, h, n);
    warn_if_never_completes(cx, h, &steps, complete_after, audience.as_ref());
    let reward = h
        .reward
        .as_ref()
        .and_then(|r| compile_reward(cx, r, pool_ids));
    let max_winners = h
        .max_winners
        .as_ref()
        .and_then(|m| compile_max_winners(cx, h, m, pools));
    let notify = h
        .notify
        .iter()
        .filter_map(|s| cx.reference(s, sink_ids, "sink"))
        .collect();
    if error_count(cx) > errors_before {
        return None;
    }
    let id: Arc<str> = Arc::from(hid.as_str());
    let step_ids: Arc<[Arc<str>]> = steps.iter().map(|s| s.id.clone()).collect();
    Some(Hunt {
        layout: Arc::new(crate::engine::Layout {
            hunt: id.clone(),
            steps: step_ids.clone(),
        }),
        id,
        title: h.title.clone(),
        from,
        until,
        audience,
        order: h.order,
        step_ids,
        steps,
        complete_after,
        reward,
        max_winners,
        notify,
    })
}

/// How many errors have been collected so far.
fn error_count(cx: &Ctx) -> usize {
    cx.problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count()
}

/// The hunt's `active` window (`from`, `until`), checked to end after it starts.
fn active_window(cx: &mut Ctx, h: &spec::HuntSpec) -> (Option<Timestamp>, Option<Timestamp>) {
    let hid = &h.id.value;
    let (mut from, mut until) = (None, None);
    if let Some(a) = &h.active {
        from = a.from.as_ref().and_then(|t| cx.time(t, "`active.from`"));
        until = a.until.as_ref().and_then(|t| cx.time(t, "`active.until`"));
        if let (Some(f), Some(u), Some(us)) = (from, until, &a.until)
            && u <= f
        {
            cx.error(
                us.span,
                format!("hunt `{hid}` ends (`until` {u}) before it starts (`from` {f})"),
                Some("`until` must be later than `from`".into()),
            );
        }
    }
    (from, until)
}

/// A hunt has at least one step and at most [`STEPS_MAX`].
fn check_step_count(cx: &mut Ctx, h: &spec::HuntSpec) {
    let hid = &h.id.value;
    if h.steps.is_empty() {
        cx.error(
            h.id.span,
            format!("hunt `{hid}` has no steps"),
            Some("add at least one step under `steps`".into()),
        );
    }
    if h.steps.len() > STEPS_MAX {
        cx.error(
            h.id.span,
            format!(
                "hunt `{hid}` has {} steps; at most {STEPS_MAX} are allowed",
                h.steps.len()
            ),
            None,
        );
    }
}

/// Compiles the step at `i` of a hunt in `order`: its event type, condition, count and
/// `within`.
fn compile_step(cx: &mut Ctx, order: Order, i: usize, s: &spec::StepSpec) -> Step {
    cx.id(&s.id, "step");
    if !is_valid_event_type(&s.on.value) {
        cx.error(
            s.on.span,
            format!("`{}` is not a valid event type", s.on.value),
            Some("event types are 1-64 of a-z, 0-9, `_`, `.`, `:` or `-`".into()),
        );
    }
    let when = match &s.when {
        Some(w) => cx.condition(w, Scope::Step),
        None => Some(Condition::always()),
    };
    let count = match &s.count {
        Some(c) if c.value == 0 || c.value > u64::from(u32::MAX) => {
            cx.error(c.span, "`count` must be at least 1", None);
            1
        }
        Some(c) => c.value as u32,
        None => 1,
    };
    let within = match (&s.within, order) {
        (Some(w), Order::Any) => {
            cx.error(
                w.span,
                format!("`within` in step `{}` of an `any` hunt", s.id.value),
                Some("`within` limits the time since the previous step, so it needs `order: sequence`".into()),
            );
            None
        }
        (Some(w), Order::Sequence) if i == 0 => {
            cx.error(
                w.span,
                format!("`within` on the first step `{}`", s.id.value),
                Some("the first step has no previous step to count from; put `within` on later steps".into()),
            );
            None
        }
        (Some(w), Order::Sequence) => cx.duration(w, "`within`"),
        (None, _) => None,
    };
    if let (Some(when), Some(w)) = (&when, &s.when)
        && when.never_holds_for(&s.on.value)
    {
        cx.warn(
            w.span,
            format!(
                "step `{}` can never be found: its condition is false for every `{}` event",
                s.id.value, s.on.value
            ),
            Some("check the condition against the step's `on` event type".into()),
        );
    }
    let data_fields = match (&when, &s.when) {
        (Some(c), Some(w)) => data_fields(cx, s, c, w),
        _ => Vec::new(),
    };
    Step {
        id: Arc::from(s.id.value.as_str()),
        on: s.on.value.clone(),
        data_fields,
        when: when.unwrap_or_else(Condition::always),
        count,
        within,
        clue: s.clue.as_deref().map(Arc::from),
    }
}

/// The `event.data` fields a step's condition reads, with their places in the file; each
/// checked against the declaration of the step's event type, if the file has one.
fn data_fields(
    cx: &mut Ctx,
    s: &spec::StepSpec,
    when: &Condition,
    text: &Sp<String>,
) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    for p in when.data_paths() {
        let span = Span::new(cx.offset_inside(text, p.offset), p.len.max(1));
        if let Some(fields) = cx.declared.get(&s.on.value)
            && !fields.contains(&p.path[0])
        {
            let declared = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>();
            let has = if declared.is_empty() {
                format!("`{}` is declared with no `data` fields", s.on.value)
            } else {
                format!("`{}` declares {}", s.on.value, declared.join(", "))
            };
            let help =
                match crate::diag::did_you_mean(&p.path[0], fields.iter().map(|f| f.as_str())) {
                    Some(f) => format!("did you mean `event.data.{f}`? {has}"),
                    None => format!(
                        "{has}; add the field to its declaration under `events` if it is sent"
                    ),
                };
            cx.error(
                span,
                format!(
                    "`{}` events carry no field `{}` in `data`",
                    s.on.value, p.path[0]
                ),
                Some(help),
            );
        }
        out.push((p.dotted(), span));
    }
    out
}

/// `complete_after`, between 1 and the hunt's `n` steps (all of them when left out).
fn compile_complete_after(cx: &mut Ctx, h: &spec::HuntSpec, n: u64) -> u32 {
    let hid = &h.id.value;
    match &h.complete_after {
        Some(c) if c.value == 0 => {
            cx.error(c.span, "`complete_after` must be at least 1", None);
            1
        }
        Some(c) if c.value > n => {
            cx.error(
                c.span,
                format!(
                    "`complete_after` is {} but hunt `{hid}` has only {n} step(s)",
                    c.value
                ),
                Some(format!(
                    "use a number from 1 to {n}, or leave it out to need every step"
                )),
            );
            n as u32
        }
        Some(c) => c.value as u32,
        None => n as u32,
    }
}

/// Warns of a hunt that can never complete: too many impossible steps, or an audience
/// that admits nobody.
fn warn_if_never_completes(
    cx: &mut Ctx,
    h: &spec::HuntSpec,
    steps: &[Step],
    complete_after: u32,
    audience: Option<&Condition>,
) {
    let hid = &h.id.value;
    let n = steps.len() as u64;
    // A hunt that can never complete: too many impossible steps.
    let impossible: Vec<bool> = steps
        .iter()
        .map(|s| s.when.never_holds_for(&s.on))
        .collect();
    let blocked = match h.order {
        Order::Any => {
            impossible.iter().filter(|x| **x).count() as u64 > n - u64::from(complete_after)
        }
        Order::Sequence => impossible.iter().take(complete_after as usize).any(|x| *x),
    };
    if blocked && !steps.is_empty() {
        cx.warn(
            h.id.span,
            format!("hunt `{hid}` can never complete: too few of its steps can be found"),
            None,
        );
    }
    if let Some(a) = audience
        && a.never_holds_for("")
    {
        cx.warn(
            h.id.span,
            format!("hunt `{hid}` can never complete: its audience admits nobody"),
            None,
        );
    }
}

/// The hunt's reward: its pool resolved, `per_user` at least 1.
fn compile_reward(cx: &mut Ctx, r: &spec::RewardSpec, pool_ids: &[&str]) -> Option<Reward> {
    let pool = cx.reference(&r.pool, pool_ids, "pool");
    let per_user = match &r.per_user {
        Some(p) if p.value == 0 || p.value > u64::from(u32::MAX) => {
            cx.error(p.span, "`per_user` must be at least 1", None);
            1
        }
        Some(p) => p.value as u32,
        None => 1,
    };
    Some(Reward {
        pool: pool?,
        per_user,
    })
}

/// `max_winners`, at least 1; warns when it has no effect or exceeds the pool's size.
fn compile_max_winners(
    cx: &mut Ctx,
    h: &spec::HuntSpec,
    m: &Sp<u64>,
    pools: &[Pool],
) -> Option<u64> {
    let hid = &h.id.value;
    if m.value == 0 {
        cx.error(
            m.span,
            "`max_winners` must be at least 1",
            Some("leave it out for no cap".into()),
        );
        return None;
    }
    match &h.reward {
        None => cx.warn(
            m.span,
            format!("hunt `{hid}` has `max_winners` but no `reward`; the cap has no effect"),
            None,
        ),
        Some(r) => {
            if let Some(p) = pools.iter().find(|p| *p.id == *r.pool.value) {
                let size = p.size();
                if size < m.value {
                    cx.warn(
                        m.span,
                        format!(
                            "pool `{}` holds {size} codes, fewer than `max_winners` {}",
                            p.id, m.value
                        ),
                        Some(
                            "winners past the pool's size will be denied with `pool_empty`".into(),
                        ),
                    );
                }
            }
        }
    }
    Some(m.value)
}
