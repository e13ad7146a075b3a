//! Requests that reach a standby are answered by the owner, over NATS request-reply
//! (docs/cluster.md), so that a client may send to any node's address.
//!
//! - A standby listens at once. It answers `/healthz`, `/readyz` (503 `standby`: it
//!   cannot answer by itself) and `/metrics` itself, and sends every other request to
//!   the subject `hunt.<name>.forward`: the method and the URI in the headers
//!   `Hunt-Method` and `Hunt-Uri`, the request's own headers beside them, the body as
//!   the payload.
//! - The owner listens on that subject and hands each request to its own routes, as if
//!   it had come over its listener: the same keys, limits and answers. The reply holds
//!   the status in `Hunt-Status`, the answer's headers, and the body.
//! - No owner (a takeover under way) is a 503 `no_owner` with `Retry-After`; an owner
//!   that does not answer in time, a 504 `owner_timeout`. Retrying with the same event
//!   ids is safe: an event already taken is answered `duplicate` with its first answer.
//!
//! All partitions have one owner until the scale-out work; the subject then becomes one
//! per node, chosen by the partitions a request touches.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use axum::body::{Body, to_bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use axum::routing::get;
use futures_util::StreamExt;
use tower::ServiceExt;

const METHOD: &str = "Hunt-Method";
const URI: &str = "Hunt-Uri";
const STATUS: &str = "Hunt-Status";
/// How long a standby waits for the owner's answer: above the log's ack timeout, so
/// that an answer delayed by a NATS server's loss still comes back.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Room for the headers in a message beside the body.
const HEADER_ROOM: usize = 16 << 10;

/// Headers that belong to one hop, not to the request.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "proxy-connection"
            | "content-length"
            | "host"
    )
}

/// Roughly what `headers` take in a NATS message.
fn header_bytes(headers: &HeaderMap) -> usize {
    16 + headers
        .iter()
        .map(|(n, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(n).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
}

/// Whether reading a body failed on its length limit (not on the connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An HTTP message's headers as NATS headers (one hop's own left out), after `first`.
fn to_nats(first: &[(&str, &str)], headers: &axum::http::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in first {
        out.insert(*name, *value);
    }
    for (name, value) in headers {
        if hop_by_hop(name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.append(name.as_str(), v);
        }
    }
    out
}

/// NATS headers as HTTP headers, the engine's own (`skip`) and one hop's left out.
fn from_nats<'a>(
    h: &'a HeaderMap,
    skip: &'a [&str],
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
    h.iter()
        .filter(|(name, _)| {
            let name: &str = name.as_ref();
            !skip.iter().any(|s| name.eq_ignore_ascii_case(s))
                && !hop_by_hop(&name.to_ascii_lowercase())
        })
        .filter_map(|(name, values)| {
            let name = HeaderName::from_bytes(AsRef::<str>::as_ref(name).as_bytes()).ok()?;
            Some((name, values))
        })
        .flat_map(|(name, values)| {
            values
                .iter()
                .filter_map(move |v| Some((name.clone(), HeaderValue::from_str(v.as_str()).ok()?)))
        })
}

/// The owner's error reply to a forwarded request: its status and JSON body.
fn error_reply(status: &str, code: &str, message: &str) -> (HeaderMap, Vec<u8>) {
    let mut h = HeaderMap::new();
    h.insert(STATUS, status);
    h.insert("Content-Type", "application/json");
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (h, format!("{body}\n").into_bytes())
}

/// A JSON error answer, as the API writes them.
fn error(status: StatusCode, code: &str, message: &str, retry: bool) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if retry {
        r = r.header(header::RETRY_AFTER, "1");
    }
    r.body(Body::from(format!("{body}\n")))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The standby's side: sends `req` to the owner and gives back its answer.
pub async fn to_owner(
    client: &Client,
    subject: &str,
    body_max: usize,
    mut taking_over: tokio::sync::watch::Receiver<bool>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let max = client.server_info().max_payload;
    let limit = body_max.min(max.saturating_sub(HEADER_ROOM));
    let body = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!(
                    "this node is a standby and forwards bodies of up to {limit} bytes to the owner; send this one to the owner's address"
                ),
                false,
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                &format!("the request's body could not be read: {e}"),
                false,
            );
        }
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let headers = to_nats(
        &[(METHOD, parts.method.as_str()), (URI, uri)],
        &parts.headers,
    );
    if header_bytes(&headers) + body.len() > max {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!(
                "this node is a standby, and the request's headers and body do not fit in one NATS message ({max} bytes); send it to the owner's address"
            ),
            false,
        );
    }
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body)
        .timeout(Some(FORWARD_TIMEOUT));
    // An owner killed while it held the request never answers: once this node takes
    // the partitions over, the request is given back at once to be sent again.
    let sent = tokio::select! {
        r = client.send_request(subject.to_string(), request) => r,
        _ = taking_over.wait_for(|t| *t) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_owner",
                "the owner was lost while it held this request, and this node is taking the partitions over; retry with the same event ids",
                true,
            );
        }
    };
    let reply = match sent {
        Ok(m) => m,
        Err(e) => {
            use async_nats::client::RequestErrorKind as K;
            return match e.kind() {
                K::NoResponders => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_owner",
                    "no node owns the partitions right now (a takeover is under way); retry shortly",
                    true,
                ),
                K::TimedOut => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "owner_timeout",
                    &format!(
                        "the owner did not answer within {FORWARD_TIMEOUT:?}; retry with the same event ids"
                    ),
                    true,
                ),
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_owner",
                    &format!("the request could not be sent to the owner: {e}; retry shortly"),
                    true,
                ),
            };
        }
    };
    let Some(h) = reply.headers.as_ref() else {
        return error(
            StatusCode::BAD_GATEWAY,
            "bad_owner_answer",
            "the owner's answer had no status",
            true,
        );
    };
    let status = h
        .get(STATUS)
        .and_then(|s| s.as_str().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return error(
            StatusCode::BAD_GATEWAY,
            "bad_owner_answer",
            "the owner's answer had no valid status",
            true,
        );
    };
    let mut out = Response::builder().status(status);
    for (name, value) in from_nats(h, &[STATUS]) {
        out = out.header(name, value);
    }
    out.body(Body::from(reply.payload))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The owner's side: answers every forwarded request with `routes`, until the
/// subscription ends. Each request is answered on a task of its own.
pub async fn serve_forwarded(
    client: Client,
    subject: String,
    routes: axum::Router,
    counted: std::sync::Arc<hunt_cluster::ClusterMetrics>,
) -> Result<(), async_nats::SubscribeError> {
    // One queue group: a request goes to one subscriber only, even while a deposed
    // owner that was paused has not stopped yet (it answers 503 and runs nothing, and
    // the request is not run twice).
    let mut sub = client.queue_subscribe(subject, "owner".to_string()).await?;
    // The requests being answered: dropped (aborted) with this task, so that nothing
    // keeps the routes, and through them the log, after the stop.
    let mut running = tokio::task::JoinSet::new();
    while let Some(msg) = sub.next().await {
        while running.try_join_next().is_some() {}
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        counted
            .forwarded_answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (client, routes) = (client.clone(), routes.clone());
        running.spawn(async move {
            let t = Instant::now();
            let (mut headers, mut body) = answer(routes, msg).await;
            let max = client.server_info().max_payload;
            if body.len() + header_bytes(&headers) > max {
                let status = headers
                    .get(STATUS)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                (headers, body) = error_reply(
                    "502",
                    "too_large_to_forward",
                    &format!(
                        "the owner's answer ({status}, {} bytes) is larger than a NATS message ({max} bytes); ask the owner's address, or ask for less (limit)",
                        body.len()
                    ),
                );
            }
            if let Err(e) = client
                .publish_with_headers(reply.clone(), headers, body.into())
                .await
            {
                tracing::warn!(error = %e, ms = t.elapsed().as_millis() as u64, "a forwarded request's answer was not sent");
                // The standby must not wait for nothing: a short answer saying why.
                let (h, body) = error_reply(
                    "502",
                    "bad_owner_answer",
                    &format!(
                        "the owner's answer could not be sent back over NATS ({e}); ask the owner's address"
                    ),
                );
                let _ = client.publish_with_headers(reply, h, body.into()).await;
            }
        });
    }
    Ok(())
}

/// Runs one forwarded request through `routes`.
async fn answer(routes: axum::Router, msg: async_nats::Message) -> (HeaderMap, Vec<u8>) {
    let bad = |why: &str| error_reply("400", "bad_forward", why);
    let Some(h) = msg.headers.as_ref() else {
        return bad("a forwarded request without headers");
    };
    let method = h
        .get(METHOD)
        .and_then(|m| Method::from_bytes(m.as_str().as_bytes()).ok());
    let uri = h.get(URI).and_then(|u| u.as_str().parse::<Uri>().ok());
    let (Some(method), Some(uri)) = (method, uri) else {
        return bad("a forwarded request without a valid method and URI");
    };
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in from_nats(h, &[METHOD, URI]) {
        req = req.header(name, value);
    }
    let req = match req.body(Body::from(msg.payload)) {
        Ok(r) => r,
        Err(e) => return bad(&format!("a forwarded request that is not valid HTTP: {e}")),
    };
    let resp = match routes.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (
        to_nats(&[(STATUS, parts.status.as_str())], &parts.headers),
        body,
    )
}

/// A standby's HTTP server, forwarding to the owner until stopped.
pub struct Standby {
    taking_over: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How long a standby's server gets to finish the requests in flight when the node
/// takes the partitions over.
const STANDBY_STOP_WAIT: Duration = Duration::from_secs(5);

impl Standby {
    /// Serves on `listener` (a clone of the node's listener, which the node's own
    /// server takes over afterwards).
    pub fn start(
        listener: tokio::net::TcpListener,
        client: Client,
        subject: String,
        body_max: usize,
    ) -> Standby {
        let (taking_over, _) = tokio::sync::watch::channel(false);
        let routes = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(|| async {
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "standby",
                        "this node is a standby: it forwards requests to the owner, and answers by itself once it owns the partitions",
                        true,
                    )
                }),
            )
            .route(
                "/metrics",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        "# HELP hunt_cluster_standby 1 while this node is a standby, forwarding requests to the owner.\n\
                         # TYPE hunt_cluster_standby gauge\nhunt_cluster_standby 1\n",
                    )
                }),
            )
            .fallback({
                let taking_over = taking_over.subscribe();
                move |req: Request<Body>| {
                    let (client, subject) = (client.clone(), subject.clone());
                    let taking_over = taking_over.clone();
                    async move { to_owner(&client, &subject, body_max, taking_over, req).await }
                }
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Standby {
            taking_over,
            stop,
            task,
        }
    }

    /// Stops taking connections, gives back the requests waiting for the owner's
    /// answer (503, to be sent again) and finishes the others (for a while).
    pub async fn stop(self) {
        self.taking_over.send_replace(true);
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STANDBY_STOP_WAIT, self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
