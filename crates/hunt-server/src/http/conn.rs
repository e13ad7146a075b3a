//! Connections: accepted up to a cap, each bounded in time, and the process's file
//! descriptors watched (docs/serve.md, "Connections").
//!
//! - **A cap on open connections.** Past it, a new connection gets a 503 JSON answer
//!   (`too_many_connections`, `Retry-After: 1`) and is closed, so that a flood of idle
//!   sockets cannot hold every descriptor before any key is checked.
//! - **A header timeout.** A request's headers must arrive within it, and a kept-alive
//!   connection waiting for its next request is closed after it: hyper's header-read
//!   timer runs from the moment the connection waits for a request, so the one setting
//!   bounds both a slow sender of headers and an idle keep-alive connection.
//! - **A body timeout** is applied where bodies are read (`read_body`): the whole body
//!   must arrive within it, or the answer is 408 `body_timeout`.
//! - **hyper's own answers are JSON too.** A request hyper cannot parse (a malformed
//!   request line or header, an unknown HTTP version) is answered by hyper itself, with
//!   an empty body, before any handler runs. [`Answering`] sits between hyper and the
//!   socket and puts a JSON error with a code in place of such an answer.
//! - **File descriptors** are counted every few seconds; past four fifths of the limit a
//!   warning is logged, and both figures are on `/metrics`. An accept that fails (the
//!   limit reached) is logged and counted, never silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Time for a request's headers, and for a kept-alive connection's next request.
pub const HEADER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);
/// Time for a whole request body.
pub const BODY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Open connections at most.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
/// Descriptors kept for everything but connections (the log, snapshots, webhooks,
/// NATS) when the connection cap is fitted under the process's limit.
pub const FDS_RESERVED: u64 = 256;
/// Header fields hyper parses before it answers 431 itself (with no body): above
/// `http::HEADERS_MAX`, so that the router's JSON 431 is what a client meets.
pub const HYPER_HEADERS_MAX: usize = 400;
/// How often the open descriptors are counted.
const FD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub connections_max: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: HEADER_TIMEOUT_DEFAULT,
            body_timeout: BODY_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// What the connection layer counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    /// The cap in force (after fitting it under the descriptor limit).
    pub cap: AtomicU64,
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Turned away with a 503 because the cap was reached.
    pub refused: AtomicU64,
    /// Accepts that failed (most often: no descriptor left).
    pub accept_errors: AtomicU64,
    pub fds_open: AtomicU64,
    pub fds_max: AtomicU64,
}

impl ConnMetrics {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let connections_max = g(&self.cap);
        let _ = write!(
            out,
            "# HELP hunt_http_connections_open Connections open now.\n# TYPE hunt_http_connections_open gauge\nhunt_http_connections_open {}\n\
             # HELP hunt_http_connections_max Connections allowed at once (--max-connections).\n# TYPE hunt_http_connections_max gauge\nhunt_http_connections_max {connections_max}\n\
             # HELP hunt_http_connections_accepted_total Connections accepted.\n# TYPE hunt_http_connections_accepted_total counter\nhunt_http_connections_accepted_total {}\n\
             # HELP hunt_http_connections_refused_total Connections turned away with a 503 because the cap was reached.\n# TYPE hunt_http_connections_refused_total counter\nhunt_http_connections_refused_total {}\n\
             # HELP hunt_http_accept_errors_total Accepts that failed (most often: no file descriptor left).\n# TYPE hunt_http_accept_errors_total counter\nhunt_http_accept_errors_total {}\n\
             # HELP hunt_process_open_fds File descriptors open, counted every few seconds.\n# TYPE hunt_process_open_fds gauge\nhunt_process_open_fds {}\n\
             # HELP hunt_process_max_fds The process's limit on open file descriptors.\n# TYPE hunt_process_max_fds gauge\nhunt_process_max_fds {}\n",
            g(&self.open),
            g(&self.accepted),
            g(&self.refused),
            g(&self.accept_errors),
            g(&self.fds_open),
            g(&self.fds_max),
        );
    }
}

/// The process's soft limit on open descriptors (`None`: unknown).
pub fn fd_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Descriptors open now (`None`: not countable here). Counting needs a descriptor of
/// its own: when none is left, every one is open, and the limit is the count.
pub fn fds_open() -> Option<u64> {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => Some(d.count() as u64),
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => fd_limit(),
        Err(_) => None,
    }
}

/// The connection cap fitted under the descriptor limit: at most the limit less
/// [`FDS_RESERVED`]. Says so when it lowers the cap.
pub fn fit_cap(asked: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(l) if (asked as u64).saturating_add(FDS_RESERVED) > l => {
            let fitted = l.saturating_sub(FDS_RESERVED).max(16) as usize;
            tracing::warn!(
                asked,
                fitted,
                fd_limit = l,
                "--max-connections is over what the file-descriptor limit allows with room for the log and webhooks: lowered (raise `ulimit -n` to allow more)"
            );
            fitted
        }
        _ => asked,
    }
}

/// Counts the descriptors every few seconds; warns once when four fifths of the limit
/// are open, and again each time it goes back under and over.
pub async fn watch_fds(metrics: Arc<ConnMetrics>) {
    let mut warned = false;
    loop {
        let limit = fd_limit().unwrap_or(0);
        let open = fds_open().unwrap_or(0);
        metrics.fds_max.store(limit, Ordering::Relaxed);
        metrics.fds_open.store(open, Ordering::Relaxed);
        let near = limit > 0 && open * 5 >= limit * 4;
        if near && !warned {
            tracing::warn!(
                open,
                limit,
                "file descriptors near the limit: new connections and log segments may soon fail (raise `ulimit -n`, or lower --max-connections)"
            );
        }
        warned = near;
        tokio::time::sleep(FD_CHECK_EVERY).await;
    }
}

/// A complete HTTP/1.1 error answer that closes the connection: `status` is the status
/// line's code and reason ("503 Service Unavailable"), `extra` more header lines.
fn raw_answer(status: &str, code: &'static str, message: &str, extra: &str) -> Vec<u8> {
    let body = super::error::ErrorBody {
        error: super::error::ErrorInfo {
            code,
            message: message.to_string(),
            details: None,
        },
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a connection over the cap: a complete HTTP/1.1 response, then close.
fn refusal(max: usize) -> Vec<u8> {
    raw_answer(
        "503 Service Unavailable",
        "too_many_connections",
        &format!("the server has its {max} connections open; try again in a moment"),
        "retry-after: 1\r\n",
    )
}

/// The JSON answer to put in place of `head`, when it is one hyper wrote itself for a
/// request it could not parse: an error status, no body, no content type, and the
/// connection closing. The handlers' answers always carry a content type and the
/// request's id, which hyper's own never do.
fn in_place_of(head: &[u8]) -> Option<Vec<u8>> {
    // Most writes are the handlers' heads and bodies: told apart at once.
    if head.len() > 512 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let status = rest.get(..3)?;
    // Answers that succeed (nearly all) are let through before anything is allocated.
    if !(status.starts_with('4') || status.starts_with('5')) {
        return None;
    }
    let lines = rest.strip_suffix("\r\n\r\n")?.to_ascii_lowercase();
    let hyper_own = lines.contains("\r\ncontent-length: 0")
        && lines.contains("\r\nconnection: close")
        && !lines.contains("\r\ncontent-type:")
        && !lines.contains("\r\nx-request-id:");
    if !hyper_own {
        return None;
    }
    let (line, code, message) = match status {
        "414" => (
            "414 URI Too Long",
            "uri_too_long",
            "the request target is longer than the server reads",
        ),
        "431" => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request's headers are more than the server reads",
        ),
        _ => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1: its request line or a header could not be read",
        ),
    };
    Some(raw_answer(line, code, message, ""))
}

/// The socket as hyper sees it: reads pass through; an answer hyper writes itself for
/// a request it could not parse is replaced by a JSON one ([`in_place_of`]).
struct Answering<T> {
    io: T,
    /// A replacement being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T: tokio::io::AsyncWrite + Unpin> Answering<T> {
    /// Writes out the replacement, if any; ready once it is all written.
    fn drain(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            match std::pin::Pin::new(&mut self.io).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written when it is an answer to replace.
    fn replaced(&mut self, buf: &[u8]) -> bool {
        match in_place_of(buf) {
            Some(answer) => {
                self.pending = Some((answer, 0));
                true
            }
            None => false,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Answering<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Answering<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if self.replaced(buf) {
            let _ = self.drain(cx)?;
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && first.len() == total
            && self.replaced(first)
        {
            let _ = self.drain(cx)?;
            return std::task::Poll::Ready(Ok(total));
        }
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `routes` on `listener` until `stop` turns true, then lets the connections
/// finish what they are answering (as `axum::serve`'s graceful shutdown does).
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    limits: ConnLimits,
    metrics: Arc<ConnMetrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    metrics
        .cap
        .store(limits.connections_max as u64, Ordering::Relaxed);
    let mut conns = tokio::task::JoinSet::new();
    let mut said_accept_error = false;
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            a = listener.accept() => a,
            // Reap finished connections as they end.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (socket, _peer) = match accepted {
            Ok(a) => {
                said_accept_error = false;
                a
            }
            Err(e) => {
                metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                if !said_accept_error {
                    tracing::error!(error = %e, open = fds_open().unwrap_or(0), limit = fd_limit().unwrap_or(0), "cannot accept a connection");
                    said_accept_error = true;
                }
                // No descriptor now: waiting lets some close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.refused.fetch_add(1, Ordering::Relaxed);
            let answer = refusal(limits.connections_max);
            conns.spawn(async move {
                let mut socket = socket;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), socket.write_all(&answer)).await;
                let _ = socket.shutdown().await;
            });
            continue;
        };
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        metrics.open.fetch_add(1, Ordering::Relaxed);
        let routes = routes.clone();
        let metrics = metrics.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    routes.clone().oneshot(req.map(axum::body::Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_headers(HYPER_HEADERS_MAX)
                .keep_alive(true);
            let io = Answering {
                io: socket,
                pending: None,
            };
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            metrics.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_fitted_under_the_descriptor_limit() {
        assert_eq!(fit_cap(4096, None), 4096);
        assert_eq!(fit_cap(4096, Some(1_048_576)), 4096);
        assert_eq!(fit_cap(4096, Some(1024)), 1024 - FDS_RESERVED as usize);
        assert_eq!(fit_cap(4096, Some(100)), 16, "never below 16");
    }

    #[test]
    fn only_hypers_own_empty_error_answers_are_replaced() {
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 16:01:08 GMT\r\n\r\n";
        let text = String::from_utf8(in_place_of(hyper_400).unwrap()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        // The handlers' answers, and anything with a body, stay as they are.
        for kept in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nx-request-id: 5df5d4-1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"{\"id\":\"HTTP/1.1 400\"}",
        ] {
            assert_eq!(in_place_of(kept), None, "{}", String::from_utf8_lossy(kept));
        }
    }

    #[test]
    fn a_refusal_is_a_whole_json_answer() {
        let text = String::from_utf8(refusal(7)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
