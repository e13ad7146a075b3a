//! Failpoints, in a binary of their own (they are global to a process). Fail-stop: when
//! the log cannot sync, the request gets 503 (never 200), the server stops with an
//! error, and what was acknowledged before is there after a restart. Containment: a
//! panic while applying one event refuses that event only.

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

use common::*;
use serde_json::json;

/// Failpoints are global to the process: one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_server_and_loses_nothing_acknowledged() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// A bug while applying one event (a panic half-way through a customer's change, from
/// the failpoint `engine::apply_hunt`): that event is refused with 500 `internal` and
/// nothing of it is kept, the customer's state stays what the log says, the failure is
/// counted and alerted, other customers carry on, and a restart does not meet it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_applying_one_event_is_contained() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let user = "failpoint-ann";
    let eggs = three_eggs(user);
    let (st, a) = s.post(json!([eggs[0].clone(), eggs[1].clone()])).await;
    assert_eq!((st, a["accepted"].as_u64()), (200, Some(2)), "{a}");
    let (_, before) = s.get(&format!("/v1/users/{user}")).await;
    assert_eq!(
        before["hunts"][0]["found"],
        json!(["shoes", "blog"]),
        "{before}"
    );

    // The failpoint panics after the step is counted, before the hunt completes.
    fail::cfg("engine::apply_hunt", "return").unwrap();
    let mut last = eggs[2].clone();
    last["traits"] = json!({"tier": "gold"});
    let (st, e) = s.post(last.clone()).await;
    assert_eq!(st, 500, "{e}");
    assert_eq!(e["results"][0]["code"], "internal", "{e}");
    assert!(
        e["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("failpoint"),
        "{e}"
    );
    // A batch: the failing event is refused, the others are taken.
    let (st, a) = s
        .post(json!([
            ev("b1", "bo", "page_view", json!({"url": "/blog"})),
            last.clone()
        ]))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["results"][0]["status"], "accepted", "{a}");
    assert_eq!(a["results"][1]["code"], "internal", "{a}");
    // Other customers carry on: the whole hunt, with the first code.
    let (_, a) = s.post(json!(three_eggs("cy"))).await;
    assert_eq!(a["results"][2]["outcomes"][2]["code"], "W-1", "{a}");
    // The customer is as the log says: no find, no trait, no code from the failed event.
    let (_, now) = s.get(&format!("/v1/users/{user}")).await;
    assert_eq!(now, before, "the state changed");
    let m = s.metrics().await;
    assert!(m.contains("hunt_apply_panics_total 2"), "{m}");
    // The alerts are evaluated every second.
    let mut firing = false;
    for _ in 0..50 {
        let (_, alerts) = s.get("/v1/alerts").await;
        firing = alerts["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["alert"] == "engine_panics" && x["state"] == "firing")
        });
        if firing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(firing, "the engine_panics alert fires");
    fail::remove("engine::apply_hunt");

    // The same event again, the bug gone: it applies in full, and the code taken by the
    // failed attempt was given back (W-2 is next, not W-3).
    let (st, a) = s.post(last.clone()).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        kinds(&a, 0),
        ["step_found", "hunt_completed", "reward_granted"],
        "{a}"
    );
    assert_eq!(a["results"][0]["outcomes"][2]["code"], "W-2", "{a}");
    s.stop().await.unwrap();

    // A restart replays the log: nothing of the failed attempts is in it.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    let s = Server::start_again(&dir).await;
    let (_, u) = s.get(&format!("/v1/users/{user}")).await;
    assert_eq!(u["rewards"][0]["code"], "W-2", "{u}");
    assert_eq!(u["traits"]["tier"], "gold", "{u}");
    s.stop().await.unwrap();

    // A bug that only a replay meets: the start goes on, and the customer keeps the code
    // the recorded answer granted, so it is not handed out again.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    fail::cfg("engine::apply_hunt", "return").unwrap();
    let s = Server::start_again(&dir).await;
    fail::remove("engine::apply_hunt");
    let (_, u) = s.get(&format!("/v1/users/{user}")).await;
    assert_eq!(u["rewards"][0]["code"], "W-2", "{u}");
    let (_, a) = s.post(json!(three_eggs("dee"))).await;
    assert_eq!(a["results"][2]["outcomes"][2]["code"], "W-3", "{a}");
    s.stop().await.unwrap();
}
