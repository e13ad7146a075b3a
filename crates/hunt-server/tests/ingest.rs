//! Posting events in every form; mixed batches; duplicates; queries.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_form_is_accepted_with_outcomes() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;

    // One JSON object.
    let (st, a) = s
        .post(ev(
            "e1",
            "ann",
            "product_view",
            json!({"category": "shoes"}),
        ))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["results"][0]["status"], "accepted");
    assert_eq!(kinds(&a, 0), ["step_found"]);
    assert_eq!(
        a["results"][0]["outcomes"][0]["next_clue"],
        "Read the blog."
    );

    // A JSON array.
    let (st, a) = s
        .post(json!([
            ev("e2", "bob", "product_view", json!({"category": "shoes"})),
            ev("e3", "bob", "page_view", json!({"url": "/x"}))
        ]))
        .await;
    assert_eq!((st, a["accepted"].as_u64()), (200, Some(2)), "{a}");

    // NDJSON.
    let nd = format!(
        "{}\n{}\n",
        ev("n1", "cy", "page_view", json!({"url": "/blog"})),
        ev("n2", "cy", "search", json!({"query": "egg"}))
    );
    let (st, _, a) = s.post_raw(nd, "application/x-ndjson", &[]).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (kinds(&a, 0), kinds(&a, 1)),
        (
            vec!["step_found".to_string()],
            vec!["step_found".to_string()]
        )
    );

    // CloudEvents, structured.
    let ce = json!({"specversion": "1.0", "id": "c1", "source": "/shop", "type": "product_view",
        "subject": "dee", "datacontenttype": "application/json", "data": {"category": "shoes"}});
    let (st, _, a) = s
        .post_raw(ce.to_string(), "application/cloudevents+json", &[])
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(kinds(&a, 0), ["step_found"]);

    // CloudEvents, batch.
    let batch = json!([
        {"specversion": "1.0", "id": "c2", "source": "/shop", "type": "page_view", "subject": "dee", "data": {"url": "/blog"}},
        {"specversion": "1.0", "id": "c3", "source": "/shop", "type": "search", "subject": "dee", "data": {"query": "egg"}}
    ]);
    let (st, _, a) = s
        .post_raw(batch.to_string(), "application/cloudevents-batch+json", &[])
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        kinds(&a, 1),
        ["step_found", "hunt_completed", "reward_granted"],
        "{a}"
    );
    assert_eq!(a["results"][1]["outcomes"][2]["code"], "W-1");

    // CloudEvents, binary mode: attributes in headers, `ce-subject` is the user.
    let (st, _, a) = s
        .post_raw(
            json!({"category": "shoes"}).to_string(),
            "application/json",
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "b1"),
                ("ce-source", "/shop"),
                ("ce-type", "product_view"),
                ("ce-subject", "eve"),
            ],
        )
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(kinds(&a, 0), ["step_found"]);
    let (st, u) = s.get("/v1/users/eve").await;
    assert_eq!(st, 200);
    assert_eq!(u["hunts"][0]["found"], json!(["shoes"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_keeps_the_valid_events() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let (st, a) = s
        .post(json!([
            ev("m1", "fay", "product_view", json!({"category": "shoes"})),
            {"id": "m2", "user": "fay", "type": "Not A Type"},
            {"id": "m3", "type": "page_view"},
            ev("m4", "fay", "page_view", json!({"url": "/blog"})),
        ]))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (a["accepted"].as_u64(), a["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(a["results"][1]["status"], "rejected");
    assert_eq!(a["results"][1]["field"], "type");
    assert_eq!(a["results"][2]["field"], "user");
    assert_eq!(a["results"][3]["status"], "accepted");
    let (_, u) = s.get("/v1/users/fay").await;
    assert_eq!(u["hunts"][0]["found"], json!(["shoes", "blog"]), "{u}");

    // All rejected: 400, still per event.
    let (st, a) = s.post(json!([{"id": "z", "user": "fay"}])).await;
    assert_eq!(st, 400);
    assert_eq!(a["results"][0]["field"], "type", "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_repeat_the_first_answer_and_change_nothing() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let events = three_eggs("gus");
    let (_, first) = s.post(json!(events)).await;
    assert_eq!(
        kinds(&first, 2),
        ["step_found", "hunt_completed", "reward_granted"]
    );
    // The same ids again (even with other data): duplicates with the first outcomes.
    let (st, again) = s
        .post(json!([
            events[2].clone(),
            ev("gus-1", "gus", "search", json!({"query": "egg"}))
        ]))
        .await;
    assert_eq!(st, 200);
    assert_eq!(again["duplicates"], 2, "{again}");
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(
        again["results"][0]["outcomes"],
        first["results"][2]["outcomes"]
    );
    assert_eq!(
        again["results"][1]["outcomes"],
        first["results"][0]["outcomes"]
    );
    // A duplicate inside one request.
    let (_, a) = s
        .post(json!([
            ev("h1", "hal", "page_view", json!({"url": "/blog"})),
            ev("h1", "hal", "page_view", json!({"url": "/blog"}))
        ]))
        .await;
    assert_eq!(
        (
            a["results"][0]["status"].as_str(),
            a["results"][1]["status"].as_str()
        ),
        (Some("accepted"), Some("duplicate"))
    );
    // The same id for another customer is another event.
    let (_, a) = s
        .post(ev(
            "gus-1",
            "ida",
            "product_view",
            json!({"category": "shoes"}),
        ))
        .await;
    assert_eq!(a["results"][0]["status"], "accepted");
    let (_, stats) = s.get("/v1/hunts/eggs/stats").await;
    assert_eq!(stats["rewards_granted"], 1, "{stats}");
    assert_eq!(stats["funnel"][0], json!({"step": "shoes", "found": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_show_progress_clues_hunts_and_winners() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let (st, a) = s.get("/v1/users/nobody").await;
    assert_eq!(st, 404, "{a}");
    assert_eq!(a["error"]["code"], "unknown_user");
    // Before any event, a customer may already see the hunt and its first clue.
    let (_, h) = s.get("/v1/users/nobody/hunts").await;
    assert_eq!(h["hunts"][0]["next_clue"], "Look at shoes.", "{h}");

    s.post(json!([{"id": "t1", "user": "jo", "type": "page_view", "data": {"url": "/blog"}, "traits": {"tier": "gold"}}])).await;
    let (_, u) = s.get("/v1/users/jo").await;
    assert_eq!(u["traits"], json!({"tier": "gold"}));
    assert_eq!(u["hunts"][0]["found"], json!(["blog"]));
    let (_, h) = s.get("/v1/users/jo/hunts").await;
    assert_eq!(h["hunts"][0]["found"], json!(["blog"]));
    assert_eq!(h["hunts"][0]["next_clue"], "Look at shoes.");

    for u in ["k1", "k2", "k3", "k4"] {
        s.post(json!(three_eggs(u))).await;
    }
    let (_, w) = s.get("/v1/hunts/eggs/winners?limit=2").await;
    assert_eq!(w["total"], 3, "{w}");
    assert_eq!(w["winners"].as_array().unwrap().len(), 2);
    let (_, stats) = s.get("/v1/hunts/eggs/stats").await;
    assert_eq!(stats["completions"], 4, "{stats}");
    assert_eq!(stats["rewards_granted"], 3);
    assert_eq!(stats["rewards_denied"], json!({"pool_empty": 1}));
    assert_eq!(stats["reward"]["remaining"], 0);
    assert_eq!(stats["participants"], 5);
    let (st, _) = s.get("/v1/hunts/nope/stats").await;
    assert_eq!(st, 404);
    let (st, e) = s.get("/v1/hunts/eggs/winners?limit=0").await;
    assert_eq!(st, 400, "{e}");
    let (_, hunts) = s.get("/v1/hunts").await;
    assert_eq!(hunts["hunts"][0]["id"], "eggs");
    assert_eq!(hunts["hunts"][0]["active_now"], true);

    // Metrics, health, the API description.
    let (st, m) = s.get("/metrics").await;
    assert_eq!(st, 200);
    let m = m.as_str().unwrap().to_string();
    for needle in [
        "hunt_events_accepted_total 13",
        "hunt_ack_seconds_bucket",
        "hunt_commit_batch_records_count",
        "hunt_fsync_seconds_count",
        "hunt_partition_backlog_events{partition=\"0\"} 0",
        "hunt_steps_found_total{hunt=\"eggs\",step=\"blog\"} 5",
        "hunt_completions_total{hunt=\"eggs\"} 4",
        "hunt_rewards_granted_total{hunt=\"eggs\"} 3",
        "hunt_pool_remaining{pool=\"welcome\"} 0",
    ] {
        assert!(m.contains(needle), "metrics lack `{needle}`:\n{m}");
    }
    // Each partition's events applied, for the time it needs to clear its backlog.
    let applied: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with("hunt_partition_applied_total{partition="))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(applied.len(), 4, "one per partition:\n{m}");
    assert!(applied.iter().sum::<u64>() >= 13, "{applied:?}");
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    for p in [
        "/v1/events",
        "/v1/users/{user}",
        "/v1/users/{user}/hunts",
        "/v1/hunts",
        "/v1/hunts/{id}/stats",
        "/v1/hunts/{id}/winners",
        "/v1/config",
        "/v1/dlq",
        "/v1/dlq/{id}",
        "/v1/dlq/retry",
        "/v1/dlq/drop",
        "/v1/alerts",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let (st, _) = s.get("/healthz").await;
    assert_eq!(st, 200);
    let (st, e) = s.get("/v1/nothing").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
}
