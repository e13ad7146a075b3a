//! The HTTP API: routes, authentication, rate limits, and the shape of every answer.
//! Errors are JSON `{"error": {"code", "message"}}` with the status that says what to
//! do: 4xx fix the request, 429/503 retry after `Retry-After` seconds.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hunt_core::engine::{HuntProgress, Outcome};
use hunt_core::ingest::{self, Limits, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Denied, Keys, Role};
use crate::metrics::RejectReason;
use crate::partition::Status;
use crate::service::{ConfigAnswer, ConfigError, ConfigOptions, IngestError, Service, now};
use crate::state::Version;
use hunt_core::testing::DiffLine;

/// The HTTP side of the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub limits: Limits,
    pub keys: Keys,
    /// Events per second per API key (burst: one second's worth).
    pub rate_per_key: Option<NonZeroU32>,
    /// Events per second per customer (burst: one second's worth).
    pub rate_per_user: Option<NonZeroU32>,
}

/// Default per-customer rate: far above what a person clicks, low enough that one
/// runaway client cannot flood a partition.
pub const RATE_PER_USER_DEFAULT: u32 = 100;
/// The largest hunts file `PUT /v1/config` takes.
pub const CONFIG_BYTES_MAX: usize = 4 << 20;
/// The most winners one query returns.
pub const WINNERS_LIMIT_MAX: usize = 10_000;

pub struct App {
    /// Set once the log is replayed; until then only health and readiness answer.
    pub service: OnceLock<Arc<Service>>,
    /// Set with the service.
    pub alerts: OnceLock<Arc<crate::alerts::Alerts>>,
    pub http: HttpConfig,
    key_limiter: Option<DefaultKeyedRateLimiter<String>>,
    user_limiter: Option<DefaultKeyedRateLimiter<String>>,
    request_ids: AtomicU64,
    started: Instant,
}

impl App {
    pub fn new(http: HttpConfig) -> Arc<App> {
        let limiter = |r: Option<NonZeroU32>| r.map(|r| RateLimiter::keyed(Quota::per_second(r)));
        Arc::new(App {
            key_limiter: limiter(http.rate_per_key),
            user_limiter: limiter(http.rate_per_user),
            http,
            service: OnceLock::new(),
            alerts: OnceLock::new(),
            request_ids: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    pub(crate) fn ready(&self) -> Result<&Arc<Service>, ApiError> {
        let s = self.service.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the server is rebuilding its state from the log; retry shortly",
            )
            .retry_after(1)
        })?;
        if let Some(why) = s.fatal().borrow().clone() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                format!("the event log failed ({why}); the server is stopping"),
            ));
        }
        Ok(s)
    }

    /// The key's name (`-` in development mode without keys), if it has `role`.
    pub(crate) fn authorize(&self, headers: &HeaderMap, role: Role) -> Result<String, ApiError> {
        if self.http.keys.is_empty() {
            return Ok("-".into());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()));
        self.http
            .keys
            .check(presented, role)
            .map(str::to_string)
            .map_err(|d| {
                let (status, code) = match d {
                    Denied::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                    _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
                };
                ApiError::new(status, code, d.to_string())
            })
    }

    /// Forgets rate-limit state of keys and customers not seen lately (bounds memory).
    pub fn trim_limiters(&self) {
        for l in [&self.key_limiter, &self.user_limiter]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// A JSON answer ending in a newline (so `curl` output ends its line).
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(mut body) => {
                body.push(b'\n');
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the answer could not be written as JSON: {e}\n"),
            )
                .into_response(),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let code = match e {
            IngestError::Backlog { .. } => "backlog_full",
            IngestError::Stopped(_) => "log_stopped",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string()).retry_after(1)
    }
}

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/users/{user}", get(get_user))
        .route("/v1/users/{user}/hunts", get(get_user_hunts))
        .route("/v1/hunts", get(get_hunts))
        .route("/v1/hunts/{id}/stats", get(get_hunt_stats))
        .route("/v1/hunts/{id}/winners", get(get_hunt_winners))
        .route("/v1/config", get(get_config).put(put_config))
        .route("/v1/dlq", get(crate::admin::list))
        .route("/v1/dlq/retry", post(crate::admin::retry))
        .route("/v1/dlq/drop", post(crate::admin::drop))
        .route("/v1/dlq/{id}", get(crate::admin::show))
        .route("/v1/alerts", get(crate::admin::alerts))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            request_id,
        ))
        .with_state(app)
}

/// A customer id in a path that no event could have had.
fn check_user_id(user: &str) -> Result<(), ApiError> {
    let max = hunt_core::engine::ID_BYTES_MAX;
    let problem = if user.is_empty() || user.len() > max {
        Some(format!(
            "a customer id is 1-{max} bytes, got {}",
            user.len()
        ))
    } else if user.chars().any(char::is_control) {
        Some("a customer id has no control characters".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_user", p)),
        None => Ok(()),
    }
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; see /openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A query string that does not fit the endpoint's parameters.
pub(crate) fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_query",
        format!("the query string does not fit: {}", e.body_text()),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; see /openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Gives every request an id (the caller's `X-Request-Id` if sensible), answers with
/// it, and logs the request with it.
async fn request_id(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{:x}-{:x}",
                app.started.elapsed().as_micros() as u64 ^ std::process::id() as u64,
                app.request_ids.fetch_add(1, Ordering::Relaxed)
            )
        });
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = Instant::now();
    let mut r = json_errors(next.run(req).await).await;
    let status = r.status().as_u16();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %path, status, ms, "request");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

/// Every answer is JSON: an error some layer or extractor wrote as plain text (a path
/// that is not UTF-8, say) is wrapped as `{"error": {"code", "message"}}`.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// One event's answer.
#[derive(Serialize)]
struct EventResult {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    status: &'static str,
    /// `internal` for an event the server failed to apply (a bug; retrying is safe).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcomes: Option<Arc<[Outcome]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl EventResult {
    fn rejected(r: Rejection) -> EventResult {
        EventResult {
            index: r.index,
            id: r.id,
            status: "rejected",
            code: None,
            outcomes: None,
            field: Some(r.field),
            reason: Some(r.reason),
        }
    }
}

#[derive(Serialize)]
struct IngestAnswer {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<EventResult>,
}

async fn post_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let key = app.authorize(&headers, Role::Ingest)?;
    let service = app.ready()?.clone();
    let limits = &app.http.limits;
    let refuse = |e: ApiError| {
        service.metrics.refuse(e.status.as_u16());
        e
    };
    let bytes = axum::body::to_bytes(body, limits.body_bytes_max)
        .await
        .map_err(|_| {
            refuse(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is over the limit of {} bytes (or could not be read)",
                    limits.body_bytes_max
                ),
            ))
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let has_ce = headers.keys().any(|k| k.as_str().starts_with("ce-"));
    let request_error = |e: ingest::RequestError| {
        use ingest::RequestError as R;
        let (status, code) = match &e {
            R::TooLarge { .. } | R::TooManyEvents { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            R::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            R::Malformed(_) | R::Empty => (StatusCode::BAD_REQUEST, "malformed"),
        };
        refuse(ApiError::new(status, code, e.to_string()))
    };
    let form = ingest::form_of(content_type, has_ce).map_err(request_error)?;
    let header_fn = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
    let decoded = ingest::decode(form, &bytes, &header_fn, limits).map_err(request_error)?;
    let n = decoded.len();
    service
        .metrics
        .received
        .fetch_add(n as u64, Ordering::Relaxed);
    if let Some(l) = &app.key_limiter
        && let Some(k) = NonZeroU32::new(n as u32)
    {
        let wait = match l.check_key_n(&key, k) {
            Ok(Ok(())) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_) => Some(std::time::Duration::from_secs(1)),
        };
        if let Some(w) = wait {
            service.metrics.reject(RejectReason::RateLimited, n as u64);
            return Err(refuse(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "API key `{key}` is over its rate limit of {} events/s ({n} events in this request)",
                        app.http.rate_per_key.map_or(0, |r| r.get())
                    ),
                )
                .retry_after(w.as_secs_f64().ceil() as u64),
            ));
        }
    }
    let mut results: Vec<Option<EventResult>> = (0..n).map(|_| None).collect();
    let mut valid = Vec::with_capacity(n);
    let mut limited = 0usize;
    let mut retry_user = 0u64;
    for (i, d) in decoded.into_iter().enumerate() {
        match d {
            Err(r) => {
                service.metrics.reject(RejectReason::Invalid, 1);
                results[i] = Some(EventResult::rejected(r));
            }
            Ok(e) => {
                if let Some(l) = &app.user_limiter
                    && let Err(not_until) = l.check_key(&e.user)
                {
                    let w = not_until.wait_time_from(DefaultClock::default().now());
                    retry_user = retry_user.max(w.as_secs_f64().ceil() as u64);
                    limited += 1;
                    service.metrics.reject(RejectReason::RateLimited, 1);
                    results[i] = Some(EventResult {
                        index: i,
                        id: Some(e.id.clone()),
                        status: "rejected",
                        code: None,
                        outcomes: None,
                        field: Some("user".into()),
                        reason: Some(format!(
                            "customer `{}` is over the rate limit of {} events/s; retry later",
                            e.user,
                            app.http.rate_per_user.map_or(0, |r| r.get())
                        )),
                    });
                    continue;
                }
                valid.push((i, e));
            }
        }
    }
    let statuses = service.ingest(valid).await.map_err(|e| refuse(e.into()))?;
    let (mut window_full, mut internal) = (0, 0);
    for (i, id, s) in statuses {
        let id = Some(id);
        results[i] = Some(match s {
            Status::Accepted(o) => EventResult {
                index: i,
                id,
                status: "accepted",
                code: None,
                outcomes: Some(o),
                field: None,
                reason: None,
            },
            Status::Duplicate(o) => {
                service.metrics.duplicate.fetch_add(1, Ordering::Relaxed);
                EventResult {
                    index: i,
                    id,
                    status: "duplicate",
                    code: None,
                    outcomes: Some(o),
                    field: None,
                    reason: None,
                }
            }
            Status::WindowFull => {
                window_full += 1;
                service.metrics.reject(RejectReason::WindowFull, 1);
                EventResult {
                    index: i,
                    id,
                    status: "rejected",
                    code: None,
                    outcomes: None,
                    field: None,
                    reason: Some("the dedupe window is full of recent events; retry later".into()),
                }
            }
            Status::Internal(why) => {
                internal += 1;
                service.metrics.apply_panics.fetch_add(1, Ordering::Relaxed);
                EventResult {
                    index: i,
                    id,
                    status: "rejected",
                    code: Some("internal"),
                    outcomes: None,
                    field: None,
                    reason: Some(format!(
                        "the server failed to apply this event ({why}); nothing of it was \
                         recorded, and the failure is logged with its id"
                    )),
                }
            }
        });
    }
    let results: Vec<EventResult> = results.into_iter().flatten().collect();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let answer = IngestAnswer {
        accepted: count("accepted"),
        duplicates: count("duplicate"),
        rejected: count("rejected"),
        results,
    };
    let taken = answer.accepted + answer.duplicates;
    // All refused: the status says why; a mixed batch is a 200 with per-event answers.
    let (status, retry) = if taken > 0 || n == 0 {
        (StatusCode::OK, None)
    } else if limited > 0 && limited + window_full == n {
        (StatusCode::TOO_MANY_REQUESTS, Some(retry_user.max(1)))
    } else if window_full > 0 && window_full == n {
        (StatusCode::SERVICE_UNAVAILABLE, Some(1))
    } else if internal > 0 {
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    } else {
        (StatusCode::BAD_REQUEST, None)
    };
    if status != StatusCode::OK {
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

/// A customer's progress in one hunt, by step id.
#[derive(Serialize)]
struct ProgressView {
    hunt: Arc<str>,
    found: Vec<Arc<str>>,
    found_count: u32,
    /// Matching events per step, for steps with a count.
    counts: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_found_at: Option<hunt_core::time::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<hunt_core::time::Timestamp>,
}

fn progress_view(v: &Version, p: &HuntProgress) -> ProgressView {
    // Laid out as the customer's next event will see it under the version in force; a
    // hunt no longer in the file shows the steps it had.
    let hunt = v
        .catalog()
        .hunt_index(p.hunt())
        .map(|h| &v.catalog().hunts[h]);
    let mut p = std::borrow::Cow::Borrowed(p);
    if let Some(h) = hunt {
        p.to_mut().rebind(h);
    }
    let counted = |id: &str| {
        hunt.and_then(|h| h.steps.iter().find(|s| &*s.id == id))
            .is_some_and(|s| s.count > 1)
    };
    ProgressView {
        hunt: p.hunt().clone(),
        found: p.found_ids().cloned().collect(),
        found_count: p.found_count,
        counts: p
            .steps()
            .iter()
            .zip(&p.counts)
            .filter(|(id, c)| **c > 0 && counted(id))
            .map(|(id, c)| (id.to_string(), json!(c)))
            .collect(),
        last_found_at: p.last_found_at,
        completed_at: p.completed_at,
    }
}

fn unknown_user(user: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_user",
        format!("no events were ever accepted for customer `{user}`"),
    )
}

async fn get_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    check_user_id(&user)?;
    let service = app.ready()?;
    let (view, _) = service.user(&user, None).await?;
    let view = view.ok_or_else(|| unknown_user(&user))?;
    let v = service.version();
    Ok(Json(json!({
        "user": view.user,
        "traits": view.state.traits,
        "hunts": view.state.hunts().iter().map(|p| progress_view(&v, p)).collect::<Vec<_>>(),
        "rewards": view.state.rewards,
    })))
}

async fn get_user_hunts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    check_user_id(&user)?;
    let service = app.ready()?;
    let (_, hunts) = service.user(&user, Some(now())).await?;
    Ok(Json(json!({ "user": user, "hunts": hunts })))
}

async fn get_hunts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    let service = app.ready()?;
    let v = service.version();
    let t = now();
    let hunts: Vec<Value> = v
        .catalog()
        .hunts
        .iter()
        .map(|h| {
            json!({
                "id": h.id,
                "title": h.title,
                "active_now": h.is_active(t),
                "from": h.from,
                "until": h.until,
                "order": match h.order { hunt_core::spec::Order::Any => "any", hunt_core::spec::Order::Sequence => "sequence" },
                "steps": h.step_ids,
                "complete_after": h.complete_after,
                "reward": h.reward.map(|r| json!({"pool": v.catalog().pools[r.pool].id, "per_user": r.per_user})),
                "max_winners": h.max_winners,
            })
        })
        .collect();
    Ok(Json(json!({ "version": v.record.version, "hunts": hunts })))
}

fn unknown_hunt(v: &Version, id: &str) -> ApiError {
    let ids: Vec<&str> = v.catalog().hunts.iter().map(|h| &*h.id).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_hunt",
        format!(
            "no hunt `{id}` in hunts file version {}; hunts: {}",
            v.record.version,
            ids.join(", ")
        ),
    )
}

async fn get_hunt_stats(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    let service = app.ready()?;
    let v = service.version();
    let h = v
        .catalog()
        .hunt_index(&id)
        .ok_or_else(|| unknown_hunt(&v, &id))?;
    let hunt = &v.catalog().hunts[h];
    let (stats, _, _) = service.stats(None).await;
    let c = stats.get(&*hunt.id).cloned().unwrap_or_default();
    let reward = hunt.reward.map(|r| {
        let pool = &v.catalog().pools[r.pool];
        json!({
            "pool": pool.id,
            "size": pool.size(),
            "remaining": pool.size().saturating_sub(v.pools.taken(r.pool)),
        })
    });
    Ok(Json(json!({
        "hunt": hunt.id,
        "participants": c.participants,
        "funnel": hunt.step_ids.iter().map(|s| json!({"step": s, "found": c.found.get(s).copied().unwrap_or(0)})).collect::<Vec<_>>(),
        "completions": c.completions,
        "rewards_granted": c.granted,
        "rewards_denied": c.denied,
        "trails_gone_cold": c.trails_gone_cold,
        "reward": reward,
    })))
}

#[derive(Deserialize)]
struct WinnersQuery {
    limit: Option<usize>,
}

async fn get_hunt_winners(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<WinnersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Read)?;
    let Query(q) = q.map_err(bad_query)?;
    let service = app.ready()?;
    let v = service.version();
    v.catalog()
        .hunt_index(&id)
        .ok_or_else(|| unknown_hunt(&v, &id))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > WINNERS_LIMIT_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("`limit` must be 1-{WINNERS_LIMIT_MAX}, got {limit}"),
        ));
    }
    let (_, winners, total) = service.stats(Some((&id, limit))).await;
    let list: Vec<_> = winners
        .into_iter()
        .map(|w| json!({"user": w.user, "code": w.code, "at": w.at}))
        .collect();
    Ok(Json(json!({ "hunt": id, "total": total, "winners": list })))
}

async fn get_config(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Admin)?;
    let service = app.ready()?;
    let v = service.version();
    Ok(Json(json!({
        "version": v.record.version,
        "name": v.record.name,
        "in_force_since": hunt_core::time::Timestamp(v.record.at),
        "hunts": v.catalog().hunts.len(),
        "pools": v.catalog().pools.len(),
        "text": v.record.text,
    })))
}

#[derive(Deserialize)]
struct ConfigQuery {
    name: Option<String>,
    /// Say what the file would change, and to how many customers; switch nothing.
    #[serde(default)]
    dry_run: bool,
    /// Put it in force even if its own test cases fail.
    #[serde(default)]
    skip_tests: bool,
}

/// A plan as JSON: its changes (with the customers each touches, when counted), one line
/// per change for a person, and the refusals.
fn plan_json(plan: &hunt_core::plan::Plan) -> Value {
    json!({
        "changes": plan.changes,
        "summary": plan.changes.iter().map(|c| c.describe()).collect::<Vec<_>>(),
        "refusals": plan.refusals,
        "customers": plan.customers,
    })
}

async fn put_config(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<ConfigQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Role::Admin)?;
    let Query(q) = q.map_err(bad_query)?;
    let service = app.ready()?;
    let bytes = axum::body::to_bytes(body, CONFIG_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a hunts file is at most {} bytes", CONFIG_BYTES_MAX),
            )
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            format!("the hunts file is not UTF-8: {e}"),
        )
    })?;
    let name = q.name.unwrap_or_else(|| "hunts.yaml".into());
    let options = ConfigOptions {
        dry_run: q.dry_run,
        skip_tests: q.skip_tests,
    };
    match service.put_config(&name, text, options).await {
        Ok(ConfigAnswer::Unchanged(r)) => Ok(Json(json!({
            "version": r.version,
            "name": r.name,
            "in_force_since": hunt_core::time::Timestamp(r.at),
            "unchanged": true,
        }))),
        Ok(ConfigAnswer::Planned(plan)) => {
            let mut body = plan_json(&plan);
            body["dry_run"] = json!(true);
            body["version_in_force"] = json!(service.version().record.version);
            Ok(Json(body))
        }
        Ok(ConfigAnswer::Switched(r, plan)) => {
            let mut body = plan_json(&plan);
            body["version"] = json!(r.version);
            body["name"] = json!(r.name);
            body["in_force_since"] = json!(hunt_core::time::Timestamp(r.at));
            Ok(Json(body))
        }
        Err(ConfigError::Invalid(report)) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_hunts_file",
                format!(
                    "{} has {} error(s); nothing changed",
                    report.name,
                    report.errors()
                ),
            );
            e.details = Some(report.to_json());
            Err(e)
        }
        Err(ConfigError::TestsFailed(failed)) => {
            let names: Vec<&str> = failed.iter().map(|f| f.name.as_str()).collect();
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "tests_failed",
                format!(
                    "{} of the file's test cases failed ({}); nothing changed. \
                     `?skip_tests=true` puts it in force anyway",
                    failed.len(),
                    names.join(", ")
                ),
            );
            e.details = Some(json!({
                "failures": failed.iter().map(|f| json!({
                    "name": f.name,
                    "diff": f.diff.iter().map(|d| match d {
                        DiffLine::Same(x) => format!("  {x}"),
                        DiffLine::Missing(x) => format!("- {x}"),
                        DiffLine::Unexpected(x) => format!("+ {x}"),
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }));
            Err(e)
        }
        Err(ConfigError::Unsafe(plan)) => {
            let reasons: Vec<&str> = plan.refusals.iter().map(|r| r.reason.as_str()).collect();
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "unsafe_change",
                format!(
                    "the new version cannot be put in force safely: {}; nothing changed",
                    reasons.join("; ")
                ),
            );
            e.details = Some(plan_json(&plan));
            Err(e)
        }
        Err(ConfigError::Internal(why)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{why}; nothing changed"),
        )),
        Err(ConfigError::Stopped(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_stopped",
            why,
        )),
    }
}

async fn get_metrics(State(app): State<Arc<App>>) -> Response {
    let Some(service) = app.service.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let mut text = crate::observe::render(service).await;
    if let Some(a) = app.alerts.get() {
        a.render(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.ready() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}
