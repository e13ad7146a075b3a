//! Decoding posted events: every accepted form, the limits, and a reason per rejection.
//!
//! Forms (by `Content-Type`): one JSON event or an array of them (`application/json`),
//! NDJSON (`application/x-ndjson`), CloudEvents 1.0 structured
//! (`application/cloudevents+json`), batch (`application/cloudevents-batch+json`) and
//! binary mode (`ce-*` headers, the body is `data`; `ce-subject` is the user).
//!
//! A problem with the request as a whole (too large, not JSON, too many events, an
//! unsupported type) is a [`RequestError`], and nothing of it is accepted. A problem
//! with one event is a [`Rejection`] naming the field; the other events are kept.
//! Pure: bytes in, events and reasons out.

use serde_json::{Map, Value as Json};

use crate::engine::{Event, ID_BYTES_MAX};
use crate::time::Timestamp;

/// The limits a request is held to. Each is configurable; the defaults suit a
/// storefront posting a page's worth of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request body, in bytes.
    pub body_bytes_max: usize,
    /// Events in one request.
    pub events_max: usize,
    /// An event's `data` plus `traits`, serialised, in bytes.
    pub data_bytes_max: usize,
    /// Nesting depth of `data` and `traits` (an object directly holding scalars is 1).
    pub depth_max: usize,
    /// Any string inside `data` or `traits`, in bytes.
    pub string_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes_max: 1 << 20,
            events_max: 1000,
            data_bytes_max: 16 * 1024,
            depth_max: 8,
            string_bytes_max: 2048,
        }
    }
}

/// The forms a request can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One JSON event, or a JSON array of events.
    Json,
    Ndjson,
    CloudEvent,
    CloudEventsBatch,
    /// CloudEvents binary mode: attributes in `ce-*` headers, the body is the data.
    CloudEventBinary,
}

/// A problem with the request as a whole: nothing of it was accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{count} events in one request, over the limit of {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("the body is empty")]
    Empty,
    #[error(
        "unsupported Content-Type `{0}`: use application/json, application/x-ndjson, application/cloudevents+json or application/cloudevents-batch+json"
    )]
    UnsupportedMediaType(String),
}

/// Why one event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The event's position in the request (0-based; the line for NDJSON).
    pub index: usize,
    /// Its `id`, when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The field at fault, as a path: `user`, `time`, `data.items[2].name`.
    pub field: String,
    pub reason: String,
}

/// The events of a request, in order: each accepted or rejected.
pub type Decoded = Vec<Result<Event, Rejection>>;

/// Chooses the form from the `Content-Type` (parameters ignored) and whether `ce-*`
/// headers are present.
pub fn form_of(content_type: Option<&str>, has_ce_headers: bool) -> Result<Form, RequestError> {
    let ct = content_type.unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/cloudevents+json" => Ok(Form::CloudEvent),
        "application/cloudevents-batch+json" => Ok(Form::CloudEventsBatch),
        "application/x-ndjson" | "application/ndjson" => Ok(Form::Ndjson),
        "application/json" | "" if has_ce_headers => Ok(Form::CloudEventBinary),
        "application/json" | "" => Ok(Form::Json),
        _ => Err(RequestError::UnsupportedMediaType(ct.to_string())),
    }
}

/// Decodes a request body. `header` looks up a request header's raw value by lower-case
/// name (used for binary-mode CloudEvents, whose `ce-*` values are percent-decoded here).
pub fn decode(
    form: Form,
    body: &[u8],
    header: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &Limits,
) -> Result<Decoded, RequestError> {
    if body.len() > limits.body_bytes_max {
        return Err(RequestError::TooLarge {
            size: body.len(),
            limit: limits.body_bytes_max,
        });
    }
    if form != Form::CloudEventBinary && body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let out = match form {
        Form::Json => match parse(body)? {
            Json::Array(items) => events(items, limits, Shape::Native)?,
            v => vec![event(0, v, limits, Shape::Native)],
        },
        Form::CloudEvent => vec![event(0, parse(body)?, limits, Shape::CloudEvent)],
        Form::CloudEventsBatch => match parse(body)? {
            Json::Array(items) => events(items, limits, Shape::CloudEvent)?,
            _ => {
                return Err(RequestError::Malformed(
                    "a CloudEvents batch must be a JSON array".into(),
                ));
            }
        },
        Form::Ndjson => {
            let lines: Vec<&[u8]> = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .collect();
            count_ok(lines.len(), limits)?;
            lines
                .into_iter()
                .enumerate()
                .map(|(i, line)| match parse_json(line) {
                    Ok(v) => event(i, v, limits, Shape::Native),
                    Err(e) => Err(reject(
                        i,
                        None,
                        "",
                        format!("line {} is not valid JSON: {e}", i + 1),
                    )),
                })
                .collect()
        }
        Form::CloudEventBinary => vec![binary(body, header, limits)],
    };
    Ok(out)
}

/// Decodes one event in the native form (one NDJSON line, say) at position `index`.
pub fn decode_event(bytes: &[u8], index: usize, limits: &Limits) -> Result<Event, Rejection> {
    match parse_json(bytes) {
        Ok(v) => event(index, v, limits, Shape::Native),
        Err(e) => Err(reject(index, None, "", format!("not valid JSON: {e}"))),
    }
}

fn parse(body: &[u8]) -> Result<Json, RequestError> {
    parse_json(body).map_err(|e| RequestError::Malformed(e.to_string()))
}

/// JSON text to a value, refusing an object with the same key twice: which of the two
/// the sender meant is unknowable, so neither is guessed.
pub fn parse_json(bytes: &[u8]) -> Result<Json, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Builds a [`Json`] like its own `Deserialize`, but refuses duplicate keys.
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Json;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Json;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(n.into())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(n.into())
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(Strict)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(x) = seq.next_element_seed(Strict)? {
            v.push(x);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                let shown: String = k.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{shown}` in one object"
                )));
            }
            let v = map.next_value_seed(Strict)?;
            m.insert(k, v);
        }
        Ok(Json::Object(m))
    }
}

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

/// Identifiers are shown in logs, dashboards and terminals: control characters (C0, DEL,
/// C1) in them could forge lines or escape sequences, and are refused.
fn no_controls(s: &str, name: &str) -> Result<(), String> {
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "`{name}` must not contain control characters; found U+{:04X} at byte {at}",
            c as u32
        )),
        None => Ok(()),
    }
}

/// The events of an array, each decoded on its own, once the count is within the limit.
fn events(items: Vec<Json>, limits: &Limits, shape: Shape) -> Result<Decoded, RequestError> {
    count_ok(items.len(), limits)?;
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, v)| event(i, v, limits, shape))
        .collect())
}

fn count_ok(count: usize, limits: &Limits) -> Result<(), RequestError> {
    if count > limits.events_max {
        return Err(RequestError::TooManyEvents {
            count,
            limit: limits.events_max,
        });
    }
    Ok(())
}

fn reject(index: usize, id: Option<&str>, field: &str, reason: impl Into<String>) -> Rejection {
    Rejection {
        index,
        id: id.map(str::to_string),
        field: field.to_string(),
        reason: reason.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Native,
    CloudEvent,
}

const NATIVE_FIELDS: &[&str] = &["id", "type", "user", "time", "data", "traits"];

fn event(index: usize, v: Json, limits: &Limits, shape: Shape) -> Result<Event, Rejection> {
    let Json::Object(mut m) = v else {
        return Err(reject(
            index,
            None,
            "",
            format!("an event must be a JSON object, found {}", kind(&v)),
        ));
    };
    let id = m.get("id").and_then(Json::as_str).map(str::to_string);
    let id_ref = id.as_deref();
    let r = |field: &str, reason: String| reject(index, id_ref, field, reason);
    let (user_field, user) = match shape {
        Shape::Native => {
            if let Some(k) = m.keys().find(|k| !NATIVE_FIELDS.contains(&k.as_str())) {
                let hint = crate::diag::did_you_mean(k, NATIVE_FIELDS.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(r(k, format!("unknown field `{k}`{hint}")));
            }
            ("user", m.remove("user"))
        }
        Shape::CloudEvent => {
            match m.get("specversion").and_then(Json::as_str) {
                Some("1.0") => {}
                Some(v) => {
                    return Err(r(
                        "specversion",
                        format!("CloudEvents `specversion` must be \"1.0\", got {v:?}"),
                    ));
                }
                None => {
                    return Err(r(
                        "specversion",
                        "CloudEvents `specversion` is required (\"1.0\")".into(),
                    ));
                }
            }
            if m.get("source")
                .and_then(Json::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(r("source", "CloudEvents `source` is required".into()));
            }
            if let Some(ct) = m.get("datacontenttype").and_then(Json::as_str)
                && !ct.starts_with("application/json")
            {
                return Err(r(
                    "datacontenttype",
                    format!("`data` must be JSON, got {ct:?}"),
                ));
            }
            ("subject", m.remove("subject"))
        }
    };
    let id = required_str(m.remove("id"), "id", ID_BYTES_MAX)
        .and_then(|id| no_controls(&id, "id").map(|()| id))
        .map_err(|e| r("id", e))?;
    let event_type = required_str(m.remove("type"), "type", 64).map_err(|e| r("type", e))?;
    if !crate::catalog::is_valid_event_type(&event_type) {
        return Err(r(
            "type",
            format!("`type` must match [a-z0-9_.:-]{{1,64}}, got {event_type:?}"),
        ));
    }
    let user = required_str(user, user_field, ID_BYTES_MAX)
        .and_then(|u| no_controls(&u, user_field).map(|()| u))
        .map_err(|e| r(user_field, e))?;
    let time = match m.remove("time") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(Timestamp::parse(&s).map_err(|e| r("time", e))?),
        Some(other) => {
            return Err(r(
                "time",
                format!("`time` must be an RFC 3339 string, found {}", kind(&other)),
            ));
        }
    };
    let mut data = object(m.remove("data"), "data", limits).map_err(|(f, e)| r(&f, e))?;
    // CloudEvents attributes cannot be objects: a customer's traits travel in `data.traits`.
    let traits_value = match shape {
        Shape::Native => m.remove("traits"),
        Shape::CloudEvent => data.remove("traits"),
    };
    let traits_field = if shape == Shape::Native {
        "traits"
    } else {
        "data.traits"
    };
    let traits = object(traits_value, traits_field, limits).map_err(|(f, e)| r(&f, e))?;
    let size = json_bytes(&data) + json_bytes(&traits);
    if size > limits.data_bytes_max {
        return Err(r(
            "data",
            format!(
                "`data` and `traits` are {size} bytes together, over the limit of {}",
                limits.data_bytes_max
            ),
        ));
    }
    Ok(Event {
        id,
        kind: event_type,
        user,
        time,
        data,
        traits,
    })
}

fn binary(
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

fn required_str(v: Option<Json>, name: &str, max: usize) -> Result<String, String> {
    match v {
        Some(Json::String(s)) if !s.is_empty() && s.len() <= max => Ok(s),
        Some(Json::String(s)) if s.is_empty() => Err(format!("`{name}` must not be empty")),
        Some(Json::String(s)) => Err(format!(
            "`{name}` is {} bytes, over the limit of {max}",
            s.len()
        )),
        None | Some(Json::Null) => Err(format!("`{name}` is required")),
        Some(other) => Err(format!("`{name}` must be a string, found {}", kind(&other))),
    }
}

/// An optional object, checked for depth and string lengths; errors name the path.
fn object(
    v: Option<Json>,
    name: &str,
    limits: &Limits,
) -> Result<Map<String, Json>, (String, String)> {
    match v {
        None | Some(Json::Null) => Ok(Map::new()),
        Some(Json::Object(m)) => {
            if let Some(k) = m.keys().find(|k| k.len() > limits.string_bytes_max) {
                let e = OverLimit {
                    path: Vec::new(),
                    string_bytes: Some(k.len()),
                    key: true,
                };
                return Err(e.describe(name, limits));
            }
            for (k, v) in &m {
                if let Err(mut e) = check(v, 1, limits) {
                    e.path.push(Segment::Key(k));
                    return Err(e.describe(name, limits));
                }
            }
            Ok(m)
        }
        Some(other) => Err((
            name.to_string(),
            format!("`{name}` must be an object, found {}", kind(&other)),
        )),
    }
}

/// One step of the path to a value inside `data` or `traits`.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// A value over a limit: the path to it is collected innermost first, on the way out,
/// so a value within the limits costs no formatting.
struct OverLimit<'a> {
    path: Vec<Segment<'a>>,
    /// The string's length, or `None` when nested too deep.
    string_bytes: Option<usize>,
    /// The string is a key of the object at `path`, not a value.
    key: bool,
}

impl OverLimit<'_> {
    fn describe(&self, root: &str, limits: &Limits) -> (String, String) {
        let mut path = root.to_string();
        for seg in self.path.iter().rev() {
            match seg {
                Segment::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        let reason = match self.string_bytes {
            Some(n) if self.key => format!(
                "`{path}` has a key of {n} bytes, over the limit of {}",
                limits.string_bytes_max
            ),
            Some(n) => format!(
                "`{path}` is {n} bytes, over the limit of {}",
                limits.string_bytes_max
            ),
            None => format!(
                "`{path}` is nested deeper than the limit of {}",
                limits.depth_max
            ),
        };
        (path, reason)
    }
}

fn check<'a>(v: &'a Json, depth: usize, limits: &Limits) -> Result<(), OverLimit<'a>> {
    match v {
        Json::String(s) if s.len() > limits.string_bytes_max => Err(OverLimit {
            path: Vec::new(),
            string_bytes: Some(s.len()),
            key: false,
        }),
        Json::Array(_) | Json::Object(_) if depth >= limits.depth_max => Err(OverLimit {
            path: Vec::new(),
            string_bytes: None,
            key: false,
        }),
        Json::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                check(x, depth + 1, limits).map_err(|mut e| {
                    e.path.push(Segment::Index(i));
                    e
                })?;
            }
            Ok(())
        }
        Json::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.len() > limits.string_bytes_max) {
                return Err(OverLimit {
                    path: Vec::new(),
                    string_bytes: Some(k.len()),
                    key: true,
                });
            }
            for (k, x) in m {
                check(x, depth + 1, limits).map_err(|mut e| {
                    e.path.push(Segment::Key(k));
                    e
                })?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The length of a map as compact JSON, counted without building the text.
fn json_bytes(m: &Map<String, Json>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if m.is_empty() {
        return 0;
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, m);
    c.0
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
