//! The operators' endpoints: the dead-letter queue and the alerts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use hunt_core::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, App, Json};
use crate::auth::Role;
use crate::notify::outbox::{Entry, Filter};

/// The most dead letters one listing shows.
pub const DLQ_LIMIT_MAX: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    sink: Option<String>,
    hunt: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
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

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn time(v: &Option<String>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    v.as_deref()
        .map(|t| Timestamp::parse(t).map_err(|e| bad("bad_time", format!("`{name}`: {e}"))))
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

pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Admin)?;
    let Query(q) = q.map_err(crate::api::bad_query)?;
    let service = app.ready()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > DLQ_LIMIT_MAX {
        return Err(bad(
            "bad_limit",
            format!("`limit` must be 1-{DLQ_LIMIT_MAX}, got {limit}"),
        ));
    }
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

pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Admin)?;
    let service = app.ready()?;
    let e = service.notifier.get(&id).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_delivery",
            format!("no pending delivery or dead letter has the id `{id}` (delivered, dropped, or never made)"),
        )
    })?;
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
        serde_json::from_slice(body).map_err(|e| bad("bad_selection", format!("{e}; {hint}")))?
    };
    let filtered = s.sink.is_some() || s.hunt.is_some() || s.since.is_some() || s.until.is_some();
    match (s.id.is_some(), filtered, s.all) {
        (false, false, false) => Err(bad(
            "no_selection",
            format!("say which dead letters: {hint}"),
        )),
        (true, true, _) | (true, _, true) | (_, true, true) => Err(bad(
            "bad_selection",
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

async fn operate(
    app: Arc<App>,
    headers: HeaderMap,
    body: Bytes,
    retry: bool,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Admin)?;
    let service = app.ready()?;
    let filter = selection(&body)?;
    let keys = service
        .notifier
        .operate(&filter, retry)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_stopped", e))?;
    if let Some(id) = &filter.key
        && keys.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_dead_letter",
            format!("no dead letter has the id `{id}`"),
        ));
    }
    let verb = if retry { "retried" } else { "dropped" };
    tracing::info!(count = keys.len(), "dead letters {verb}");
    // The ids, up to a thousand (a retry of everything may touch many more).
    let shown: Vec<&String> = keys.iter().take(1000).collect();
    Ok(Json(json!({ verb: keys.len(), "ids": shown })))
}

pub async fn retry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operate(app, headers, body, true).await
}

pub async fn drop(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operate(app, headers, body, false).await
}

pub async fn alerts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    app.ready()?;
    let a = app.alerts.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the alerts are not evaluated yet",
        )
    })?;
    let rules: Vec<Value> = a
        .config
        .rules
        .iter()
        .map(|r| json!({"name": r.name, "condition": r.describe()}))
        .collect();
    let states = a.states();
    let firing = states
        .iter()
        .filter(|s| s.state == crate::alerts::Phase::Firing)
        .count();
    Ok(Json(json!({
        "firing": firing,
        "alerts": states,
        "rules": rules,
    })))
}
