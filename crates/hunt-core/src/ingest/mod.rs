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
//!
//! Here: the forms, the limits, the errors and decoding a request. `json.rs`: strict JSON.
//! `event.rs`: one event, field by field. `binary.rs`: CloudEvents binary mode.
//! `limits.rs`: `data` and `traits` held to the limits.

use serde_json::Value as Json;

use crate::engine::Event;

mod binary;
mod event;
mod json;
mod limits;

use binary::binary;
use event::{Shape, event};
pub use json::parse_json;

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
    #[error(
        "the body was sent as a form (Content-Type `application/x-www-form-urlencoded`, what `curl -d` sends unless told otherwise); send JSON with `Content-Type: application/json` (curl: -H 'Content-Type: application/json'); application/x-ndjson, application/cloudevents+json and application/cloudevents-batch+json are taken too"
    )]
    FormEncoded,
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
        "application/x-www-form-urlencoded" => Err(RequestError::FormEncoded),
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
