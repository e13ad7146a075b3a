//! One event, field by field: the shape's own fields, then `id`, `type`, the user,
//! `time`, `data` and `traits`, each rejected with the field named.

use serde_json::{Map, Value as Json};

use super::limits::{json_bytes, object};
use super::{Limits, Rejection, kind, reject};
use crate::engine::Event;
use crate::ids;
use crate::time::Timestamp;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Native,
    CloudEvent,
}

const NATIVE_FIELDS: &[&str] = &["id", "type", "user", "time", "data", "traits"];

pub(super) fn event(
    index: usize,
    v: Json,
    limits: &Limits,
    shape: Shape,
) -> Result<Event, Rejection> {
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
    let (user_field, user) = user_by_shape(&mut m, shape, &r)?;
    let id = required_string(m.remove("id"), "id")
        .and_then(|id| {
            ids::check_event_id(&id)
                .map(|()| id)
                .map_err(|e| e.in_field("id"))
        })
        .map_err(|e| r("id", e))?;
    let event_type = required_str(m.remove("type"), "type", 64).map_err(|e| r("type", e))?;
    if !crate::catalog::is_valid_event_type(&event_type) {
        return Err(r(
            "type",
            format!("`type` must match [a-z0-9_.:-]{{1,64}}, got {event_type:?}"),
        ));
    }
    let user = required_string(user, user_field)
        .and_then(|u| {
            ids::check_customer(&u)
                .map(|()| u)
                .map_err(|e| e.in_field(user_field))
        })
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

/// Checks what the shape adds (a native event's field names; a CloudEvent's
/// `specversion`, `source` and `datacontenttype`) and takes out the user: the field it
/// is in, and its value. `r` makes a rejection of the event.
fn user_by_shape(
    m: &mut Map<String, Json>,
    shape: Shape,
    r: &impl Fn(&str, String) -> Rejection,
) -> Result<(&'static str, Option<Json>), Rejection> {
    Ok(match shape {
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
            match m.get("datacontenttype") {
                None | Some(Json::Null) => {}
                Some(Json::String(ct)) if ct.starts_with("application/json") => {}
                Some(Json::String(ct)) => {
                    return Err(r(
                        "datacontenttype",
                        format!("`data` must be JSON, got {ct:?}"),
                    ));
                }
                Some(other) => {
                    return Err(r(
                        "datacontenttype",
                        format!(
                            "CloudEvents `datacontenttype` must be a string, found {}",
                            kind(other)
                        ),
                    ));
                }
            }
            ("subject", m.remove("subject"))
        }
    })
}

/// A field that must be a string.
fn required_string(v: Option<Json>, name: &str) -> Result<String, String> {
    match v {
        Some(Json::String(s)) => Ok(s),
        None | Some(Json::Null) => Err(format!("`{name}` is required")),
        Some(other) => Err(format!("`{name}` must be a string, found {}", kind(&other))),
    }
}

/// A field that must be a string of 1 to `max` bytes.
fn required_str(v: Option<Json>, name: &str, max: usize) -> Result<String, String> {
    let s = required_string(v, name)?;
    if s.is_empty() {
        return Err(format!("`{name}` must not be empty"));
    }
    if s.len() > max {
        return Err(format!(
            "`{name}` is {} bytes, over the limit of {max}",
            s.len()
        ));
    }
    Ok(s)
}
