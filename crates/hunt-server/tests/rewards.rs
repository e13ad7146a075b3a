//! Rewards exactly once: customers racing for a small pool, per-user limits, and the
//! same grants after a restart.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::*;

/// Two hunts drawing on one pool of 10 codes; each completes with one event.
const RACE: &str = r#"
version: 1
pools:
  - id: ten
    generate: { prefix: "TEN-", count: 10, digits: 3 }
hunts:
  - id: claim
    steps: [{ id: click, on: claim }]
    reward: { pool: ten, per_user: 1 }
  - id: claim-again
    steps: [{ id: click, on: claim_again }]
    reward: { pool: ten, per_user: 1 }
"#;

fn grants(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .flat_map(|a| a["results"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["outcomes"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["kind"] == "reward_granted")
        .map(|o| o["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_customers_racing_for_ten_codes_get_exactly_ten() {
    let (_d, dir) = tempdir();
    let opts = || Options {
        hunts: Some(RACE.into()),
        partitions: 8,
        ..Options::default()
    };
    let s = std::sync::Arc::new(Server::start(&dir, opts()).await);
    // 300 customers, from 48 concurrent clients, each a request of its own.
    let mut tasks = Vec::new();
    for c in 0..48 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (c..300).step_by(48) {
                let (st, a) = s.post(ev("x", &format!("c{i}"), "claim", json!({}))).await;
                assert_eq!(st, 200, "{a}");
                out.push(a);
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let codes = grants(&answers);
    assert_eq!(codes.len(), 10, "exactly ten grants: {codes:?}");
    let unique: HashSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), 10, "each code once: {codes:?}");
    let denied = answers
        .iter()
        .filter(|a| a["results"][0]["outcomes"][2]["reason"] == "pool_empty")
        .count();
    assert_eq!(denied, 290);
    let (_, stats) = s.get("/v1/hunts/claim/stats").await;
    assert_eq!(
        (
            stats["rewards_granted"].as_u64(),
            stats["reward"]["remaining"].as_u64()
        ),
        (Some(10), Some(0)),
        "{stats}"
    );
    let (_, w) = s.get("/v1/hunts/claim/winners?limit=100").await;
    let listed: HashSet<String> = w["winners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, codes.iter().cloned().collect());

    // After a restart (from the snapshot, then from the log alone) nothing changes,
    // and no code is handed out again.
    s.stop().await.unwrap();
    let mut expected = stats;
    for from_log_only in [false, true] {
        if from_log_only {
            std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        }
        let s = Server::start(&dir, opts()).await;
        let (_, again) = s.get("/v1/hunts/claim/stats").await;
        assert_eq!(again, expected, "after restart (log only: {from_log_only})");
        // (The second time round this is a duplicate, with the same answer.)
        let (_, a) = s.post(ev("late", "newcomer", "claim", json!({}))).await;
        assert_eq!(
            a["results"][0]["outcomes"][2]["reason"], "pool_empty",
            "{a}"
        );
        expected = s.get("/v1/hunts/claim/stats").await.1;
        s.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_counts_codes_across_hunts_of_a_pool() {
    let (_d, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(RACE.into()),
            ..Options::default()
        },
    )
    .await;
    let (_, a) = s
        .post(json!([
            ev("1", "zed", "claim", json!({})),
            ev("2", "zed", "claim_again", json!({}))
        ]))
        .await;
    assert_eq!(
        a["results"][0]["outcomes"][2]["kind"], "reward_granted",
        "{a}"
    );
    assert_eq!(
        a["results"][1]["outcomes"][2]["reason"], "per_user_limit",
        "{a}"
    );
    let (_, u) = s.get("/v1/users/zed").await;
    assert_eq!(u["rewards"].as_array().unwrap().len(), 1);
}
