//! The `data` fields recorded events carry, per event type, so that `hunt check
//! --events` can warn of a condition that reads a field no event of its type has.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::diag::{Problem, did_you_mean, thousands};

/// How deep into nested objects fields are recorded.
const DEPTH_MAX: usize = 8;
/// The most field paths kept per event type: data keyed by ids (a map of SKUs) would
/// otherwise grow without bound. Past it, new paths are not recorded.
const PATHS_MAX: usize = 10_000;

/// Per event type: how many events were seen, and every field path their `data` held
/// (`a` and `a.b` for `{"a": {"b": 1}}`; a list's items are not looked into).
#[derive(Debug, Default)]
pub struct EventShapes {
    types: BTreeMap<String, (u64, BTreeSet<String>)>,
}

impl EventShapes {
    pub fn add(&mut self, kind: &str, data: &Map<String, Value>) {
        let (n, paths) = self.types.entry(kind.to_string()).or_default();
        *n += 1;
        record(data, "", 0, paths);
    }

    /// How many events of `kind` were seen.
    pub fn count(&self, kind: &str) -> u64 {
        self.types.get(kind).map_or(0, |(n, _)| *n)
    }

    /// Every event seen.
    pub fn total(&self) -> u64 {
        self.types.values().map(|(n, _)| n).sum()
    }

    /// Warnings for the `event.data` fields the catalog's step conditions read that no
    /// recorded event of the step's type carries, and for steps whose type never
    /// occurs. `given` names the events (a file name) in the messages.
    pub fn unseen_fields(&self, catalog: &Catalog, given: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        for h in &catalog.hunts {
            for s in &h.steps {
                let Some((count, paths)) = self.types.get(&s.on) else {
                    if let Some((_, span)) = s.data_fields.first() {
                        out.push(
                            Problem::warning(
                                *span,
                                format!(
                                    "no `{}` event in {given}: step `{}` of hunt `{}` is never found there, and its `data` fields are not checked",
                                    s.on, s.id, h.id
                                ),
                            )
                            .with_help(format!("{given} has {}", self.listed_types())),
                        );
                    }
                    continue;
                };
                for (path, span) in &s.data_fields {
                    if paths.contains(path) {
                        continue;
                    }
                    let seen = paths.iter().map(|p| p.as_str());
                    let help = match did_you_mean(path, seen) {
                        Some(p) => format!("did you mean `event.data.{p}`?"),
                        None if paths.is_empty() => {
                            format!("the `{}` events given carry no `data` fields", s.on)
                        }
                        None => format!(
                            "the `{}` events given carry {}",
                            s.on,
                            paths
                                .iter()
                                .take(20)
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    out.push(
                        Problem::warning(
                            *span,
                            format!(
                                "`event.data.{path}` occurs in none of the {} `{}` events in {given}, and step `{}` of hunt `{}` reads it",
                                thousands(*count),
                                s.on,
                                s.id,
                                h.id
                            ),
                        )
                        .with_help(help),
                    );
                }
            }
        }
        out
    }

    fn listed_types(&self) -> String {
        if self.types.is_empty() {
            return "no events".into();
        }
        let mut v: Vec<(&String, u64)> = self.types.iter().map(|(k, (n, _))| (k, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let shown: Vec<String> = v
            .iter()
            .take(12)
            .map(|(k, n)| format!("`{k}` ({})", thousands(*n)))
            .collect();
        let more = if v.len() > 12 {
            format!(" and {} more types", v.len() - 12)
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    }
}

fn record(data: &Map<String, Value>, prefix: &str, depth: usize, into: &mut BTreeSet<String>) {
    for (k, v) in data {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if into.len() >= PATHS_MAX {
            return;
        }
        if let Value::Object(inner) = v
            && depth + 1 < DEPTH_MAX
        {
            record(inner, &path, depth + 1, into);
        }
        into.insert(path);
    }
}
