//! Restarts: identical answers from the snapshot and from the log alone; duplicates
//! across a restart; graceful shutdown losing nothing.

use serde_json::{Value, json};

use crate::common::*;

async fn answers(s: &Server, users: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for u in users {
        out.push(s.get(&format!("/v1/users/{u}")).await.1);
        out.push(s.get(&format!("/v1/users/{u}/hunts")).await.1);
    }
    out.push(s.get("/v1/hunts/eggs/stats").await.1);
    out.push(s.get("/v1/hunts/eggs/winners").await.1);
    out.push(s.get("/v1/hunts").await.1);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_gives_identical_answers_and_remembers_duplicates() {
    let (_d, dir) = tempdir();
    let users: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let s = Server::start(&dir, Options::default()).await;
    let mut firsts = Vec::new();
    for (i, u) in users.iter().enumerate() {
        // Some customers find one egg, some two, some all three.
        let evs: Vec<Value> = three_eggs(u).into_iter().take(1 + i % 3).collect();
        let (st, a) = s.post(json!(evs)).await;
        assert_eq!(st, 200);
        firsts.push((evs, a));
    }
    let before = answers(&s, &users).await;
    s.stop().await.unwrap();

    for from_log_only in [false, true] {
        if from_log_only {
            std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        }
        // A different partition count: customers are re-routed by hash.
        let s = Server::start(
            &dir,
            Options {
                partitions: 3,
                ..Options::default()
            },
        )
        .await;
        let after = answers(&s, &users).await;
        assert_eq!(after, before, "log only: {from_log_only}");
        // Duplicates are remembered across the restart, with the first outcomes.
        for (evs, first) in firsts.iter().take(6) {
            let (_, a) = s.post(json!(evs)).await;
            assert_eq!(a["duplicates"].as_u64(), Some(evs.len() as u64), "{a}");
            for i in 0..evs.len() {
                assert_eq!(a["results"][i]["outcomes"], first["results"][i]["outcomes"]);
            }
        }
        s.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_nothing_answered() {
    let (_d, dir) = tempdir();
    let s = std::sync::Arc::new(Server::start(&dir, Options::default()).await);
    // Answers so far, over every client: the stop comes once the load is under way.
    let answered = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let s = s.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let id = format!("g{c}-{i}");
                let body = json!([ev(
                    &id,
                    &format!("gu{c}"),
                    "page_view",
                    json!({"url": "/blog"})
                )]);
                let r = s
                    .client
                    .post(format!("{}/v1/events", s.url))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.push((c, id));
                        answered.add_permits(1);
                    }
                    // Refused or cut off while stopping: it was not acknowledged.
                    Ok(_) | Err(_) => break,
                }
            }
            acked
        }));
    }
    // At least 100 answers (several rounds of every client) before the stop.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        answered.acquire_many(100),
    )
    .await
    .expect("100 answers within 60 s")
    .expect("the counter stays open")
    .forget();
    s.stop().await.expect("a graceful stop ends cleanly");
    let mut acked = Vec::new();
    for t in tasks {
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), t)
            .await
            .expect("a client still waiting 60 s after the stop");
        acked.extend(done.unwrap());
    }
    assert!(
        acked.len() > 16,
        "the clients got answers before the stop: {}",
        acked.len()
    );
    let s = Server::start(&dir, Options::default()).await;
    // Every acknowledged event is there: posting it again is a duplicate.
    for chunk in acked.chunks(200) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|(c, id)| ev(id, &format!("gu{c}"), "page_view", json!({"url": "/blog"})))
            .collect();
        let (_, a) = s.post(json!(evs)).await;
        assert_eq!(a["duplicates"].as_u64(), Some(chunk.len() as u64), "{a}");
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_taken_under_load_restore_the_same_state() {
    let (_d, dir) = tempdir();
    let opts = || Options {
        snapshot_every_events: 25,
        ..Options::default()
    };
    let s = std::sync::Arc::new(Server::start(&dir, opts()).await);
    let users: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let mut tasks = Vec::new();
    for chunk in users.chunks(5) {
        let (s, chunk) = (s.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for u in chunk {
                for e in three_eggs(&u) {
                    assert_eq!(s.post(e).await.0, 200);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Background snapshots were written while events kept coming.
    let mut snaps = 0;
    for _ in 0..100 {
        snaps = std::fs::read_dir(dir.join("snapshots")).map_or(0, |d| d.count());
        if snaps > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(snaps > 0, "no periodic snapshot was written");
    // Each partition's stop for it is measured.
    let m = s.metrics().await;
    let pauses = m
        .lines()
        .find_map(|l| l.strip_prefix("hunt_snapshot_partition_pause_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        pauses.is_some_and(|n| n >= 4),
        "one per partition: {pauses:?}"
    );
    let before = answers(&s, &users).await;
    // No clean stop: the restart starts from a periodic snapshot and the log after it.
    s.abort().await;
    let s = Server::start(&dir, opts()).await;
    assert_eq!(answers(&s, &users).await, before);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_this_build_cannot_read_is_replaced_by_the_whole_log() {
    let (_d, dir) = tempdir();
    let users: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let s = Server::start(&dir, Options::default()).await;
    for u in &users {
        assert_eq!(s.post(json!(three_eggs(u))).await.0, 200);
    }
    let before = answers(&s, &users).await;
    s.stop().await.unwrap();
    // The only snapshot is in an older format (JSON, format 1), as an older build wrote
    // it: a sound file whose payload this build does not read.
    let lsn = {
        let snaps =
            hunt_store::Snapshots::open(std::sync::Arc::new(hunt_store::fs::RealFs), &dir).unwrap();
        snaps.latest().unwrap().0.unwrap().lsn
    };
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    let snaps =
        hunt_store::Snapshots::open(std::sync::Arc::new(hunt_store::fs::RealFs), &dir).unwrap();
    let mut old = 1u32.to_le_bytes().to_vec();
    old.extend_from_slice(br#"{"format":1}"#);
    snaps.save(lsn, &old).unwrap();
    let s = Server::start(&dir, Options::default()).await;
    assert_eq!(answers(&s, &users).await, before);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_read_a_long_tail_snapshots_at_once() {
    let (_d, dir) = tempdir();
    let opts = |every| Options {
        snapshot_every_events: every,
        ..Options::default()
    };
    let users: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let s = Server::start(&dir, opts(1_000)).await;
    for u in &users {
        assert_eq!(s.post(json!(three_eggs(u))).await.0, 200);
    }
    s.abort().await;
    let count = || std::fs::read_dir(dir.join("snapshots")).map_or(0, |d| d.count());
    assert_eq!(count(), 0, "no snapshot before the restart");
    // 24 events read after no snapshot, more than the 20 between snapshots: the restart
    // snapshots without waiting for 20 more.
    let s = Server::start(&dir, opts(20)).await;
    let mut n = 0;
    for _ in 0..250 {
        n = count();
        if n > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(n, 1, "no snapshot after a start that read 24 events");
    let before = answers(&s, &users).await;
    s.abort().await;
    let s = Server::start(&dir, opts(20)).await;
    assert_eq!(answers(&s, &users).await, before);
    s.stop().await.unwrap();
}
