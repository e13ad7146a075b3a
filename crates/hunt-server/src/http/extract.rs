//! What a handler needs before it starts, as extractors: a key with a role, a server
//! that is ready, a customer id that an event could have had, a query string that fits.
//! Axum runs them in the order of the handler's arguments, so every handler checks
//! the key first, then its inputs, then readiness.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, App};
use crate::service::Service;

/// The roles, as types, for [`Authorized`].
pub mod role {
    use crate::auth::Role;

    /// A role an endpoint needs.
    pub trait Needed: Send + Sync + 'static {
        const ROLE: Role;
    }
    pub struct Ingest;
    pub struct Read;
    pub struct Admin;
    impl Needed for Ingest {
        const ROLE: Role = Role::Ingest;
    }
    impl Needed for Read {
        const ROLE: Role = Role::Read;
    }
    impl Needed for Admin {
        const ROLE: Role = Role::Admin;
    }
}

/// A request whose key has role `R`; holds the key's name (`-` in development mode).
pub struct Authorized<R> {
    pub key: String,
    role: PhantomData<R>,
}

impl<R: role::Needed> FromRequestParts<Arc<App>> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let key = app.authorize(&parts.headers, R::ROLE)?;
        Ok(Authorized {
            key,
            role: PhantomData,
        })
    }
}

/// The service, once the log is replayed and while it is writable.
pub struct Ready(pub Arc<Service>);

impl FromRequestParts<Arc<App>> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        app.ready().cloned().map(Ready)
    }
}

/// The `{user}` of a path: a customer id some event could have had.
pub struct Customer(pub String);

impl FromRequestParts<Arc<App>> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Path(user) = Path::<String>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::Plain {
                status: e.status(),
                message: e.body_text(),
            })?;
        hunt_core::ids::check_customer(&user)?;
        Ok(Customer(user))
    }
}

/// A query string that fits `T`, or `bad_query`.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<App>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::BadQuery(query_problem(&e.body_text())))?;
        Ok(Params(q))
    }
}

/// What is wrong with a query string, without the framework's own words in front
/// ("Failed to deserialize query string: …").
fn query_problem(text: &str) -> String {
    text.strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text)
        .trim()
        .to_string()
}

/// A query's `limit`: `default` when absent, else a whole number from 1 to `max`.
/// Taken as text, so that `-1` or `ten` get the same `bad_limit` as `0`.
pub fn limit(given: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(text) = given else {
        return Ok(default);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::BadLimit {
            max,
            got: text.to_string(),
        }),
    }
}

/// Reads a whole request body: at most `limit` bytes, within `timeout`. Too large
/// (declared or read) is 413; too slow is 408; cut short or badly framed (a broken chunk, a connection
/// closed early) is 400.
pub async fn body_bytes(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    what: &'static str,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    // A client that sent `Expect: 100-continue` waits before it sends the body: a
    // declared length over the limit is refused before it is told to go on. (A client
    // already sending is read up to the limit instead: refusing it at once would close
    // the connection under its body, and it would likely see a reset, not the 413.)
    let waits = headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits && axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::BodyTooLarge { what, limit });
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::BodyTimeout {
            what,
            secs: timeout.as_secs().max(1),
        }),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cur {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::BodyTooLarge { what, limit });
                }
                cur = err.source();
            }
            Err(ApiError::BrokenBody {
                what,
                why: e.to_string(),
            })
        }
    }
}

/// A body as sent, decoded by its `Content-Encoding`: none (or `identity`) as is,
/// `gzip` inflated up to `limit` bytes, which bounds the decompressed size, not only
/// the compressed one. Any other encoding is 415; gzip that does not inflate is 400.
pub fn decoded_body(
    headers: &axum::http::HeaderMap,
    bytes: axum::body::Bytes,
    what: &'static str,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let encoding = headers.get(axum::http::header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(bytes),
        Some("gzip") | Some("x-gzip") => {
            use std::io::Read;
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
            let mut inflating = flate2::read::GzDecoder::new(&bytes[..]).take(limit as u64 + 1);
            inflating
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BrokenBody {
                    what,
                    why: format!("it is marked gzip but does not inflate ({e})"),
                })?;
            if out.len() > limit {
                return Err(ApiError::BodyTooLarge { what, limit });
            }
            Ok(out.into())
        }
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}
