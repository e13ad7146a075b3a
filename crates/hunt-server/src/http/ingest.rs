//! `POST /v1/events`: read the body, decode it, apply the rate limits, ingest, answer
//! each event.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use hunt_core::engine::{Event, Outcome};
use hunt_core::ingest::{self, Decoded, Limits, Rejection};
use schemars::JsonSchema;
use serde::Serialize;

use super::error::BatchTally;
use super::extract::{Authorized, Ready, role};
use super::{ApiError, App, Json};
use crate::metrics::RejectReason;
use crate::partition::Status;
use crate::service::Service;

/// One event's answer.
#[derive(Serialize, JsonSchema)]
pub(super) struct EventResult {
    /// The event's position in the request (0-based; the line for NDJSON).
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[schemars(extend("enum" = ["accepted", "duplicate", "rejected"]))]
    status: &'static str,
    /// `internal` for an event the server failed to apply (a bug; retrying is safe);
    /// `pools_unavailable` on a cluster whose pools could not be reached (retry);
    /// `moving` on a cluster whose partitions are spread over nodes, when the event's
    /// partition's owner could not take it (no owner answering, the partition moving,
    /// or no answer in time; retry: an event the owner did apply is then answered as a
    /// duplicate with its first answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["internal", "pools_unavailable", "moving"]))]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcomes: Option<Arc<[Outcome]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl EventResult {
    fn new(index: usize, id: Option<String>, status: &'static str) -> EventResult {
        EventResult {
            index,
            id,
            status,
            code: None,
            outcomes: None,
            field: None,
            reason: None,
        }
    }

    fn taken(index: usize, id: String, status: &'static str, o: Arc<[Outcome]>) -> EventResult {
        EventResult {
            outcomes: Some(o),
            ..EventResult::new(index, Some(id), status)
        }
    }

    fn refused(
        index: usize,
        id: Option<String>,
        field: Option<&str>,
        reason: String,
    ) -> EventResult {
        EventResult {
            field: field.map(str::to_string),
            reason: Some(reason),
            ..EventResult::new(index, id, "rejected")
        }
    }

    fn rejected(r: Rejection) -> EventResult {
        EventResult::refused(r.index, r.id, Some(&r.field), r.reason)
    }
}

/// `POST /v1/events`: an answer per event, in the request's order.
#[derive(Serialize, JsonSchema)]
pub(super) struct IngestAnswer {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<EventResult>,
}

/// A CloudEvent 1.0 in structured mode (`application/cloudevents+json`, or an array of
/// them as `application/cloudevents-batch+json`), as `hunt_core::ingest` reads it:
/// `subject` is the customer, `data` the event's data, with the customer's traits in
/// `data.traits`. Other attributes (extensions) are taken and ignored. Only its schema
/// is used (in the OpenAPI document); the decoder reads the JSON itself.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(super) struct CloudEventIn {
    /// `1.0`.
    #[schemars(extend("const" = "1.0"))]
    specversion: String,
    #[schemars(length(min = 1))]
    source: String,
    /// Idempotency key: the same `(subject, id)` is one event. 1-128 bytes, no control
    /// characters.
    #[schemars(length(min = 1, max = 128), pattern(r"^[^\x00-\x1F\x7F-\x9F]*$"))]
    id: String,
    /// Event type, e.g. `product_view`.
    #[serde(rename = "type")]
    #[schemars(pattern(r"^[a-z0-9_.:-]{1,64}$"))]
    kind: String,
    /// The customer. 1-128 bytes, no control characters.
    #[schemars(length(min = 1, max = 128), pattern(r"^[^\x00-\x1F\x7F-\x9F]*$"))]
    subject: String,
    time: Option<hunt_core::time::Timestamp>,
    /// JSON, if given.
    #[schemars(pattern(r"^application/json"))]
    datacontenttype: Option<String>,
    data: Option<CloudEventData>,
}

/// A CloudEvent's `data`: the event's data, with the customer's traits in `traits`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(super) struct CloudEventData {
    /// Traits merged into the customer's profile (`null` removes one).
    traits: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(super) async fn post_events(
    State(app): State<Arc<App>>,
    Authorized { key, .. }: Authorized<role::Ingest>,
    Ready(service): Ready,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let refused = |e: ApiError| {
        service.metrics.refuse(e.status().as_u16());
        e
    };
    let limits = &app.http.limits;
    let bytes = super::extract::body_bytes(
        &headers,
        body,
        "the body",
        limits.body_bytes_max,
        app.http.conn.body_timeout,
    )
    .await
    .and_then(|b| super::extract::decoded_body(&headers, b, "the body", limits.body_bytes_max))
    .map_err(refused)?;
    let decoded = decode(&headers, &bytes, limits).map_err(refused)?;
    let n = decoded.len();
    service
        .metrics
        .received
        .fetch_add(n as u64, Ordering::Relaxed);
    limit_key(&app, &service, key, n).map_err(refused)?;
    let mut tally = BatchTally {
        events: n,
        ..BatchTally::default()
    };
    let (mut results, valid) = limit_customers(&app, &service, decoded, &mut tally);
    let statuses = service.ingest(valid).await.map_err(|e| refused(e.into()))?;
    for (i, id, s) in statuses {
        results[i] = Some(answer_one(&service, i, id, s, &mut tally));
    }
    let results: Vec<EventResult> = results.into_iter().flatten().collect();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let answer = IngestAnswer {
        accepted: count("accepted"),
        duplicates: count("duplicate"),
        rejected: count("rejected"),
        results,
    };
    tally.taken = answer.accepted + answer.duplicates;
    let (status, retry) = tally.status();
    if !status.is_success() {
        service.metrics.refuse(status.as_u16());
    }
    let mut r = (status, Json(answer)).into_response();
    if let Some(s) = retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    service
        .metrics
        .ack_seconds
        .observe(t.elapsed().as_secs_f64());
    Ok(r)
}

/// The events of the body, in the form its headers say, each decoded or rejected.
fn decode(headers: &HeaderMap, bytes: &[u8], limits: &Limits) -> Result<Decoded, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let has_ce = headers.keys().any(|k| k.as_str().starts_with("ce-"));
    let form = ingest::form_of(content_type, has_ce)?;
    let header_fn = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
    Ok(ingest::decode(form, bytes, &header_fn, limits)?)
}

/// The key's rate limit takes the whole request or none of it.
fn limit_key(app: &App, service: &Service, key: String, n: usize) -> Result<(), ApiError> {
    let (Some(l), Some(k)) = (&app.key_limiter, NonZeroU32::new(n as u32)) else {
        return Ok(());
    };
    let wait = match l.check_key_n(&key, k) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(not_until)) => not_until.wait_time_from(DefaultClock::default().now()),
        // More events than the key's whole burst: no wait would let it through.
        Err(_) => {
            service.metrics.reject(RejectReason::RateLimited, n as u64);
            return Err(ApiError::OverKeyBurst {
                key,
                burst: app.http.rate_per_key.map_or(0, |r| r.get()),
                events: n,
            });
        }
    };
    service.metrics.reject(RejectReason::RateLimited, n as u64);
    Err(ApiError::RateLimited {
        key,
        rate: app.http.rate_per_key.map_or(0, |r| r.get()),
        events: n,
        retry_after: wait.as_secs_f64().ceil() as u64,
    })
}

type Slots = Vec<Option<EventResult>>;

/// Answers the events that were rejected or whose customer is over the rate limit, and
/// hands back the rest, with their places in the request.
fn limit_customers(
    app: &App,
    service: &Service,
    decoded: Decoded,
    tally: &mut BatchTally,
) -> (Slots, Vec<(usize, Event)>) {
    let mut results: Slots = (0..decoded.len()).map(|_| None).collect();
    let mut valid = Vec::with_capacity(decoded.len());
    for (i, d) in decoded.into_iter().enumerate() {
        let e = match d {
            Err(r) => {
                service.metrics.reject(RejectReason::Invalid, 1);
                results[i] = Some(EventResult::rejected(r));
                continue;
            }
            Ok(e) => e,
        };
        if let Some(l) = &app.user_limiter
            && let Err(not_until) = l.check_key(&e.user)
        {
            let w = not_until.wait_time_from(DefaultClock::default().now());
            tally.retry_user = tally.retry_user.max(w.as_secs_f64().ceil() as u64);
            tally.limited += 1;
            service.metrics.reject(RejectReason::RateLimited, 1);
            let reason = format!(
                "customer `{}` is over the rate limit of {} events/s; retry later",
                e.user,
                app.http.rate_per_user.map_or(0, |r| r.get())
            );
            results[i] = Some(EventResult::refused(i, Some(e.id), Some("user"), reason));
            continue;
        }
        valid.push((i, e));
    }
    (results, valid)
}

/// One ingested event's answer.
fn answer_one(
    service: &Service,
    i: usize,
    id: String,
    s: Status,
    tally: &mut BatchTally,
) -> EventResult {
    match s {
        Status::Accepted(o) => EventResult::taken(i, id, "accepted", o),
        Status::Duplicate(o) => {
            service.metrics.duplicate.fetch_add(1, Ordering::Relaxed);
            EventResult::taken(i, id, "duplicate", o)
        }
        Status::WindowFull => {
            tally.retry_later += 1;
            service.metrics.reject(RejectReason::WindowFull, 1);
            let reason = "the dedupe window is full of recent events; retry later".into();
            EventResult::refused(i, Some(id), None, reason)
        }
        Status::Unavailable(why) => {
            tally.retry_later += 1;
            service.metrics.reject(RejectReason::PoolsUnavailable, 1);
            EventResult {
                code: Some("pools_unavailable"),
                ..EventResult::refused(
                    i,
                    Some(id),
                    None,
                    format!(
                        "the cluster's pools could not be reached for this event ({why}); nothing of it was recorded, retry later"
                    ),
                )
            }
        }
        Status::Moving(why) => {
            tally.retry_later += 1;
            service.metrics.reject(RejectReason::Moving, 1);
            EventResult {
                code: Some("moving"),
                ..EventResult::refused(
                    i,
                    Some(id),
                    None,
                    format!(
                        "this event's partition is another node's, which could not take it now ({why}); retry later: if that node did apply it, the retry is answered as a duplicate with its first answer"
                    ),
                )
            }
        }
        Status::Internal(why) => {
            tally.internal += 1;
            service.metrics.apply_panics.fetch_add(1, Ordering::Relaxed);
            EventResult {
                code: Some("internal"),
                ..EventResult::refused(
                    i,
                    Some(id),
                    None,
                    format!(
                        "the server failed to apply this event ({why}); nothing of it was \
                         recorded, and the failure is logged with its id"
                    ),
                )
            }
        }
    }
}
