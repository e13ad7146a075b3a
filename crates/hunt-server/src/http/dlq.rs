//! The dead-letter queue: list, show, retry and drop deliveries that gave up.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use hunt_core::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, DLQ_LIMIT_MAX, Json};
use crate::notify::outbox::{Attempt, Entry, Filter};
use crate::service::Service;

/// `GET /v1/dlq`'s query. Times and the limit are read as text, so that a bad one gets
/// its own error (`bad_time`, `bad_limit`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    /// Only this sink's.
    sink: Option<String>,
    /// Only this hunt's.
    hunt: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    #[schemars(with = "Option<Timestamp>")]
    since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    #[schemars(with = "Option<Timestamp>")]
    until: Option<String>,
    /// How many entries to show: 1 to 10000, 100 if absent.
    #[schemars(with = "Option<u32>", range(min = 1, max = 10000))]
    limit: Option<String>,
}

/// What `POST /v1/dlq/retry` and `/drop` act on: one id, a filter, or all. A field is
/// given or absent: `null` is refused, not read as absent (`{"id": null, "sink": "s"}`
/// is not a filter by sink).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default, deserialize_with = "given")]
    id: Option<String>,
    #[serde(default, deserialize_with = "given")]
    sink: Option<String>,
    #[serde(default, deserialize_with = "given")]
    hunt: Option<String>,
    #[serde(default, deserialize_with = "given")]
    since: Option<String>,
    #[serde(default, deserialize_with = "given")]
    until: Option<String>,
    #[serde(default)]
    all: bool,
}

/// The forms a [`Selection`] may take, for its schema: what [`selection`] checks.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum SelectionForms {
    One(SelectOne),
    Filter(SelectFilter),
    All(SelectAll),
}

/// One dead letter, by id.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct SelectOne {
    id: String,
}

/// Every dead letter matching the filter: at least one field, combined with and.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("minProperties" = 1))]
#[allow(dead_code)]
struct SelectFilter {
    sink: Option<String>,
    hunt: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    since: Option<Timestamp>,
    /// Dead-lettered before (RFC 3339).
    until: Option<Timestamp>,
}

/// Every dead letter.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct SelectAll {
    #[schemars(extend("const" = true))]
    all: bool,
}

impl JsonSchema for Selection {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Selection".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut s = SelectionForms::json_schema(generator);
        // A filter's fields may be absent, not null: a filter of nulls selects nothing.
        if let Some(props) = generator
            .definitions_mut()
            .get_mut("SelectFilter")
            .and_then(|f| f.get_mut("properties"))
            .and_then(Value::as_object_mut)
        {
            for p in props.values_mut() {
                *p = super::openapi::not_null(p.take());
            }
        }
        s.insert(
            "description".into(),
            "What to act on: one `id`; a filter (`sink`, `hunt`, `since`, `until`, combined with and); or `all: true`.".into(),
        );
        s
    }
}

/// A field that is present: a string, never `null`.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
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

/// One delivery, pending or dead.
#[derive(Serialize, JsonSchema)]
pub(super) struct EntryView {
    /// The delivery's id (its idempotency key at the receiver).
    id: String,
    sink: Arc<str>,
    hunt: Arc<str>,
    /// `dead` (in the dead-letter queue) or `pending`.
    #[schemars(extend("enum" = ["dead", "pending"]))]
    state: &'static str,
    queued_at: Timestamp,
    dead_at: Option<Timestamp>,
    /// Failed attempts in all.
    attempts: usize,
    last_error: Option<Arc<str>>,
    /// Every failed attempt, oldest first.
    history: Vec<Attempt>,
}

fn entry_view(e: &Entry) -> EntryView {
    EntryView {
        id: e.key.clone(),
        sink: e.sink.clone(),
        hunt: e.hunt.clone(),
        state: if e.dead_at.is_some() {
            "dead"
        } else {
            "pending"
        },
        queued_at: e.queued_at,
        dead_at: e.dead_at,
        attempts: e.history.len(),
        last_error: e.history.last().map(|a| a.error.clone()),
        history: e.history.clone(),
    }
}

/// `GET /v1/dlq`: dead letters.
#[derive(Serialize, JsonSchema)]
pub(super) struct DlqList {
    /// Dead letters matching the filter, in all.
    total: usize,
    /// The first `limit` of them, in the log's order.
    entries: Vec<EntryView>,
    /// On a cluster whose partitions are spread over nodes: the nodes that did not
    /// answer in time, whose dead letters are missing (absent when all answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// `GET /v1/dlq/{id}`: one delivery and the CloudEvent it carries.
#[derive(Serialize, JsonSchema)]
pub(super) struct DeliveryView {
    #[serde(flatten)]
    entry: EntryView,
    /// The CloudEvent sent (null once a dead letter let its body go).
    event: Value,
}

/// `POST /v1/dlq/retry`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Retried {
    /// How many dead letters were sent back.
    retried: usize,
    /// Their ids (the first thousand).
    ids: Vec<String>,
    /// Nodes that did not answer in time: theirs may or may not have been retried
    /// (absent when all answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// `POST /v1/dlq/drop`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Dropped {
    /// How many dead letters were removed.
    dropped: usize,
    /// Their ids (the first thousand).
    ids: Vec<String>,
    /// Nodes that did not answer in time: theirs may or may not have been dropped
    /// (absent when all answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

pub(super) async fn list(
    _: Authorized<role::Admin>,
    Params(q): Params<DlqQuery>,
    Ready(service): Ready,
) -> Result<Json<DlqList>, ApiError> {
    let limit = super::extract::limit(q.limit.as_deref(), 100, DLQ_LIMIT_MAX)?;
    let filter = Filter {
        key: None,
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
        sink: q.sink,
        hunt: q.hunt,
    };
    let (entries, total, partial) = service.dead_letters(&filter, limit).await;
    Ok(Json(DlqList {
        total,
        entries: entries.iter().map(entry_view).collect(),
        partial,
    }))
}

pub(super) async fn show(
    _: Authorized<role::Admin>,
    Path(id): Path<String>,
    Ready(service): Ready,
) -> Result<Json<DeliveryView>, ApiError> {
    let filter = Filter {
        key: Some(id.clone()),
        ..Filter::default()
    };
    // Here, or on a cluster whose partitions are spread over nodes, its owner's.
    let Some(e) = service.dead_letters(&filter, 1).await.0.pop() else {
        return Err(ApiError::UnknownDelivery(id));
    };
    Ok(Json(DeliveryView {
        entry: entry_view(&e),
        event: e
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null),
    }))
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

/// Retries (`retry`) or drops the selection: how many, their first thousand ids, and
/// the nodes that did not answer.
async fn operate(
    service: Arc<Service>,
    body: Bytes,
    retry: bool,
) -> Result<(usize, Vec<String>, Vec<String>), ApiError> {
    let filter = selection(&body)?;
    let (keys, partial) = service
        .operate_dead_letters(&filter, retry)
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
    let n = keys.len();
    Ok((n, keys.into_iter().take(1000).collect(), partial))
}

/// The most bytes a selection may have: it is a few fields.
pub const SELECTION_BYTES_MAX: usize = 64 * 1024;

/// A selection's body, read as every body is: within the body timeout and the limit.
async fn selection_body(
    app: &super::App,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, ApiError> {
    super::extract::body_bytes(
        headers,
        body,
        "a selection of dead letters",
        SELECTION_BYTES_MAX,
        app.http.conn.body_timeout,
    )
    .await
}

pub(super) async fn retry(
    axum::extract::State(app): axum::extract::State<Arc<super::App>>,
    _: Authorized<role::Admin>,
    Ready(service): Ready,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Retried>, ApiError> {
    let body = selection_body(&app, &headers, body).await?;
    let (retried, ids, partial) = operate(service, body, true).await?;
    Ok(Json(Retried {
        retried,
        ids,
        partial,
    }))
}

pub(super) async fn drop(
    axum::extract::State(app): axum::extract::State<Arc<super::App>>,
    _: Authorized<role::Admin>,
    Ready(service): Ready,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Dropped>, ApiError> {
    let body = selection_body(&app, &headers, body).await?;
    let (dropped, ids, partial) = operate(service, body, false).await?;
    Ok(Json(Dropped {
        dropped,
        ids,
        partial,
    }))
}
