//! Every error answer, and the only place that knows its status, its `code` and its
//! `Retry-After`. Each layer's error comes in through a `From` impl; handlers name what
//! went wrong, never a status. The body is `{"error": {"code", "message", "details"?}}`:
//! 4xx fix the request, 429 and 503 retry after `Retry-After` seconds (every 503 has one).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hunt_core::ids::IdError;
use hunt_core::ingest::RequestError;
use hunt_core::testing::DiffLine;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::Json;
use crate::auth::Denied;
use crate::service::{ConfigError, IngestError};

/// Every error answer's body.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorInfo {
    /// What went wrong, for programs: `unauthorized`, `bad_limit`, `unknown_hunt`, …
    /// (each operation's answers list theirs).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// More than the message says: a report's diagnostics, failed test cases, a plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Why a request got no answer of its own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("the server is rebuilding its state from the log; retry shortly")]
    Starting,
    #[error("the alerts are not evaluated yet")]
    AlertsStarting,
    #[error("the event log failed ({0}); the server is stopping")]
    Stopping(String),
    #[error(
        "this node has not confirmed its lease on the partitions for {0:?} past its end, so another node may own them; retry, here or on another node"
    )]
    NotOwner(std::time::Duration),
    /// A customer id in a path that no event could have had.
    #[error(transparent)]
    BadUser(#[from] IdError),
    #[error("the query string does not fit: {0}")]
    BadQuery(String),
    #[error("`limit` must be a whole number from 1 to {max}, got {got:?}")]
    BadLimit { max: usize, got: String },
    #[error("`{field}`: {reason}")]
    BadTime { field: &'static str, reason: String },
    #[error("{0}")]
    BadSelection(String),
    #[error("{0}")]
    NoSelection(String),
    #[error("{what} is over the limit of {limit} bytes")]
    BodyTooLarge { what: &'static str, limit: usize },
    #[error(
        "{what} was not received in full within {secs} s; send it faster, or in smaller requests"
    )]
    BodyTimeout { what: &'static str, secs: u64 },
    #[error("{what} could not be read: {why}")]
    BrokenBody { what: &'static str, why: String },
    #[error("the request target is {len} bytes, over the limit of {max}")]
    UriTooLong { len: usize, max: usize },
    #[error(
        "the request's headers are {count} fields and {bytes} bytes, over the limits of {count_max} fields and {bytes_max} bytes"
    )]
    HeadersTooLarge {
        count: usize,
        bytes: usize,
        count_max: usize,
        bytes_max: usize,
    },
    #[error("unsupported Content-Encoding `{0}`: send the body as it is, or gzip")]
    UnsupportedEncoding(String),
    #[error("the hunts file is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "this request has {events} events, more than API key `{key}` may send at once ({burst}, its rate per second); it can never pass as it is: send at most {burst} events per request"
    )]
    OverKeyBurst {
        key: String,
        burst: u32,
        events: usize,
    },
    #[error(
        "API key `{key}` is over its rate limit of {rate} events/s ({events} events in this request)"
    )]
    RateLimited {
        key: String,
        rate: u32,
        events: usize,
        retry_after: u64,
    },
    #[error("no events were ever accepted for customer `{0}`")]
    UnknownUser(String),
    #[error("no hunt `{id}` in hunts file version {version}; hunts: {hunts}")]
    UnknownHunt {
        id: String,
        version: u64,
        hunts: String,
    },
    #[error(
        "no pending delivery or dead letter has the id `{0}` (delivered, dropped, or never made)"
    )]
    UnknownDelivery(String),
    #[error("`{0}` is not a version number (1, 2, … up to 2^53 - 1)")]
    BadVersion(String),
    #[error("no hunts file version {version} in the log; the version in force is {in_force}")]
    UnknownVersion { version: u64, in_force: u64 },
    #[error("the event log could not be read: {0}")]
    LogRead(String),
    #[error("no dead letter has the id `{0}`")]
    UnknownDeadLetter(String),
    #[error("no route {method} {path}; see /openapi.json")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; see /openapi.json")]
    MethodNotAllowed { method: String, path: String },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("{}", config_message(.0))]
    Config(#[from] ConfigError),
    #[error("{0}")]
    LogStopped(String),
    /// An error some layer or extractor wrote as plain text (a path that is not UTF-8).
    #[error("{message}")]
    Plain { status: StatusCode, message: String },
}

impl ApiError {
    /// The status, the code, and the seconds to wait before a retry.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<u64>) {
        use StatusCode as S;
        let unavailable = |code| (S::SERVICE_UNAVAILABLE, code, Some(1));
        match self {
            ApiError::Denied(Denied::Forbidden { .. }) => (S::FORBIDDEN, "forbidden", None),
            ApiError::Denied(_) => (S::UNAUTHORIZED, "unauthorized", None),
            ApiError::Starting | ApiError::AlertsStarting => unavailable("starting"),
            ApiError::Stopping(_) => unavailable("stopping"),
            ApiError::NotOwner(_) => unavailable("lease_unconfirmed"),
            ApiError::BadUser(_) => (S::BAD_REQUEST, "bad_user", None),
            ApiError::BadQuery(_) => (S::BAD_REQUEST, "bad_query", None),
            ApiError::BadLimit { .. } => (S::BAD_REQUEST, "bad_limit", None),
            ApiError::BadTime { .. } => (S::BAD_REQUEST, "bad_time", None),
            ApiError::BadSelection(_) => (S::BAD_REQUEST, "bad_selection", None),
            ApiError::NoSelection(_) => (S::BAD_REQUEST, "no_selection", None),
            ApiError::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large", None),
            ApiError::BodyTimeout { .. } => (S::REQUEST_TIMEOUT, "body_timeout", None),
            ApiError::BrokenBody { .. } => (S::BAD_REQUEST, "bad_body", None),
            ApiError::UriTooLong { .. } => (S::URI_TOO_LONG, "uri_too_long", None),
            ApiError::HeadersTooLarge { .. } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                None,
            ),
            ApiError::UnsupportedEncoding(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding", None)
            }
            ApiError::NotUtf8(_) => (S::BAD_REQUEST, "not_utf8", None),
            ApiError::Request(r) => match r {
                RequestError::TooLarge { .. } | RequestError::TooManyEvents { .. } => {
                    (S::PAYLOAD_TOO_LARGE, "too_large", None)
                }
                RequestError::UnsupportedMediaType(_) | RequestError::FormEncoded => {
                    (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None)
                }
                RequestError::Malformed(_) | RequestError::Empty => {
                    (S::BAD_REQUEST, "malformed", None)
                }
            },
            ApiError::OverKeyBurst { .. } => (S::PAYLOAD_TOO_LARGE, "over_key_burst", None),
            ApiError::RateLimited { retry_after, .. } => {
                (S::TOO_MANY_REQUESTS, "rate_limited", Some(*retry_after))
            }
            ApiError::UnknownUser(_) => (S::NOT_FOUND, "unknown_user", None),
            ApiError::UnknownHunt { .. } => (S::NOT_FOUND, "unknown_hunt", None),
            ApiError::UnknownDelivery(_) => (S::NOT_FOUND, "unknown_delivery", None),
            ApiError::BadVersion(_) => (S::BAD_REQUEST, "bad_version", None),
            ApiError::UnknownVersion { .. } => (S::NOT_FOUND, "unknown_version", None),
            ApiError::LogRead(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            ApiError::UnknownDeadLetter(_) => (S::NOT_FOUND, "unknown_dead_letter", None),
            ApiError::NoRoute { .. } => (S::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed { .. } => {
                (S::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Ingest(IngestError::Backlog(_)) => unavailable("backlog_full"),
            ApiError::Ingest(IngestError::NotOwner(_)) => unavailable("not_owner"),
            ApiError::Ingest(IngestError::Moving { .. }) => unavailable("moving"),
            ApiError::Ingest(IngestError::Stopped(_)) | ApiError::LogStopped(_) => {
                unavailable("log_stopped")
            }
            ApiError::Config(c) => match c {
                ConfigError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "invalid_hunts_file", None),
                ConfigError::TestsFailed(_) => (S::UNPROCESSABLE_ENTITY, "tests_failed", None),
                ConfigError::Unsafe(_) => (S::CONFLICT, "unsafe_change", None),
                ConfigError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
                ConfigError::Stopped(_) => unavailable("log_stopped"),
                ConfigError::PoolsUnavailable(_) => unavailable("pools_unavailable"),
                ConfigError::Raced(_) => (S::CONFLICT, "version_raced", None),
            },
            ApiError::Plain { status, .. } => {
                let code = match status.as_u16() {
                    404 => "not_found",
                    405 => "method_not_allowed",
                    413 => "too_large",
                    415 => "unsupported_media_type",
                    _ if status.is_server_error() => "internal",
                    _ => "bad_request",
                };
                let retry = (*status == S::SERVICE_UNAVAILABLE).then_some(1);
                (*status, code, retry)
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// More than the message says: a report's lines, failed test cases, a plan.
    fn details(&self) -> Option<Value> {
        match self {
            ApiError::Config(ConfigError::Invalid(report)) => Some(report.to_json()),
            ApiError::Config(ConfigError::TestsFailed(failed)) => Some(json!({
                "failures": failed.iter().map(|f| json!({
                    "name": f.name,
                    "diff": f.diff.iter().map(|d| match d {
                        DiffLine::Same(x) => format!("  {x}"),
                        DiffLine::Missing(x) => format!("- {x}"),
                        DiffLine::Unexpected(x) => format!("+ {x}"),
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })),
            ApiError::Config(ConfigError::Unsafe(plan)) => {
                serde_json::to_value(super::config::PlanView::of(plan)).ok()
            }
            _ => None,
        }
    }
}

fn config_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid(report) => format!(
            "{} has {} error(s); nothing changed",
            report.name,
            report.errors()
        ),
        ConfigError::TestsFailed(failed) => {
            let names: Vec<&str> = failed.iter().map(|f| f.name.as_str()).collect();
            format!(
                "{} of the file's test cases failed ({}); nothing changed. \
                 `?skip_tests=true` puts it in force anyway",
                failed.len(),
                names.join(", ")
            )
        }
        ConfigError::Unsafe(plan) => {
            let reasons: Vec<&str> = plan.refusals.iter().map(|r| r.reason.as_str()).collect();
            format!(
                "the new version cannot be put in force safely: {}; nothing changed",
                reasons.join("; ")
            )
        }
        ConfigError::Internal(why) => format!("{why}; nothing changed"),
        ConfigError::Stopped(why) => why.to_string(),
        ConfigError::PoolsUnavailable(why) => {
            format!("the cluster's pools could not be reached ({why}); nothing changed, retry")
        }
        ConfigError::Raced(why) => why.clone(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, retry) = self.parts();
        let body = ErrorBody {
            error: ErrorInfo {
                code,
                message: self.to_string(),
                details: self.details(),
            },
        };
        let mut r = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // How to authenticate (RFC 9110, 11.6.1): a bearer key.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hunt\""),
            );
        }
        if let Some(s) = retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        r
    }
}

/// How many events of a batch ended which way, for the batch's status.
#[derive(Debug, Default)]
pub(super) struct BatchTally {
    pub events: usize,
    pub taken: usize,
    pub limited: usize,
    /// Refused for a retry: the dedupe window full, a cluster's pools out of reach, or
    /// (partitions spread over nodes) the partition's owner.
    pub retry_later: usize,
    pub internal: usize,
    /// The longest wait a rate-limited customer has.
    pub retry_user: u64,
}

impl BatchTally {
    /// A batch with anything taken (or nothing in it) is a 200 with an answer per
    /// event; one with everything refused has the status that says why.
    pub fn status(&self) -> (StatusCode, Option<u64>) {
        let t = self;
        if t.taken > 0 || t.events == 0 {
            (StatusCode::OK, None)
        } else if t.limited > 0 && t.limited + t.retry_later == t.events {
            (StatusCode::TOO_MANY_REQUESTS, Some(t.retry_user.max(1)))
        } else if t.retry_later > 0 && t.retry_later == t.events {
            (StatusCode::SERVICE_UNAVAILABLE, Some(1))
        } else if t.internal > 0 {
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        } else {
            (StatusCode::BAD_REQUEST, None)
        }
    }
}

/// Every answer is JSON: an error some layer or extractor wrote as plain text is
/// wrapped as `{"error": {"code", "message"}}`, keeping its other headers.
pub(super) async fn json_errors(r: Response) -> Response {
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
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let mut out = ApiError::Plain { status, message }.into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Stopped;
    use hunt_store::LogError;

    /// Every 503 tells the client when to come back.
    #[test]
    fn every_unavailable_answer_has_retry_after() {
        let unavailable = [
            ApiError::Starting,
            ApiError::AlertsStarting,
            ApiError::Stopping("disk full".into()),
            ApiError::NotOwner(std::time::Duration::from_secs(1)),
            ApiError::Ingest(IngestError::Backlog(crate::backlog::Full {
                queued: 10,
                limit: 5,
            })),
            ApiError::Ingest(IngestError::Stopped(Stopped::Partitions)),
            ApiError::Config(ConfigError::Stopped(Stopped::Log(LogError::Closed))),
            ApiError::LogStopped("disk full".into()),
            ApiError::Plain {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "busy".into(),
            },
        ];
        for e in unavailable {
            let what = format!("{e:?}");
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
            assert_eq!(r.headers()[header::RETRY_AFTER], "1", "{what}");
        }
    }

    #[test]
    fn denied_keys_are_401_or_403() {
        assert_eq!(
            ApiError::from(Denied::Missing).status(),
            StatusCode::UNAUTHORIZED
        );
        let forbidden = Denied::Forbidden {
            name: "shop".into(),
            role: crate::auth::Role::Admin,
        };
        assert_eq!(ApiError::from(forbidden).status(), StatusCode::FORBIDDEN);
    }
}
