//! The HTTP API: the application's shared state, the routes and the middleware. One
//! file per group of endpoints; errors and their statuses live in `error.rs` alone,
//! and what every handler checks first (key, inputs, readiness) in `extract.rs`.

mod config;
pub mod conn;
mod dlq;
mod error;
mod extract;
mod hunts;
mod ingest;
mod openapi;
mod ops;
mod overview;
mod pools;
mod ui;
mod users;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hunt_core::ingest::Limits;
use serde::Serialize;

use crate::auth::{Keys, Role};
use crate::service::Service;
pub use error::ApiError;

/// The HTTP side of the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub limits: Limits,
    pub keys: Keys,
    /// Events per second per API key (burst: one second's worth).
    pub rate_per_key: Option<NonZeroU32>,
    /// Events per second per customer (burst: one second's worth).
    pub rate_per_user: Option<NonZeroU32>,
    /// Connection cap and timeouts (`conn.rs`).
    pub conn: conn::ConnLimits,
}

/// Default per-customer rate: far above what a person clicks, low enough that one
/// runaway client cannot flood a partition.
pub const RATE_PER_USER_DEFAULT: u32 = 100;
/// The largest hunts file `PUT /v1/config` takes.
pub const CONFIG_BYTES_MAX: usize = 4 << 20;
/// The most winners one query returns.
pub const WINNERS_LIMIT_MAX: usize = 10_000;
/// The most dead letters one listing shows.
pub const DLQ_LIMIT_MAX: usize = 10_000;

pub struct App {
    /// Set once the log is replayed; until then only health and readiness answer.
    pub service: OnceLock<Arc<Service>>,
    /// Set with the service.
    pub alerts: OnceLock<Arc<crate::alerts::Alerts>>,
    /// Set with the service: the dashboard's recent history.
    pub history: OnceLock<Arc<crate::history::History>>,
    pub http: HttpConfig,
    key_limiter: Option<DefaultKeyedRateLimiter<String>>,
    user_limiter: Option<DefaultKeyedRateLimiter<String>>,
    request_ids: AtomicU64,
    started: Instant,
    /// What the connection layer counts.
    pub conn_metrics: Arc<conn::ConnMetrics>,
    /// `/openapi.json`, written on first use.
    openapi: OnceLock<String>,
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
            history: OnceLock::new(),
            request_ids: AtomicU64::new(0),
            started: Instant::now(),
            conn_metrics: Arc::default(),
            openapi: OnceLock::new(),
        })
    }

    /// The service, once the log is replayed and while the log is writable.
    pub(crate) fn ready(&self) -> Result<&Arc<Service>, ApiError> {
        let s = self.service.get().ok_or(ApiError::Starting)?;
        if let Some(why) = s.fatal().borrow().clone() {
            return Err(ApiError::Stopping(why));
        }
        if let Some(t) = s.tenure()
            && let Some(lapsed) = t.lapsed_for(crate::tenure::Stamp::now())
        {
            return Err(ApiError::NotOwner(lapsed));
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
            .and_then(|v| bearer(v.as_bytes()))
            .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()));
        Ok(self.http.keys.check(presented, role)?.to_string())
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

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/users/{user}", get(users::get_user))
        .route("/v1/users/{user}/hunts", get(users::get_user_hunts))
        .route("/v1/hunts", get(hunts::get_hunts))
        .route("/v1/hunts/{id}/stats", get(hunts::get_hunt_stats))
        .route("/v1/hunts/{id}/winners", get(hunts::get_hunt_winners))
        .route("/v1/hunts/{id}/history", get(hunts::get_hunt_history))
        .route("/v1/pools", get(pools::pools))
        .route("/v1/overview", get(overview::overview))
        .route("/v1/cluster", get(overview::cluster))
        .route(
            "/v1/config",
            get(config::get_config).put(config::put_config),
        )
        .route("/v1/config/versions", get(config::get_versions))
        .route("/v1/config/versions/{version}", get(config::get_version))
        .route("/v1/config/diff", get(config::get_diff))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/retry", post(dlq::retry))
        .route("/v1/dlq/drop", post(dlq::drop))
        .route("/v1/dlq/{id}", get(dlq::show))
        .route("/v1/alerts", get(ops::alerts))
        .route("/metrics", get(ops::get_metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            tenure_after,
        ))
        .layer(axum::middleware::from_fn(head_limits))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            request_id,
        ))
        .with_state(app)
}

/// The longest request target taken (path and query), in bytes.
pub const URI_BYTES_MAX: usize = 8 * 1024;
/// The most header fields one request may carry.
pub const HEADERS_MAX: usize = 100;
/// The most bytes of header fields (names and values) one request may carry.
pub const HEADER_BYTES_MAX: usize = 32 * 1024;

/// Refuses a request head over the limits with a JSON 414 or 431. The connection
/// layer lets hyper parse more than this (`conn::HYPER_HEADERS_MAX`), so that these
/// answers, not hyper's empty ones, are what a client meets.
async fn head_limits(req: Request, next: Next) -> Result<Response, ApiError> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > URI_BYTES_MAX {
        return Err(ApiError::UriTooLong {
            len: uri,
            max: URI_BYTES_MAX,
        });
    }
    let count = req.headers().len();
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if count > HEADERS_MAX || bytes > HEADER_BYTES_MAX {
        return Err(ApiError::HeadersTooLarge {
            count,
            bytes,
            count_max: HEADERS_MAX,
            bytes_max: HEADER_BYTES_MAX,
        });
    }
    Ok(next.run(req).await)
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

/// A read answered from the state is checked against the tenure again once it is
/// made: the tenure may have ended while it waited for a partition (a write needs no
/// such check, because the log refused it if another node owned the partition).
async fn tenure_after(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let read = req.method() == axum::http::Method::GET;
    let r = next.run(req).await;
    if read
        && r.status().is_success()
        && let Some(s) = app.service.get()
        && let Some(t) = s.tenure()
        && let Some(lapsed) = t.lapsed_for(crate::tenure::Stamp::now())
    {
        return ApiError::NotOwner(lapsed).into_response();
    }
    r
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
    let mut r = error::json_errors(next.run(req).await).await;
    let status = r.status().as_u16();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if worth_a_warning(status, app.service.get().is_none()) {
        tracing::warn!(request_id = %id, %method, %path, status, ms, "request");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

/// A server-side failure is logged as a warning; a 503 while the server is still
/// rebuilding its state is expected (`/readyz` is polled for exactly that) and is not,
/// or a start on a long log would write a warning per poll.
fn worth_a_warning(status: u16, starting: bool) -> bool {
    status >= 500 && !(status == 503 && starting)
}

/// The key in an `Authorization` value of the bearer scheme, whose name is matched
/// without regard to case (RFC 9110, 11.1): `Bearer k`, `bearer k`, `BEARER  k`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let at = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(at);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

#[cfg(test)]
mod tests {
    use super::{bearer, worth_a_warning};

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        assert_eq!(bearer(b"Bearer k1"), Some(&b"k1"[..]));
        assert_eq!(bearer(b"bearer k1"), Some(&b"k1"[..]));
        assert_eq!(bearer(b"BEARER   k1"), Some(&b"k1"[..]));
        assert_eq!(bearer(b"Basic k1"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn only_unexpected_failures_are_warnings() {
        assert!(
            !worth_a_warning(503, true),
            "polling /readyz while starting"
        );
        assert!(
            worth_a_warning(503, false),
            "a full backlog or a stopped log"
        );
        assert!(worth_a_warning(500, true));
        assert!(worth_a_warning(500, false));
        assert!(!worth_a_warning(404, false));
    }
}
