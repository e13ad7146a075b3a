//! Compiling a read hunts file (`spec`) into a [`Catalog`]: every reference resolved,
//! every condition compiled, every rule checked, every problem collected with its place.

use super::*;
use crate::cond::{Condition, Scope};
use crate::diag::{Problem, Severity, Span, did_you_mean};
use crate::spec::{self, HuntsFile, Order, Sp};

struct Ctx<'a> {
    source: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    fn error(&mut self, span: Span, msg: impl Into<String>, help: Option<String>) {
        let mut p = Problem::error(span, msg);
        p.help = help;
        self.problems.push(p);
    }

    fn warn(&mut self, span: Span, msg: impl Into<String>, help: Option<String>) {
        let mut p = Problem::warning(span, msg);
        p.help = help;
        self.problems.push(p);
    }

    fn id(&mut self, id: &Sp<String>, what: &str) {
        if !is_valid_id(&id.value) {
            self.error(
                id.span,
                format!("{what} id `{}` is not valid", id.value),
                Some("ids are 1-64 letters, digits, `_`, `.` or `-`".into()),
            );
        }
    }

    fn duration(&mut self, d: &Sp<String>, what: &str) -> Option<Duration> {
        match Duration::parse(&d.value) {
            Ok(v) if v.0 > 0 => Some(v),
            Ok(_) => {
                self.error(d.span, format!("{what} must be longer than zero"), None);
                None
            }
            Err(e) => {
                self.error(d.span, format!("bad duration in {what}: {e}"), None);
                None
            }
        }
    }

    fn time(&mut self, t: &Sp<String>, what: &str) -> Option<Timestamp> {
        match Timestamp::parse(&t.value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(t.span, format!("bad time in {what}: {e}"), None);
                None
            }
        }
    }

    fn condition(&mut self, text: &Sp<String>, scope: Scope) -> Option<Condition> {
        match Condition::compile(&text.value, scope) {
            Ok(c) => Some(c),
            Err(errs) => {
                for e in errs {
                    let offset = self.offset_inside(text, e.offset);
                    let mut p = Problem::error(Span::new(offset, e.len.max(1)), e.message);
                    p.help = e.help;
                    self.problems.push(p);
                }
                None
            }
        }
    }

    /// Maps a byte offset inside a string's value to the file, through quotes and
    /// block scalars.
    fn offset_inside(&self, text: &Sp<String>, inner: usize) -> usize {
        let raw = self.source.get(text.span.range()).unwrap_or("");
        if raw == text.value {
            return text.span.offset + inner;
        }
        if raw.len() >= 2
            && (raw.starts_with('"') || raw.starts_with('\''))
            && raw[1..raw.len() - 1] == text.value
        {
            return text.span.offset + 1 + inner;
        }
        // A block scalar or a string with escapes: find the line of the value that holds
        // the offset, then that line's text in the file.
        let value = &text.value;
        let line_start = value[..inner.min(value.len())]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let line_end = value[line_start..]
            .find('\n')
            .map(|i| line_start + i)
            .unwrap_or(value.len());
        let line = &value[line_start..line_end];
        if !line.is_empty()
            && let Some(pos) = raw.find(line)
        {
            return text.span.offset + pos + (inner - line_start);
        }
        text.span.offset
    }

    fn unique<'s>(&mut self, ids: impl IntoIterator<Item = &'s Sp<String>>, what: &str) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for id in ids {
            if let Some(first) = seen.get(id.value.as_str()) {
                let at = crate::diag::line_col(self.source, first.offset);
                self.error(
                    id.span,
                    format!("duplicate {what} id `{}`", id.value),
                    Some(format!(
                        "the first `{}` is at line {}, column {}; ids must be unique",
                        id.value, at.line, at.column
                    )),
                );
            } else {
                seen.insert(&id.value, id.span);
            }
        }
    }

    fn reference(&mut self, r: &Sp<String>, ids: &[&str], what: &str) -> Option<usize> {
        if let Some(i) = ids.iter().position(|x| *x == r.value) {
            return Some(i);
        }
        let help = match did_you_mean(&r.value, ids.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if ids.is_empty() => format!("the file declares no {what}s"),
            None => format!("declared {what}s: {}", ids.join(", ")),
        };
        self.error(r.span, format!("unknown {what} `{}`", r.value), Some(help));
        None
    }
}

pub(super) fn compile(
    file: &HuntsFile,
    source: &str,
    problems: &mut Vec<Problem>,
) -> Option<Catalog> {
    let mut cx = Ctx { source, problems };
    let max_lateness = file
        .settings
        .max_lateness
        .as_ref()
        .and_then(|d| cx.duration(d, "`max_lateness`"))
        .unwrap_or(MAX_LATENESS_DEFAULT);

    cx.unique(file.pools.iter().map(|p| &p.id), "pool");
    cx.unique(file.sinks.iter().map(|s| &s.id), "sink");
    cx.unique(file.hunts.iter().map(|h| &h.id), "hunt");
    cx.unique(file.tests.iter().map(|t| &t.name), "test case");

    let pools: Vec<Pool> = file
        .pools
        .iter()
        .filter_map(|p| compile_pool(&mut cx, p))
        .collect();
    let sinks: Vec<Sink> = file
        .sinks
        .iter()
        .filter_map(|s| compile_sink(&mut cx, s))
        .collect();
    let pool_ids: Vec<&str> = file.pools.iter().map(|p| p.id.value.as_str()).collect();
    let sink_ids: Vec<&str> = file.sinks.iter().map(|s| s.id.value.as_str()).collect();
    let hunts: Vec<Hunt> = file
        .hunts
        .iter()
        .filter_map(|h| compile_hunt(&mut cx, h, &pool_ids, &sink_ids, &pools))
        .collect();
    let tests = crate::testing::compile_cases(cx.problems, &file.tests, &file.hunts);
    if cx.problems.iter().any(|p| p.severity == Severity::Error) {
        return None;
    }
    let mut by_type: FixedMap<String, TypeIndex> = FixedMap::default();
    for (h, hunt) in hunts.iter().enumerate() {
        for (s, step) in hunt.steps.iter().enumerate() {
            let c = Candidate {
                hunt: h as u32,
                step: s as u32,
            };
            by_type
                .entry(step.on.clone())
                .or_default()
                .add(c, &step.when);
        }
    }
    Some(Catalog {
        id: NEXT_CATALOG_ID.fetch_add(1, Ordering::Relaxed),
        pools,
        sinks,
        hunts,
        max_lateness,
        tests,
        by_type,
    })
}

fn compile_pool(cx: &mut Ctx, p: &spec::PoolSpec) -> Option<Pool> {
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

fn compile_sink(cx: &mut Ctx, s: &spec::SinkSpec) -> Option<Sink> {
    cx.id(&s.id, "sink");
    let url = s.url.value.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        cx.error(
            s.url.span,
            format!("sink `{}` has an invalid URL `{}`", s.id.value, s.url.value),
            Some(
                "write a full http:// or https:// URL, e.g. https://shop.example/hooks/hunt".into(),
            ),
        );
    }
    let timeout = match &s.timeout {
        Some(t) => cx.duration(t, "`timeout`")?,
        None => SINK_TIMEOUT_DEFAULT,
    };
    if let Some(env) = &s.secret_env {
        let ok = !env.value.is_empty()
            && !env.value.starts_with(|c: char| c.is_ascii_digit())
            && env
                .value
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            cx.error(
                env.span,
                format!("`{}` is not an environment variable name", env.value),
                Some(
                    "write the variable's name (e.g. HUNT_WEBHOOK_SECRET), never the secret itself"
                        .into(),
                ),
            );
        }
    }
    let mut count = |v: &Option<Sp<u64>>, what: &str, max: u64, default: u32| match v {
        None => Some(default),
        Some(n) if n.value >= 1 && n.value <= max => Some(n.value as u32),
        Some(n) => {
            cx.error(
                n.span,
                format!("`{what}` of sink `{}` must be 1 to {max}", s.id.value),
                None,
            );
            None
        }
    };
    let concurrency = count(
        &s.concurrency,
        "concurrency",
        SINK_CONCURRENCY_MAX,
        SINK_CONCURRENCY_DEFAULT,
    );
    let max_attempts = count(&s.max_attempts, "max_attempts", 1000, SINK_ATTEMPTS_DEFAULT);
    let breaker_failures = count(
        &s.breaker_failures,
        "breaker_failures",
        1000,
        SINK_BREAKER_FAILURES_DEFAULT,
    );
    let max_age = match &s.max_age {
        Some(t) => cx.duration(t, "`max_age`"),
        None => Some(SINK_AGE_DEFAULT),
    };
    let breaker_open_for = match &s.breaker_open_for {
        Some(t) => cx.duration(t, "`breaker_open_for`"),
        None => Some(SINK_BREAKER_OPEN_DEFAULT),
    };
    Some(Sink {
        id: Arc::from(s.id.value.as_str()),
        url: url.to_string(),
        timeout,
        secret_env: s.secret_env.as_ref().map(|e| e.value.clone()),
        concurrency: concurrency?,
        max_attempts: max_attempts?,
        max_age: max_age?,
        breaker_failures: breaker_failures?,
        breaker_open_for: breaker_open_for?,
    })
}

fn compile_hunt(
    cx: &mut Ctx,
    h: &spec::HuntSpec,
    pool_ids: &[&str],
    sink_ids: &[&str],
    pools: &[Pool],
) -> Option<Hunt> {
    let errors_before = cx
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    cx.id(&h.id, "hunt");
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
    let audience = h
        .audience
        .as_ref()
        .and_then(|a| cx.condition(a, Scope::Audience));
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
    cx.unique(h.steps.iter().map(|s| &s.id), "step");
    let mut steps = Vec::new();
    for (i, s) in h.steps.iter().enumerate() {
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
        let within = match (&s.within, h.order) {
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
        steps.push(Step {
            id: Arc::from(s.id.value.as_str()),
            on: s.on.value.clone(),
            when: when.unwrap_or_else(Condition::always),
            count,
            within,
            clue: s.clue.as_deref().map(Arc::from),
        });
    }
    let n = steps.len() as u64;
    let complete_after = match &h.complete_after {
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
    };
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
    if let Some(a) = &audience
        && a.never_holds_for("")
    {
        cx.warn(
            h.id.span,
            format!("hunt `{hid}` can never complete: its audience admits nobody"),
            None,
        );
    }
    let reward = h.reward.as_ref().and_then(|r| {
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
    });
    let max_winners = h.max_winners.as_ref().and_then(|m| {
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
                                "winners past the pool's size will be denied with `pool_empty`"
                                    .into(),
                            ),
                        );
                    }
                }
            }
        }
        Some(m.value)
    });
    let notify = h
        .notify
        .iter()
        .filter_map(|s| cx.reference(s, sink_ids, "sink"))
        .collect();
    let errors_after = cx
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    if errors_after > errors_before {
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
