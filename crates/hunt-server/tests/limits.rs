//! Every limit, named in its answer; rate limits and the backlog bound with
//! Retry-After; refused events are not stored.

use hunt_core::ingest::Limits;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_event_limits_name_what_is_wrong() {
    let (_d, dir) = tempdir();
    let limits = Limits {
        body_bytes_max: 4096,
        events_max: 5,
        data_bytes_max: 200,
        depth_max: 3,
        string_bytes_max: 50,
    };
    let s = Server::start(
        &dir,
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;

    let big = "x".repeat(5000);
    let (st, _, e) = s.post_raw(big, "application/json", &[]).await;
    assert_eq!(st, 413, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("4096"),
        "{e}"
    );

    let six: Vec<_> = (0..6)
        .map(|i| ev(&format!("{i}"), "u", "page_view", json!({})))
        .collect();
    let (st, e) = s.post(json!(six)).await;
    assert_eq!(st, 413, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("6 events"),
        "{e}"
    );

    let (st, a) = s
        .post(json!([
            ev("d", "u", "page_view", json!({"blob": "y".repeat(45), "more": "z".repeat(45), "again": "w".repeat(45), "last": "v".repeat(45)})),
            ev("n", "u", "page_view", json!({"a": {"b": {"c": {"d": 1}}}})),
            ev("s", "u", "page_view", json!({"name": "q".repeat(60)})),
            ev(&"i".repeat(200), "u", "page_view", json!({})),
            ev("ok", "u", "page_view", json!({})),
        ]))
        .await;
    assert_eq!(st, 200, "{a}");
    let field = |i: usize| a["results"][i]["field"].as_str().unwrap_or("").to_string();
    assert_eq!(field(0), "data", "{a}");
    assert!(field(1).starts_with("data.a"), "{a}");
    assert_eq!(field(2), "data.name", "{a}");
    assert_eq!(field(3), "id", "{a}");
    assert_eq!(a["results"][4]["status"], "accepted");

    let (st, _, e) = s.post_raw("{not json", "application/json", &[]).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("malformed")),
        "{e}"
    );
    let (st, _, e) = s
        .post_raw("a=b", "application/x-www-form-urlencoded", &[])
        .await;
    assert_eq!(st, 415, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/x-ndjson")
    );
    // Nothing of the refused requests was stored.
    let (st, _) = s.get("/v1/users/u").await;
    assert_eq!(st, 200);
    let (_, m) = s.get("/metrics").await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("hunt_events_accepted_total 1\n"),
        "{m}"
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let (_d, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            // One a second: a whole second (not a third of one) before the next token,
            // so a slow machine does not refill it between the two posts below.
            rate_per_user: Some(1),
            ..Options::default()
        },
    )
    .await;
    let evs: Vec<_> = (0..5)
        .map(|i| ev(&format!("r{i}"), "busy", "page_view", json!({})))
        .collect();
    let (st, a) = s.post(json!(evs)).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (a["accepted"].as_u64(), a["rejected"].as_u64()),
        (Some(1), Some(4)),
        "{a}"
    );
    assert!(
        a["results"][4]["reason"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{a}"
    );
    // Only over-limit events: 429 with Retry-After. Another customer is not held up.
    let (st, h, _) = s
        .post_raw(
            ev("r9", "busy", "page_view", json!({})).to_string(),
            "application/json",
            &[],
        )
        .await;
    assert_eq!(st, 429);
    assert!(h.get("retry-after").is_some());
    let (st, _) = s.post(ev("o1", "calm", "page_view", json!({}))).await;
    assert_eq!(st, 200);
    s.stop().await.unwrap();

    let (_d2, dir2) = tempdir();
    let s = Server::start(
        &dir2,
        Options {
            rate_per_key: Some(4),
            ..Options::default()
        },
    )
    .await;
    let evs: Vec<_> = (0..4)
        .map(|i| ev(&format!("k{i}"), &format!("u{i}"), "page_view", json!({})))
        .collect();
    assert_eq!(s.post(json!(evs)).await.0, 200);
    let (st, h, e) = s
        .post_raw(
            ev("k9", "u9", "page_view", json!({})).to_string(),
            "application/json",
            &[],
        )
        .await;
    assert_eq!(st, 429, "{e}");
    assert!(h.get("retry-after").is_some());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{e}"
    );
    let (st, _) = s.get("/v1/users/u9").await;
    assert_eq!(st, 404, "a refused event is not stored");
    // A batch larger than the key's whole burst can never pass: 413 saying so, with no
    // Retry-After to wait on.
    let evs: Vec<_> = (0..5)
        .map(|i| ev(&format!("big{i}"), &format!("b{i}"), "page_view", json!({})))
        .collect();
    let (st, h, e) = s
        .post_raw(json!(evs).to_string(), "application/json", &[])
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (413, Some("over_key_burst")),
        "{e}"
    );
    assert!(h.get("retry-after").is_none(), "{h:?}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send at most 4 events per request"),
        "{e}"
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_backlog_and_dedupe_window_answer_503() {
    let (_d, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            backlog_events_max: 5,
            dedupe_entries_max: 8,
            partitions: 1,
            ..Options::default()
        },
    )
    .await;
    let six: Vec<_> = (0..6)
        .map(|i| ev(&format!("b{i}"), "bl", "page_view", json!({})))
        .collect();
    let (st, h, e) = s
        .post_raw(json!(six).to_string(), "application/json", &[])
        .await;
    assert_eq!(st, 503, "{e}");
    assert_eq!(e["error"]["code"], "backlog_full");
    assert_eq!(h["retry-after"], "1");
    assert_eq!(
        s.get("/v1/users/bl").await.0,
        404,
        "nothing of it was stored"
    );

    // The dedupe window holds 8 events: the 9th is refused, not applied, and the
    // first 8 are still duplicates.
    for i in 0..8 {
        assert_eq!(
            s.post(ev(&format!("w{i}"), "win", "page_view", json!({})))
                .await
                .0,
            200
        );
    }
    let (st, h, a) = s
        .post_raw(
            ev("w8", "win", "page_view", json!({})).to_string(),
            "application/json",
            &[],
        )
        .await;
    assert_eq!(st, 503, "{a}");
    assert!(h.get("retry-after").is_some());
    let (_, a) = s.post(ev("w0", "win", "page_view", json!({}))).await;
    assert_eq!(a["results"][0]["status"], "duplicate");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_half_way_gives_its_backlog_back() {
    use std::future::Future;
    use std::task::Poll;
    let (_d, dir) = tempdir();
    let mut config = hunt_server::service::EngineConfig::new(&dir);
    config.partitions = 2;
    config.backlog_events_max = 10;
    let c = config.clone();
    let (log, snaps, recovered, started) = tokio::task::spawn_blocking(move || {
        hunt_server::service::open(
            &c,
            Some(("h.yaml".into(), EGGS.into())),
            tokio::sync::watch::channel(false).0,
            &mut |_| {},
        )
    })
    .await
    .unwrap()
    .unwrap();
    let service = hunt_server::service::Service::start(config, log, snaps, recovered).unwrap();
    let batch = |round: usize| -> Vec<(usize, hunt_core::engine::Event)> {
        (0..10)
            .map(|i| {
                let e = ev(
                    &format!("d{round}-{i}"),
                    &format!("u{i}"),
                    "page_view",
                    json!({}),
                );
                (i, serde_json::from_value(e).unwrap())
            })
            .collect()
    };
    for round in 0..20 {
        // Admitted and sent to the partitions, then dropped while waiting, as when a
        // client goes away.
        let mut f = Box::pin(service.ingest(batch(round)));
        let first = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await;
        // Ready here would be a 503: the backlog still counting earlier dropped requests.
        assert!(
            first.is_pending(),
            "round {round}: refused at once, the backlog never got its events back"
        );
        drop(f);
    }
    // The backlog is free again: a full batch is admitted.
    let mut t = 0;
    while service.backlog_total() != 0 && t < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        t += 1;
    }
    assert_eq!(service.backlog_total(), 0);
    assert!(service.ingest(batch(99)).await.is_ok());
    service.shutdown().await;
    drop(started);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_taken_with_the_limit_after_inflating() {
    let (_d, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            limits: Limits {
                body_bytes_max: 64 * 1024,
                ..Limits::default()
            },
            ..Options::default()
        },
    )
    .await;
    let gz = [("content-encoding", "gzip")];
    // A real gzip body is taken.
    let events = json!([ev("g1", "gus", "page_view", json!({"url": "/blog"}))]).to_string();
    let (st, _, a) = s
        .post_raw(gzip(events.as_bytes()), "application/json", &gz)
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["accepted"], 1, "{a}");
    // A small body that inflates past the limit (a gzip bomb) is 413, though its
    // compressed size is far under it.
    let bomb = gzip(&vec![b' '; 10 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let (st, _, e) = s.post_raw(bomb, "application/json", &gz).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{e}"
    );
    // A plain body marked gzip: 400, saying so.
    let (st, _, e) = s.post_raw(events.clone(), "application/json", &gz).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("bad_body")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("gzip"),
        "{e}"
    );
    // Any other encoding: 415, naming it.
    let (st, _, e) = s
        .post_raw(events, "application/json", &[("content-encoding", "br")])
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (415, Some("unsupported_encoding")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`br`"),
        "{e}"
    );
    // Only the real one was stored.
    let (_, u) = s.get("/v1/users/gus").await;
    assert_eq!(u["user"], "gus", "{u}");
    s.stop().await.unwrap();
}
