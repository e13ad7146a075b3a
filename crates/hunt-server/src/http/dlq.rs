//! The dead-letter queue: list, show, retry and drop deliveries that gave up.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use hunt_core::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, DLQ_LIMIT_MAX, Json};
use crate::notify::outbox::{Entry, Filter};
use crate::service::Service;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    sink: Option<String>,
    hunt: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

/// What `POST /v1/dlq/retry` and `/drop` act on: one id, a filter, or all.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    id: Option<String>,
    sink: Option<String>,
    hunt: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    all: bool,
}

fn time(v: &Option<String>, field: &'static str) -> Result<Option<Timestamp>, ApiError> {
    v.as_deref()
        .map(|t| {
            Timestamp::parse(t).map_err(|e| ApiError::BadTime {
                field,
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.key,
        "sink": e.sink,
        "hunt": e.hunt,
        "state": if e.dead_at.is_some() { "dead" } else { "pending" },
        "queued_at": e.queued_at,
        "dead_at": e.dead_at,
        "attempts": e.history.len(),
        "last_error": e.history.last().map(|a| &*a.error),
        "history": e.history,
    })
}

pub(super) async fn list(
    _: Authorized<role::Admin>,
    Params(q): Params<DlqQuery>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let limit = super::extract::limit(q.limit.as_deref(), 100, DLQ_LIMIT_MAX)?;
    let filter = Filter {
        key: None,
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
        sink: q.sink,
        hunt: q.hunt,
    };
    let (entries, total) = service.notifier.dead_letters(&filter, limit);
    Ok(Json(json!({
        "total": total,
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
    })))
}

pub(super) async fn show(
    _: Authorized<role::Admin>,
    Path(id): Path<String>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let Some(e) = service.notifier.get(&id).await else {
        return Err(ApiError::UnknownDelivery(id));
    };
    let mut v = entry_json(&e);
    v["event"] = e
        .body
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    Ok(Json(v))
}

fn selection(body: &Bytes) -> Result<Filter, ApiError> {
    let hint = "send {\"id\": \"…\"}, a filter ({\"sink\", \"hunt\", \"since\", \"until\"}) or {\"all\": true}";
    let s: Selection = if body.iter().all(u8::is_ascii_whitespace) {
        Selection::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadSelection(format!("{e}; {hint}")))?
    };
    let filtered = s.sink.is_some() || s.hunt.is_some() || s.since.is_some() || s.until.is_some();
    match (s.id.is_some(), filtered, s.all) {
        (false, false, false) => Err(ApiError::NoSelection(format!(
            "say which dead letters: {hint}"
        ))),
        (true, true, _) | (true, _, true) | (_, true, true) => Err(ApiError::BadSelection(
            format!("give one of `id`, a filter or `all`, not several; {hint}"),
        )),
        _ => Ok(Filter {
            key: s.id,
            since: time(&s.since, "since")?,
            until: time(&s.until, "until")?,
            sink: s.sink,
            hunt: s.hunt,
        }),
    }
}

async fn operate(service: Arc<Service>, body: Bytes, retry: bool) -> Result<Json<Value>, ApiError> {
    let filter = selection(&body)?;
    let keys = service
        .notifier
        .operate(&filter, retry)
        .await
        .map_err(ApiError::LogStopped)?;
    if let Some(id) = filter.key
        && keys.is_empty()
    {
        return Err(ApiError::UnknownDeadLetter(id));
    }
    let verb = if retry { "retried" } else { "dropped" };
    tracing::info!(count = keys.len(), "dead letters {verb}");
    // The ids, up to a thousand (a retry of everything may touch many more).
    let shown: Vec<&String> = keys.iter().take(1000).collect();
    Ok(Json(json!({ verb: keys.len(), "ids": shown })))
}

pub(super) async fn retry(
    _: Authorized<role::Admin>,
    Ready(service): Ready,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operate(service, body, true).await
}

pub(super) async fn drop(
    _: Authorized<role::Admin>,
    Ready(service): Ready,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operate(service, body, false).await
}
