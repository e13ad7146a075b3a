//! A YAML (or JSON) document as a tree in which every node knows where it was written.
//!
//! Hunts files are read in two stages: this module turns text into a [`Node`] tree with
//! byte spans; `spec` reads that tree into typed specs, collecting every problem with its
//! place. The tree never panics on input: the parser's own errors come back as a
//! [`Problem`] with a location.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{Problem, Span};

/// One value of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are strings (other key types are refused).
    Map(Vec<(Key, Node)>),
}

/// A value and the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// A mapping key and the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Node {
    /// What kind of value this is, for messages ("expected a string, found a list").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value as JSON (spans dropped), for event data in test cases.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.name.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// The largest hunts file accepted, in bytes. Real files are a few kilobytes; this only
/// keeps a mistaken upload from using unbounded memory.
pub const SOURCE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The most parse events aliases may replay in one file (a scalar is one event, a
/// mapping or a list two plus its entries').
pub const ALIAS_EVENTS_MAX: usize = 10_000;

/// Parses YAML (JSON is accepted, being YAML's subset) into a spanned tree.
pub fn parse(source: &str) -> Result<Node, Problem> {
    if source.len() > SOURCE_BYTES_MAX {
        return Err(Problem::error(
            Span::at(0),
            format!(
                "the file is {} bytes, over the limit of {SOURCE_BYTES_MAX}",
                source.len()
            ),
        ));
    }
    // YAML 1.2 Core booleans: `on`, `yes`, `no` stay strings (a step's `on:` key!).
    // Aliases replay at most ALIAS_EVENTS_MAX parse events in all: a hunts file reuses a
    // condition or a list now and then, while an alias bomb (each alias doubling the one
    // before) would build a million nodes before the parser's default limit stops it.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: ALIAS_EVENTS_MAX,
            max_replay_stack_depth: 16,
        },
    };
    let root: Spanned<Raw> = serde_saphyr::from_str_with_options(source, options).map_err(|e| {
        let span = e
            .location()
            .map(|l| span_of(source, &l))
            .unwrap_or_else(|| Span::at(0));
        let mut msg = e.to_string();
        // The parser's message repeats a snippet of the source; miette draws its own.
        if let Some(first) = msg.lines().next() {
            msg = first.to_string();
        }
        if let Some(rest) = msg.strip_prefix("error: ") {
            msg = rest.to_string();
        }
        // Drop the leading "line N column M: " the parser adds: the label shows it.
        if let Some(idx) = msg.find(": ").filter(|_| msg.starts_with("line ")) {
            msg = msg[idx + 2..].to_string();
        }
        Problem::error(span, format!("invalid YAML: {msg}"))
    })?;
    Ok(convert(source, root))
}

fn span_of(source: &str, loc: &serde_saphyr::Location) -> Span {
    let s = loc.span();
    match (s.byte_offset(), s.byte_len()) {
        (Some(off), Some(len)) => Span::new(off as usize, len as usize),
        _ => Span::at(crate::diag::offset_of(
            source,
            loc.line() as usize,
            loc.column() as usize,
        )),
    }
}

fn convert(source: &str, raw: Spanned<Raw>) -> Node {
    let span = span_of(source, &raw.referenced);
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|x| convert(source, x)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        span: span_of(source, &k.referenced),
                        name: k.value,
                    };
                    (key, convert(source, v))
                })
                .collect(),
        ),
    };
    Node { value, span }
}

/// The tree as the YAML parser hands it over, before spans are converted.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(i64::try_from(v)
                    .map(Raw::Int)
                    .unwrap_or(Raw::Float(v as f64)))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(i64::try_from(v)
                    .map(Raw::Int)
                    .unwrap_or(Raw::Float(v as f64)))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
                Ok(i64::try_from(v)
                    .map(Raw::Int)
                    .unwrap_or(Raw::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<Spanned<KeyText>>()? {
                    let v = a.next_value()?;
                    entries.push((Spanned::new(k.value.0, k.referenced, k.defined), v));
                }
                Ok(Raw::Map(entries))
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

/// A mapping key: strings, and scalars written without quotes (`200: x`) taken as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a plain key (a string or number)")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let src = "a: 1\nb:\n  - x: \"hi\"\n";
        let root = parse(src).unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("map expected")
        };
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(&src[entries[0].1.span.range()], "1");
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("seq expected")
        };
        let Value::Map(inner) = &items[0].value else {
            panic!("map expected")
        };
        assert_eq!(&src[inner[0].1.span.range()], "\"hi\"");
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let err = parse("a: [1\nb: 2\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert_eq!(err.span.offset, 5);
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let root = parse("on: yes\nno: off\nt: true\n").unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("map expected")
        };
        assert_eq!(entries[0].0.name, "on");
        assert_eq!(entries[0].1.value, Value::Str("yes".into()));
        assert_eq!(entries[1].0.name, "no");
        assert_eq!(entries[2].1.value, Value::Bool(true));
    }

    #[test]
    fn json_is_accepted() {
        let root = parse(r#"{"version": 1, "hunts": []}"#).unwrap();
        assert!(matches!(root.value, Value::Map(ref m) if m.len() == 2));
    }
}
