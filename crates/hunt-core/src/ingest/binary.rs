//! CloudEvents binary mode: attributes from the `ce-*` headers (percent-decoded), the
//! body as the event's data.

use serde_json::{Map, Value as Json};

use super::event::{Shape, event};
use super::{Limits, Rejection, parse_json, reject};
use crate::engine::Event;

/// A CloudEvents binary-mode header value: percent-decoded (the HTTP binding's rule for
/// characters outside printable ASCII), then UTF-8.
fn header_text(raw: &[u8]) -> Result<String, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(a), Some(b)) if hex(a).is_some() && hex(b).is_some() => {
                out.push((hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "is not valid UTF-8 (percent-decoded)")
}

pub(super) fn binary(
    body: &[u8],
    header: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &Limits,
) -> Result<Event, Rejection> {
    let id = header("ce-id").and_then(|v| header_text(&v).ok());
    let r = |field: &str, reason: String| reject(0, id.as_deref(), field, reason);
    for h in [
        "ce-specversion",
        "ce-source",
        "ce-id",
        "ce-type",
        "ce-subject",
        "ce-time",
    ] {
        if let Some(Err(e)) = header(h).map(|v| header_text(&v)) {
            return Err(r(h, format!("the `{h}` header {e}")));
        }
    }
    let get = |name: &str| {
        header(name)
            .and_then(|v| header_text(&v).ok())
            .filter(|v| !v.is_empty())
    };
    match get("ce-specversion").as_deref() {
        Some("1.0") => {}
        Some(v) => return Err(r("ce-specversion", format!("must be \"1.0\", got {v:?}"))),
        None => {
            return Err(r(
                "ce-specversion",
                "the `ce-specversion` header is required (\"1.0\")".into(),
            ));
        }
    }
    if get("ce-source").is_none() {
        return Err(r("ce-source", "the `ce-source` header is required".into()));
    }
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        Json::Null
    } else {
        parse_json(body).map_err(|e| {
            r(
                "data",
                format!("the body (the event's data) is not valid JSON: {e}"),
            )
        })?
    };
    let mut m = Map::new();
    m.insert("specversion".into(), "1.0".into());
    m.insert("source".into(), get("ce-source").unwrap_or_default().into());
    for (attr, h) in [
        ("id", "ce-id"),
        ("type", "ce-type"),
        ("subject", "ce-subject"),
        ("time", "ce-time"),
    ] {
        if let Some(v) = get(h) {
            m.insert(attr.into(), v.into());
        }
    }
    m.insert("data".into(), data);
    event(0, Json::Object(m), limits, Shape::CloudEvent).map_err(|mut e| {
        // Name the header the caller set, not the attribute it became.
        if let Some(h) = [
            ("id", "ce-id"),
            ("type", "ce-type"),
            ("subject", "ce-subject"),
            ("time", "ce-time"),
        ]
        .iter()
        .find(|(a, _)| e.field == *a)
        {
            e.field = h.1.to_string();
        }
        e
    })
}
