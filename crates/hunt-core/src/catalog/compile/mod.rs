//! Compiling a read hunts file (`spec`) into a [`Catalog`]: every reference resolved,
//! every condition compiled, every rule checked, every problem collected with its place.
//!
//! Here: the context problems are collected in, and the catalog put together.
//! `pool.rs`, `sink.rs` and `hunt.rs`: compiling each.

use super::*;
use crate::cond::{Condition, Scope};
use crate::diag::{Problem, Severity, Span, did_you_mean};
use crate::ids::is_valid_id;
use crate::spec::{HuntsFile, Sp};

mod hunt;
mod pool;
mod sink;

use hunt::compile_hunt;
use pool::compile_pool;
use sink::compile_sink;

struct Ctx<'a> {
    source: &'a str,
    problems: &'a mut Vec<Problem>,
    /// The `data` fields of each declared event type (the file's `events`).
    declared: HashMap<String, Vec<String>>,
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

/// The event declarations: valid types, each once, and their field names.
fn compile_events(cx: &mut Ctx, events: &[crate::spec::EventSpec]) {
    let mut first: HashMap<&str, Span> = HashMap::new();
    for e in events {
        let kind = e.kind.value.as_str();
        if !is_valid_event_type(kind) {
            cx.error(
                e.kind.span,
                format!("`{kind}` is not a valid event type"),
                Some("event types are 1-64 of a-z, 0-9, `_`, `.`, `:` or `-`".into()),
            );
            continue;
        }
        if let Some(at) = first.get(kind) {
            let at = crate::diag::line_col(cx.source, at.offset);
            cx.error(
                e.kind.span,
                format!("event type `{kind}` is declared twice"),
                Some(format!(
                    "the first declaration is at line {}, column {}; list all its fields there",
                    at.line, at.column
                )),
            );
            continue;
        }
        first.insert(kind, e.kind.span);
        let mut fields: Vec<String> = Vec::new();
        for f in &e.data {
            if f.value.is_empty() || f.value.contains('.') {
                cx.error(
                    f.span,
                    format!("`{}` is not a field name", f.value),
                    Some(
                        "list the names of `data`'s own fields: `price`, not `price.amount`".into(),
                    ),
                );
            } else if fields.contains(&f.value) {
                cx.warn(f.span, format!("field `{}` is listed twice", f.value), None);
            } else {
                fields.push(f.value.clone());
            }
        }
        cx.declared.insert(kind.to_string(), fields);
    }
}

pub(super) fn compile(
    file: &HuntsFile,
    source: &str,
    problems: &mut Vec<Problem>,
) -> Option<Catalog> {
    let mut cx = Ctx {
        source,
        problems,
        declared: HashMap::new(),
    };
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
    compile_events(&mut cx, &file.events);

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
