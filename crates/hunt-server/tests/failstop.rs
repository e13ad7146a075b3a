//! Fail-stop: when the log cannot sync, the request gets 503 (never 200), the server
//! stops with an error, and what was acknowledged before is there after a restart.

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_server_and_loses_nothing_acknowledged() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let (st, _) = s.post(json!(three_eggs("ann"))).await;
    assert_eq!(st, 200);

    fail::cfg("log::before_sync", "return").unwrap();
    let (st, e) = s
        .post(ev("x1", "bob", "page_view", json!({"url": "/blog"})))
        .await;
    fail::remove("log::before_sync");
    assert_eq!(st, 503, "{e}");
    assert_eq!(e["error"]["code"], "log_stopped", "{e}");
    let end = s.stop().await;
    assert!(
        end.as_ref().is_err_and(|e| e.contains("log failure")),
        "the server must stop with an error: {end:?}"
    );

    let s = Server::start(&dir, Options::default()).await;
    let (_, a) = s.post(json!(three_eggs("ann"))).await;
    assert_eq!(a["duplicates"], 3, "acknowledged events survive: {a}");
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(u["rewards"][0]["code"], "W-1");
    s.stop().await.unwrap();
}
