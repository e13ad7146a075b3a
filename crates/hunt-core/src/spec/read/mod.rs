//! Reading the tree into specs: the fields each spec accepts, and the reader of one
//! value (a mapping, a string, a number, a list), which collects every problem.
//!
//! Here: the reader and its values. `specs.rs`: each spec, field by field.

use crate::diag::{Problem, Span, did_you_mean};
use crate::yaml::{Node, Value};

use super::{HuntsFile, Sp};

mod specs;

/// The fields each spec accepts; also checked against the JSON Schema in the tests.
pub const FIELDS: &[(&str, &[&str])] = &[
    (
        "HuntsFile",
        &[
            "version", "settings", "pools", "sinks", "events", "hunts", "tests",
        ],
    ),
    ("Settings", &["max_lateness"]),
    ("EventSpec", &["type", "data"]),
    ("PoolSpec", &["id", "description", "codes", "generate"]),
    ("GenerateSpec", &["prefix", "count", "digits", "start"]),
    (
        "SinkSpec",
        &[
            "id",
            "url",
            "timeout",
            "secret_env",
            "concurrency",
            "max_attempts",
            "max_age",
            "breaker_failures",
            "breaker_open_for",
        ],
    ),
    (
        "HuntSpec",
        &[
            "id",
            "title",
            "description",
            "active",
            "audience",
            "order",
            "steps",
            "complete_after",
            "reward",
            "max_winners",
            "notify",
        ],
    ),
    ("ActiveSpec", &["from", "until"]),
    ("RewardSpec", &["pool", "per_user"]),
    ("StepSpec", &["id", "on", "when", "count", "within", "clue"]),
    ("TestSpec", &["name", "start", "events", "expect"]),
    (
        "TestEventSpec",
        &["user", "type", "id", "at", "data", "traits"],
    ),
];

fn fields(name: &str) -> &'static [&'static str] {
    FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or(&[])
}

/// Reads a hunts file's tree. Returns what could be read; `problems` gets every problem.
pub fn read(root: &Node, problems: &mut Vec<Problem>) -> Option<HuntsFile> {
    let mut r = Reader { problems };
    r.hunts_file(root)
}

struct Reader<'p> {
    problems: &'p mut Vec<Problem>,
}

/// A mapping being read: its entries, checked against the fields its spec accepts.
struct Obj<'n> {
    node: &'n Node,
    entries: &'n [(crate::yaml::Key, Node)],
}

impl<'n> Obj<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }
}

impl Reader<'_> {
    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.problems.push(Problem::error(span, msg));
    }

    fn obj<'n>(&mut self, node: &'n Node, spec: &str, what: &str) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.span,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let known = fields(spec);
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let mut p = Problem::error(k.span, format!("unknown field `{}` in {what}", k.name));
                p = match did_you_mean(&k.name, known.iter().copied()) {
                    Some(s) => p.with_help(format!("did you mean `{s}`?")),
                    None => p.with_help(format!("the fields of {what} are: {}", known.join(", "))),
                };
                self.problems.push(p);
            }
        }
        Some(Obj { node, entries })
    }

    fn missing(&mut self, obj: &Obj, key: &str, what: &str) {
        let span = self.key_span(obj);
        self.error(
            span,
            format!("{what} is missing the required field `{key}`"),
        );
    }

    /// Where to point for a whole mapping: its first key (mappings have no width).
    fn key_span(&self, obj: &Obj) -> Span {
        obj.entries
            .first()
            .map(|(k, _)| k.span)
            .unwrap_or(obj.node.span)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.span)),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A string, also accepting a number or boolean written without quotes (ids like `1`).
    fn text(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Int(i) => Some(Sp::new(i.to_string(), node.span)),
            Value::Float(f) => Some(Sp::new(f.to_string(), node.span)),
            Value::Bool(b) => Some(Sp::new(b.to_string(), node.span)),
            _ => self.string(node, what),
        }
    }

    fn uint(&mut self, node: &Node, what: &str) -> Option<Sp<u64>> {
        match node.value {
            Value::Int(i) if i >= 0 => Some(Sp::new(i as u64, node.span)),
            Value::Int(i) => {
                self.error(node.span, format!("{what} must not be negative, found {i}"));
                None
            }
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a whole number, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn req_text(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        match obj.get(key) {
            Some(n) => self.text(n, &format!("`{key}` of {what}")),
            None => {
                self.missing(obj, key, what);
                None
            }
        }
    }

    fn opt_string(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.string(n, &format!("`{key}` of {what}"))
    }

    fn opt_uint(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<u64>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.uint(n, &format!("`{key}` of {what}"))
    }

    /// A time or duration written either quoted or plain.
    fn opt_scalar_text(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.text(n, &format!("`{key}` of {what}"))
    }

    fn list<'n>(&mut self, obj: &Obj<'n>, key: &str, what: &str) -> &'n [Node] {
        match obj.get(key).map(|n| (n, &n.value)) {
            None | Some((_, Value::Null)) => &[],
            Some((_, Value::Seq(items))) => items,
            Some((n, _)) => {
                self.error(
                    n.span,
                    format!("`{key}` of {what} must be a list, found {}", n.kind()),
                );
                &[]
            }
        }
    }

    fn json_map(
        &mut self,
        obj: &Obj,
        key: &str,
        what: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let n = obj.get(key)?;
        match n.to_json() {
            serde_json::Value::Object(m) => Some(m),
            serde_json::Value::Null => None,
            _ => {
                self.error(
                    n.span,
                    format!("`{key}` of {what} must be a mapping, found {}", n.kind()),
                );
                None
            }
        }
    }
}
