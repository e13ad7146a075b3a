//! A cluster's pools through the escrow (ADR 0012), without NATS: the server with its
//! pools behind an in-memory escrow that keeps the same accounts as the pools bucket
//! (`hunt_cluster::Account`), shared by every "node" of a test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hunt_server::escrow::{AccountRef, BoxFuture, EscrowBackend, EscrowFailure, UsedIdx};
use parking_lot::Mutex;
use serde_json::json;

use crate::common::*;
use crate::memory_escrow::*;

/// One hunt of one step, rewarded from `gold`, whose codes are `codes`.
fn one_step(codes: &str, cap: Option<u64>) -> String {
    let cap = cap.map_or(String::new(), |c| format!("\n    max_winners: {c}"));
    format!(
        r#"
version: 1
pools:
  - id: gold
    {codes}
hunts:
  - id: dash
    steps: [{{ id: buy, on: purchase }}]
    reward: {{ pool: gold, per_user: 1 }}{cap}
"#
    )
}

async fn start(dir: &std::path::Path, hunts: Option<String>, escrow: Arc<MemoryEscrow>) -> Server {
    Server::start(
        dir,
        Options {
            hunts,
            partitions: 8,
            apply_hunts: false,
            escrow: Some(escrow),
            ..Options::default()
        },
    )
    .await
}

/// Every customer of `users` posts a purchase at once, each answer refused for a
/// retry posted again (and a duplicate sent beside it); the codes granted, by customer.
async fn race(s: &Arc<Server>, users: impl Iterator<Item = String>) -> BTreeMap<String, String> {
    let mut tasks = Vec::new();
    for u in users {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let event = ev(&format!("{u}-buy"), &u, "purchase", json!({}));
            loop {
                let (st, a) = s.post(json!([event.clone(), event.clone()])).await;
                assert!(st == 200 || st == 503, "{st} {a}");
                let first = &a["results"][0];
                if first["status"] == "rejected" {
                    assert_eq!(first["code"], "pools_unavailable", "{a}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                assert_eq!(a["results"][1]["status"], "duplicate", "{a}");
                assert_eq!(
                    a["results"][0]["outcomes"], a["results"][1]["outcomes"],
                    "a duplicate gets the first answer"
                );
                let code = first["outcomes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["kind"] == "reward_granted")
                    .map(|o| o["code"].as_str().unwrap().to_string());
                return (u, code);
            }
        }));
    }
    let mut won = BTreeMap::new();
    for t in tasks {
        if let (u, Some(code)) = t.await.unwrap() {
            won.insert(u, code);
        }
    }
    won
}

/// Each code once: the codes of `won`, sorted, with no repeat.
fn codes_once(won: &BTreeMap<String, String>) -> Vec<String> {
    let codes: Vec<String> = won.values().cloned().collect();
    let set: BTreeSet<&String> = codes.iter().collect();
    assert_eq!(set.len(), codes.len(), "a code granted twice: {won:?}");
    set.into_iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_seven_is_granted_once_across_eight_partitions_from_the_escrow() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let hunts = one_step(r#"generate: { prefix: "G-", count: 7 }"#, None);
    let s = Arc::new(start(&dir, Some(hunts), MemoryEscrow::node(&bucket, 1, 8)).await);
    let won = race(&s, (0..300).map(|i| format!("c{i}"))).await;
    let codes = codes_once(&won);
    assert_eq!(codes.len(), 7, "every code of the pool granted: {won:?}");
    let (_, gold) = bucket.account("code.gold.v1-");
    gold.check().unwrap();
    assert_eq!(gold.cursor, 7);
    // Blocks of one, as 7 codes over 8 partitions is less than one each: codes held
    // by partitions nobody asked on came back to those that asked.
    let (_, stats) = s.get("/v1/hunts/dash/stats").await;
    assert_eq!(stats["rewards_granted"], 7, "{stats}");
    assert_eq!(stats["rewards_denied"]["pool_empty"], 293, "{stats}");
    assert_eq!(
        stats["reward"]["remaining"], 0,
        "the pools' figures count the escrow's grants: {stats}"
    );
    // A spent pool is known as spent: more customers are denied at once, also once
    // the short wait after an empty answer is over.
    until_quiet(&s, &bucket, "c").await;
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_claims_the_blocks_and_grants_no_code_twice() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let hunts = one_step(r#"generate: { prefix: "G-", count: 100 }"#, Some(90));
    let first = MemoryEscrow::node(&bucket, 1, 8);
    let a = Arc::new(start(&dir, Some(hunts), first.clone()).await);
    let mut won = race(&a, (0..40).map(|i| format!("a{i}"))).await;
    assert_eq!(won.len(), 40);
    // The owner dies: its blocks, partly used, stay with its partitions.
    a.abort().await;
    drop(a);
    let held: u64 = bucket
        .account("code.gold.v1-")
        .1
        .held
        .values()
        .map(|h| hunt_cluster::escrow::count(&h.spans))
        .sum();
    assert!(held > 0, "the dead owner's partitions still hold codes");
    let b = Arc::new(start(&dir, None, MemoryEscrow::node(&bucket, 2, 8)).await);
    // A repeat of a customer who won on the first owner gets the first answer.
    let again = race(&b, std::iter::once("a0".to_string())).await;
    assert_eq!(again["a0"], won["a0"]);
    won.extend(race(&b, (0..80).map(|i| format!("b{i}"))).await);
    let codes = codes_once(&won);
    assert_eq!(codes.len(), 90, "the winner cap, not more: {}", codes.len());
    // The deposed owner can no longer change what the new one claimed.
    let acct = AccountRef {
        key: bucket.account("code.gold.v1-").0,
        id: "gold".into(),
        size: 100,
    };
    let stale = bucket
        .account("code.gold.v1-")
        .1
        .held
        .iter()
        .find(|(_, h)| !h.spans.is_empty())
        .map(|(p, h)| (*p, h.spans.clone()));
    if let Some((p, spans)) = stale {
        let err = first
            .give_back(&acct, p, UsedIdx::Count(0), &spans)
            .await
            .unwrap_err();
        assert!(matches!(err, EscrowFailure::Fenced(_)), "{err}");
    }
    for acc in bucket.accounts.lock().values() {
        acc.check().unwrap();
    }
    // The cap is spent: the codes and slots the new owner found granted in its
    // blocks were told to the bucket, so nothing counts as held elsewhere, and more
    // customers are denied at once. Finding that out takes each partition a few
    // operations, more if the machine is slow (a partition told "wait" asks again
    // after `DRY_FOR`); once found, the partitions ask the bucket no more.
    until_quiet(&b, &bucket, "z").await;
    b.stop().await.unwrap();
}

/// Rounds of 200 new customers denied (prefix `tag`), each after the short wait
/// that follows an empty answer, until one asks the bucket nothing: a spent account
/// is known as spent by every partition. Finding it out costs each partition a
/// refill or two, more on a slow machine (a partition told to wait while another
/// still holds slots asks again after `DRY_FOR`). Gives each round's operations.
async fn until_quiet(s: &Arc<Server>, bucket: &Bucket, tag: &str) -> Vec<u64> {
    let mut rounds = Vec::new();
    for round in 0..4 {
        tokio::time::sleep(hunt_server::escrow::DRY_FOR + Duration::from_millis(200)).await;
        let before = bucket.ops.load(Ordering::Relaxed);
        let won = race(s, (0..200).map(|i| format!("{tag}{round}-{i}"))).await;
        assert!(won.is_empty(), "{won:?}");
        rounds.push(bucket.ops.load(Ordering::Relaxed) - before);
        if rounds.last() == Some(&0) {
            return rounds;
        }
    }
    panic!("bucket operations in each round of denied customers: {rounds:?}");
}

fn granted(won: &BTreeMap<String, String>) -> Vec<&str> {
    won.values().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_grows_keeps_its_account_and_one_reordered_starts_a_seeded_one() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let s = Arc::new(
        start(
            &dir,
            Some(one_step("codes: [A, B, C, D]", None)),
            MemoryEscrow::node(&bucket, 1, 8),
        )
        .await,
    );
    let mut won = race(&s, (0..3).map(|i| format!("a{i}"))).await;
    assert_eq!(won.len(), 3);

    // Codes appended: the same account, its size raised at the next refill.
    let (st, v) = s
        .put_config(&one_step("codes: [A, B, C, D, E, F]", None))
        .await;
    assert_eq!(st, 200, "{v}");
    won.extend(race(&s, (0..3).map(|i| format!("b{i}"))).await);
    assert_eq!(won.len(), 6, "{won:?}");
    let keys: Vec<String> = bucket.accounts.lock().keys().cloned().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(bucket.account("code.gold.v1-").1.size, 6);
    let _ = codes_once(&won);

    // The codes reordered (every granted one kept) and three new: a new account,
    // seeded with the codes customers hold, so none of them is handed out again.
    let (st, v) = s
        .put_config(&one_step("codes: [F, E, X, D, C, B, A, Y, Z]", None))
        .await;
    assert_eq!(st, 200, "{v}");
    won.extend(race(&s, (0..10).map(|i| format!("c{i}"))).await);
    let codes = codes_once(&won);
    assert_eq!(
        codes,
        vec!["A", "B", "C", "D", "E", "F", "X", "Y", "Z"],
        "{:?}",
        granted(&won)
    );
    let accounts = bucket.accounts.lock().clone();
    assert_eq!(accounts.len(), 2, "{:?}", accounts.keys());
    let seeded: u64 = bucket
        .account("code.gold.v3-")
        .1
        .held
        .values()
        .map(|h| h.used)
        .sum();
    assert!(seeded >= 6, "the six codes held when it started: {seeded}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_cap_starts_a_slots_account_seeded_with_the_wins() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let codes = r#"generate: { prefix: "G-", count: 50 }"#;
    let s = Arc::new(
        start(
            &dir,
            Some(one_step(codes, Some(20))),
            MemoryEscrow::node(&bucket, 1, 8),
        )
        .await,
    );
    let mut won = race(&s, (0..12).map(|i| format!("a{i}"))).await;
    assert_eq!(won.len(), 12);
    let (st, v) = s.put_config(&one_step(codes, Some(15))).await;
    assert_eq!(st, 200, "{v}");
    won.extend(race(&s, (0..10).map(|i| format!("b{i}"))).await);
    assert_eq!(won.len(), 15, "12 wins counted against the new cap of 15");
    let _ = codes_once(&won);
    let (_, stats) = s.get("/v1/hunts/dash/stats").await;
    assert_eq!(stats["rewards_denied"]["winners_cap"], 7, "{stats}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("hunt_events_rejected_total{reason=\"pools_unavailable\"} 0"),
        "{metrics}"
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_held_by_idle_partitions_come_back_to_the_one_that_asks() {
    use hunt_server::state::partition_of;
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let hunts = one_step(r#"generate: { prefix: "G-", count: 100 }"#, None);
    let s = Arc::new(start(&dir, Some(hunts), MemoryEscrow::node(&bucket, 1, 8)).await);
    // One customer on each partition: each takes a block and uses one code of it.
    let mut seen = BTreeSet::new();
    let one_each: Vec<String> = (0..)
        .map(|i| format!("w{i}"))
        .filter(|u| seen.insert(partition_of(u, 8)))
        .take(8)
        .collect();
    let mut won = race(&s, one_each.into_iter()).await;
    assert_eq!(won.len(), 8);
    let held: u64 = bucket
        .account("code.gold.v1-")
        .1
        .held
        .values()
        .map(|h| hunt_cluster::escrow::count(&h.spans))
        .sum();
    assert!(held > 20, "the idle partitions hold codes: {held}");
    // Then customers of partition 0 only: once the account is empty, the others give
    // back what they hold, and every code is granted.
    let busy: Vec<String> = (0..)
        .map(|i| format!("p{i}"))
        .filter(|u| partition_of(u, 8) == 0)
        .take(150)
        .collect();
    won.extend(race(&s, busy.into_iter()).await);
    assert_eq!(codes_once(&won).len(), 100, "every code granted");
    bucket.account("code.gold.v1-").1.check().unwrap();
    s.stop().await.unwrap();
}

/// Two nodes in one process: each partition's events go to the node that owns it.
struct InProcess {
    /// The node of each partition (a hand-off changes it).
    owner: Arc<Mutex<Vec<usize>>>,
    nodes: Arc<Mutex<Vec<std::sync::Weak<hunt_server::service::Service>>>>,
    /// The node this router is of (its share is not gathered again).
    me: Option<usize>,
    /// Nodes that do not answer gathers in time.
    silent: Arc<Mutex<BTreeSet<usize>>>,
}

impl InProcess {
    /// Node `me`'s router, to the same nodes as `self`.
    fn of(&self, me: usize) -> InProcess {
        InProcess {
            owner: self.owner.clone(),
            nodes: self.nodes.clone(),
            me: Some(me),
            silent: self.silent.clone(),
        }
    }
}

impl hunt_server::route::Router for InProcess {
    fn events<'a>(
        &'a self,
        partition: u32,
        events: Vec<(usize, hunt_core::engine::Event)>,
    ) -> BoxFuture<'a, Result<hunt_server::route::Statuses, String>> {
        Box::pin(async move {
            let owner = self.owner.lock()[partition as usize];
            let node = self.nodes.lock()[owner].upgrade();
            let Some(service) = node else {
                return Err("the owner is not running".into());
            };
            // As over the wire: statuses travel as `Routed`.
            let statuses = service
                .ingest_routed(events)
                .await
                .map_err(|e| e.to_string())?;
            Ok(statuses
                .into_iter()
                .map(|(i, id, s)| {
                    let wire = serde_json::to_string(&hunt_server::route::Routed::of(&s)).unwrap();
                    let back: hunt_server::route::Routed = serde_json::from_str(&wire).unwrap();
                    (i, id, back.into_status())
                })
                .collect())
        })
    }

    fn give_back(&self, key: &str) {
        for n in self.nodes.lock().iter() {
            if let Some(s) = n.upgrade() {
                s.give_back(key);
            }
        }
    }

    fn user<'a>(
        &'a self,
        partition: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<hunt_server::route::UserView>, String>> {
        Box::pin(async move {
            let owner = self.owner.lock()[partition as usize];
            let node = self.nodes.lock()[owner].upgrade();
            let Some(service) = node else {
                return Err("the owner is not running".into());
            };
            let view = service.user_routed(user).await.map_err(|e| e.to_string())?;
            // As over the wire.
            Ok(serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap())
        })
    }

    fn gather<'a>(
        &'a self,
        ask: &'a hunt_server::route::Ask,
    ) -> BoxFuture<'a, hunt_server::route::Gathered> {
        Box::pin(async move {
            // Every node's share: the asking one's own too, which it leaves out by
            // knowing its id over the wire; here every node answers, so the test's
            // nodes each have their own router (`InProcess::of`).
            let nodes: Vec<_> = self.nodes.lock().clone();
            let mut g = hunt_server::route::Gathered::default();
            for (n, node) in nodes.iter().enumerate() {
                if Some(n) == self.me {
                    continue;
                }
                if self.silent.lock().contains(&n) {
                    g.missing.push(format!("node{n}"));
                    continue;
                }
                match node.upgrade() {
                    Some(s) => {
                        let share = s.share(ask).await;
                        let wire = serde_json::to_value(&share).unwrap();
                        let share: hunt_server::route::Share =
                            serde_json::from_value(wire).unwrap();
                        g.shares.push(hunt_server::route::Share {
                            node: format!("node{n}"),
                            ..share
                        });
                    }
                    None => g.missing.push(format!("node{n}")),
                }
            }
            g
        })
    }
}

/// A small random source, the same for a seed on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Two steps in order, rewarded from a pool of `codes` codes, at most `cap` winners.
fn two_steps(codes: u64, cap: u64) -> String {
    format!(
        r#"
version: 1
pools:
  - id: gold
    generate: {{ prefix: "G-", count: {codes} }}
hunts:
  - id: trail
    order: sequence
    steps:
      - {{ id: look, on: product_view }}
      - {{ id: buy, on: purchase, when: 'event.data.price >= 10' }}
    reward: {{ pool: gold, per_user: 1 }}
    max_winners: {cap}
"#
    )
}

/// An answer without its codes (which code a winner gets may differ; whether one is
/// granted may not).
fn without_codes(a: &serde_json::Value) -> serde_json::Value {
    let mut a = a.clone();
    for o in a["outcomes"].as_array_mut().into_iter().flatten() {
        if let Some(code) = o.get_mut("code") {
            *code = json!("…");
        }
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_give_the_same_answers_as_one_for_the_same_events() {
    // (seed, customers, events, pool and cap); a pool and a cap drawn from the seed,
    // and a case whose pool runs out while the second node's partitions hold blocks of
    // it nobody there asks for: after the first 300 events, only customers of the
    // first node's partitions come.
    for (seed, customers, count, pool) in [
        (7u64, 40, 300, None),
        (11, 40, 300, None),
        (2026, 40, 300, None),
        (5, 150, 900, Some((60, 1000))),
    ] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (codes, cap) = pool.unwrap_or_else(|| (3 + rng.below(20), 2 + rng.below(25)));
        let hunts = two_steps(codes, cap);
        // Each customer's events in order.
        let events: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                let u = loop {
                    let u = format!("c{}", rng.below(customers));
                    let first_node = hunt_server::state::partition_of(&u, 8).is_multiple_of(2);
                    if pool.is_none() || i < 300 || first_node {
                        break u;
                    }
                };
                match rng.below(3) {
                    0 => ev(&format!("e{i}"), &u, "product_view", json!({})),
                    1 => ev(
                        &format!("e{i}"),
                        &u,
                        "purchase",
                        json!({"price": rng.below(20)}),
                    ),
                    // A retry of an earlier event: a duplicate with its first answer.
                    _ => ev(
                        &format!("e{}", rng.below(i.max(1))),
                        &u,
                        "product_view",
                        json!({}),
                    ),
                }
            })
            .collect();

        let (_d1, one_dir) = tempdir();
        let one = Server::start(
            &one_dir,
            Options {
                hunts: Some(hunts.clone()),
                partitions: 8,
                ..Options::default()
            },
        )
        .await;
        let (_d2, a_dir) = tempdir();
        let (_d3, b_dir) = tempdir();
        let bucket = Arc::new(Bucket::default());
        let router = InProcess {
            owner: Arc::new(Mutex::new((0..8).map(|p| p % 2).collect())),
            nodes: Default::default(),
            me: None,
            silent: Default::default(),
        };
        let mut nodes = Vec::new();
        for (n, dir) in [(0, &a_dir), (1, &b_dir)] {
            let s = Server::start(
                dir,
                Options {
                    hunts: Some(hunts.clone()),
                    partitions: 8,
                    apply_hunts: false,
                    escrow: Some(MemoryEscrow::node(&bucket, 1, 8)),
                    spread: Some(hunt_server::route::Spread {
                        owned: (0..8).filter(|p| p % 2 == n).collect(),
                        router: Arc::new(router.of(n as usize)),
                    }),
                    ..Options::default()
                },
            )
            .await;
            let service = s.service().await;
            router.nodes.lock().push(Arc::downgrade(&service));
            nodes.push(s);
        }

        let mut won_one = BTreeSet::new();
        let mut won_two = BTreeSet::new();
        for (i, e) in events.iter().enumerate() {
            let (st1, a1) = one.post(json!([e])).await;
            // Sent to either node: the other's partitions are routed.
            let (st2, a2) = nodes[i % 2].post(json!([e])).await;
            assert_eq!((st1, st2), (200, 200), "{a1} {a2}");
            let (r1, r2) = (&a1["results"][0], &a2["results"][0]);
            assert_eq!(
                without_codes(r1),
                without_codes(r2),
                "seed {seed}, event {i} ({e}): one node and two differ"
            );
            for (r, won) in [(r1, &mut won_one), (r2, &mut won_two)] {
                if r["status"] == "accepted" {
                    for o in r["outcomes"].as_array().unwrap() {
                        if let Some(code) = o["code"].as_str() {
                            assert!(won.insert(code.to_string()), "{code} granted twice");
                        }
                    }
                }
            }
        }
        assert_eq!(won_one.len(), won_two.len());
        same_queries_and_figures(&one, &nodes, customers, seed).await;
        same_dashboard_figures(&one, &nodes, seed).await;
        // The second node misses the gathers: the first's counters and history count
        // it with its last answer, and name it; a figure asked through the API goes
        // without it, named too.
        let first = nodes[0].service().await;
        let (full, _) = first.counters_everywhere().await;
        router.silent.lock().insert(1);
        let (stood_in, missing) = first.counters_everywhere().await;
        assert_eq!(missing, ["node1"]);
        assert_eq!(
            (stood_in.accepted, stood_in.ack_count, &stood_in.applied),
            (full.accepted, full.ack_count, &full.applied),
            "seed {seed}: a node that misses a gather counts with its last answer"
        );
        let sample = hunt_server::history::sample(&first).await;
        assert_eq!(sample.reading.accepted, full.accepted, "seed {seed}");
        let (_, pools) = nodes[0].get("/v1/pools").await;
        assert_eq!(pools["partial"], json!(["node1"]), "{pools}");
        router.silent.lock().clear();
        // Its service let go, so that its log closes at the stop.
        drop(first);
        eprintln!(
            "seed {seed}: pool {codes}, cap {cap}: {} winners, the same on one node and two",
            won_one.len()
        );
        one.stop().await.unwrap();
        for n in &nodes {
            n.stop().await.unwrap();
        }
    }
}

/// Times and codes left out (they differ between two runs of the same events).
fn without_times_and_codes(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let hidden = matches!(k.as_str(), "code" | "at" | "last_found_at" | "completed_at");
                let v = if hidden {
                    json!("…")
                } else {
                    without_times_and_codes(v)
                };
                (k.clone(), v)
            })
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(without_times_and_codes).collect(),
        other => other.clone(),
    }
}

/// Every customer asked of either node gets their owner's answer, which is one
/// node's; the hunt-wide figures gathered on either node are one node's.
async fn same_queries_and_figures(one: &Server, nodes: &[Server], customers: u64, seed: u64) {
    for c in 0..customers {
        for path in [format!("/v1/users/c{c}"), format!("/v1/users/c{c}/hunts")] {
            let (s1, a1) = one.get(&path).await;
            let (sa, aa) = nodes[0].get(&path).await;
            let (sb, ab) = nodes[1].get(&path).await;
            assert_eq!((sa, sb), (s1, s1), "seed {seed}, {path}: {a1} {aa} {ab}");
            assert_eq!(
                aa, ab,
                "seed {seed}, {path}: the owner's answer on either node"
            );
            assert_eq!(
                without_times_and_codes(&a1),
                without_times_and_codes(&aa),
                "seed {seed}, {path}: one node and two differ"
            );
        }
    }
    for path in [
        "/v1/hunts/trail/stats",
        "/v1/hunts/trail/winners?limit=10000",
        "/v1/pools",
    ] {
        let (s1, a1) = one.get(path).await;
        let (sa, aa) = nodes[0].get(path).await;
        let (sb, ab) = nodes[1].get(path).await;
        assert_eq!((s1, sa, sb), (200, 200, 200), "{path}: {a1} {aa} {ab}");
        let (a1, aa, ab) = (figures(&a1), figures(&aa), figures(&ab));
        assert_eq!(
            a1, aa,
            "seed {seed}, {path}: one node and two (asked of the first)"
        );
        assert_eq!(
            a1, ab,
            "seed {seed}, {path}: one node and two (asked of the second)"
        );
    }
}

/// The pools' remaining on a node's `/metrics`.
fn pools_remaining(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("hunt_pool_remaining{"))
        .map(str::to_string)
        .collect()
}

/// The dashboard's figures on either node are the cluster's, as one node has them: a
/// sample of its history (the counters summed over the nodes, the pools, the hunts'
/// totals), the time to complete's count, and the pools' remaining on `/metrics` once
/// gathered.
async fn same_dashboard_figures(one: &Server, nodes: &[Server], seed: u64) {
    let totals = |s: &hunt_server::history::Sample| {
        let hunts: Vec<_> = s
            .hunts
            .iter()
            .map(|h| (h.hunt.clone(), h.participants, h.completions, h.granted))
            .collect();
        let r = &s.reading;
        let applied: u64 = r.applied.iter().sum();
        (r.accepted, r.ack.1, applied, s.pools.clone(), hunts)
    };
    let s1 = hunt_server::history::sample(&*one.service().await).await;
    let ttc = |v: &serde_json::Value| v["time_to_complete"]["completions"].clone();
    let (_, h1) = one.get("/v1/hunts/trail/history").await;
    for (n, node) in nodes.iter().enumerate() {
        let s = hunt_server::history::sample(&*node.service().await).await;
        assert_eq!(
            totals(&s),
            totals(&s1),
            "seed {seed}: node {n}'s history sample is not one node's"
        );
        assert_eq!(s.reading.backlog.len(), 8);
        let (_, h) = node.get("/v1/hunts/trail/history").await;
        assert_eq!(
            ttc(&h),
            ttc(&h1),
            "seed {seed}: node {n}'s time to complete"
        );
        assert_eq!(
            pools_remaining(&node.metrics().await),
            pools_remaining(&one.metrics().await),
            "seed {seed}: node {n}'s /metrics"
        );
    }
}

/// Figures as two runs of the same events share them: winners by customer (their
/// order and codes depend on the time), pools without their burn-down.
fn figures(v: &serde_json::Value) -> serde_json::Value {
    let mut v = without_times_and_codes(v);
    if let Some(w) = v.get_mut("winners").and_then(|w| w.as_array_mut()) {
        w.sort_by_key(|w| w["user"].to_string());
    }
    for p in v
        .get_mut("pools")
        .and_then(|p| p.as_array_mut())
        .into_iter()
        .flatten()
    {
        p["burn_down"] = json!("…");
        p["forecast"] = json!("…");
    }
    v
}

/// Two pools, and a hunt on each.
fn two_pools(gold: &str, silver: Option<&str>) -> String {
    let (silver_pool, silver_hunt) = match silver {
        Some(codes) => (
            format!("\n  - id: silver\n    {codes}"),
            "\n  - id: dash2\n    steps: [{ id: sell, on: refund }]\n    reward: { pool: silver, per_user: 1 }".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
version: 1
pools:
  - id: gold
    {gold}{silver_pool}
hunts:
  - id: dash
    steps: [{{ id: buy, on: purchase }}]
    reward: {{ pool: gold, per_user: 1 }}{silver_hunt}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_moved_into_a_pool_that_grew_are_not_granted_again() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let s = Arc::new(
        start(
            &dir,
            Some(two_pools("codes: [A, B]", Some("codes: [S1, S2, S3]"))),
            MemoryEscrow::node(&bucket, 1, 8),
        )
        .await,
    );
    // Every silver code granted.
    let mut silver = BTreeSet::new();
    for i in 0..3 {
        let (_, a) = s
            .post(json!([ev(
                &format!("r{i}"),
                &format!("s{i}"),
                "refund",
                json!({})
            )]))
            .await;
        let o = &a["results"][0]["outcomes"];
        let code = o
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["code"].as_str());
        silver.insert(code.expect("a silver code").to_string());
    }
    // Silver dropped, its codes appended to gold: gold only grew, so it keeps its
    // account, which must count the silver codes as granted.
    let (st, v) = s
        .put_config(&two_pools("codes: [A, B, S1, S2, S3]", None))
        .await;
    assert_eq!(st, 200, "{v}");
    let won = race(&s, (0..20).map(|i| format!("g{i}"))).await;
    let codes = codes_once(&won);
    assert_eq!(
        codes,
        vec!["A", "B"],
        "silver's codes are not granted again"
    );
    let (_, stats) = s.get("/v1/hunts/dash/stats").await;
    assert_eq!(stats["rewards_denied"]["pool_empty"], 18, "{stats}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_fails_half_way_changes_nothing_and_can_be_retried_with_another_file() {
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let s = Arc::new(
        start(
            &dir,
            Some(one_step("codes: [A, B, C]", None)),
            MemoryEscrow::node(&bucket, 1, 8),
        )
        .await,
    );
    let mut won = race(&s, std::iter::once("a0".to_string())).await;
    // The bucket fails after the new accounts were seeded: 503, nothing changed.
    bucket.refuse_lineages.store(true, Ordering::Relaxed);
    let (st, v) = s
        .put_config(&one_step("codes: [C, B, A, D, E, F]", None))
        .await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "pools_unavailable", "{v}");
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");
    bucket.refuse_lineages.store(false, Ordering::Relaxed);
    // The version in force still grants.
    won.extend(race(&s, std::iter::once("a1".to_string())).await);
    assert_eq!(won.len(), 2);
    // Retried with a smaller file of the same number: its own accounts.
    let (st, v) = s.put_config(&one_step("codes: [C, B, A, D]", None)).await;
    assert_eq!(st, 200, "{v}");
    won.extend(race(&s, (0..10).map(|i| format!("b{i}"))).await);
    assert_eq!(codes_once(&won), vec!["A", "B", "C", "D"]);
    s.stop().await.unwrap();
}

/// Partitions' own snapshots, in memory.
#[derive(Default)]
struct PartStore(Mutex<HashMap<u32, hunt_store::Snapshot>>);

impl hunt_store::PartSnapshots for PartStore {
    fn save_part(&self, p: u32, lsn: u64, payload: &[u8]) -> Result<(), hunt_store::LogError> {
        let payload = payload.to_vec();
        self.0
            .lock()
            .insert(p, hunt_store::Snapshot { lsn, payload });
        Ok(())
    }

    fn latest_part(
        &self,
        p: u32,
    ) -> Result<(Option<hunt_store::Snapshot>, Vec<String>), hunt_store::LogError> {
        Ok((self.0.lock().get(&p).cloned(), Vec::new()))
    }
}

/// Each partition rebuilt alone (as a node that takes it over would, ADR 0015) from
/// its own records and the versions, with or without a snapshot of its own, is
/// exactly what the whole rebuild gives it: its customers, figures, winners, dedupe
/// window and deliveries, across a version put in force by markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_rebuilt_alone_is_what_the_whole_rebuild_gives_it() {
    use hunt_server::recover::{recover, recover_partition};
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let hunts = |codes: u32| {
        format!(
            r#"
version: 1
pools:
  - id: gold
    generate: {{ prefix: "G-", count: {codes} }}
sinks:
  - id: crm
    url: "http://127.0.0.1:9/"
    max_attempts: 1
hunts:
  - id: dash
    steps: [{{ id: buy, on: purchase }}]
    reward: {{ pool: gold, per_user: 1 }}
    notify: [crm]
"#
        )
    };
    let s = Arc::new(start(&dir, Some(hunts(150)), MemoryEscrow::node(&bucket, 1, 8)).await);
    let first = race(&s, (0..100).map(|i| format!("a{i}"))).await;
    let (st, put) = s.put_config(&hunts(400)).await;
    assert_eq!((st, &put["partitions_pending"]), (200, &json!([])), "{put}");
    let second = race(&s, (0..100).map(|i| format!("b{i}"))).await;
    assert_eq!(first.len() + second.len(), 200);
    // Each partition's own snapshot, then more events after it.
    let store = Arc::new(PartStore::default());
    let service = s.service().await;
    for n in 0..8 {
        service.snapshot_partition(n, store.clone()).await.unwrap();
    }
    drop(service);
    let third = race(&s, (0..40).map(|i| format!("c{i}"))).await;
    assert_eq!(third.len(), 40);
    // Deliveries fail (nothing listens there) and go to the dead-letter queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, dlq) = s.get("/v1/dlq?limit=1").await;
        let dead = dlq["total"].as_u64().unwrap_or(0);
        if dead >= 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{dlq}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.abort().await;
    let (log, _) = hunt_store::Log::open(
        Arc::new(hunt_store::fs::RealFs),
        hunt_store::LogConfig::new(dir.join("log")),
    )
    .unwrap();
    let dedupe = hunt_server::state::DedupeConfig {
        window: hunt_core::time::Duration::from_secs(24 * 3600),
        entries_max: 1_000_000,
    };
    let whole = recover(&log, None, 8, dedupe, &mut |_| {}).unwrap();
    assert!(whole.behind.is_empty());
    let mut delivered_parts = BTreeSet::new();
    let store: &dyn hunt_store::PartSnapshots = &*store;
    for (n, snapshots) in (0..8u32).flat_map(|n| [(n, None), (n, Some(store))]) {
        let one = recover_partition(&log, snapshots, n, 8, dedupe, &mut |_| {}).unwrap();
        if snapshots.is_some() {
            assert!(
                one.report.snapshot_lsn.is_some(),
                "{:?}",
                one.report.warnings
            );
            assert!(
                one.report.events < 100,
                "partition {n}: only the tail after its snapshot: {} events",
                one.report.events
            );
        }
        let all = &whole.states[n as usize];
        let users = |s: &hunt_server::state::PartitionState| {
            s.users
                .iter()
                // As kept (the binding to a compiled catalog is the process's own).
                .map(|(id, u)| (id.to_string(), serde_json::to_value(u).unwrap()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(!all.users.is_empty(), "partition {n} has customers");
        assert_eq!(users(&one.state), users(all), "partition {n}'s customers");
        assert_eq!(one.state.stats, all.stats, "partition {n}'s figures");
        let winners = |s: &hunt_server::state::PartitionState| {
            s.winners.values().cloned().collect::<Vec<_>>()
        };
        assert_eq!(winners(&one.state), winners(all), "partition {n}'s winners");
        assert_eq!(one.state.dedupe.len(), all.dedupe.len());
        let entries = |o: &hunt_server::notify::outbox::Outbox| {
            let mut e: Vec<_> = o
                .entries()
                .filter(|e| e.partition == n)
                .map(|e| (e.key.clone(), e.dead_at.is_some(), e.attempts))
                .collect();
            e.sort();
            e
        };
        let mine = entries(&one.outbox);
        assert_eq!(mine.len(), one.outbox.entries().count(), "only its own");
        assert_eq!(mine, entries(&whole.outbox), "partition {n}'s deliveries");
        if mine.iter().any(|(_, dead, _)| *dead) {
            delivered_parts.insert(n);
        }
        assert_eq!(
            one.version.as_ref().map(|v| v.record.version),
            Some(2),
            "the newest version"
        );
        assert!(one.behind.is_none());
        assert_eq!(one.report.mismatches, 0, "{:?}", one.report.first_mismatch);
    }
    assert!(
        delivered_parts.len() > 1,
        "dead letters in several partitions: {delivered_parts:?}"
    );
}

/// What a test receiver was sent: (event id, CloudEvent type).
type Received = Arc<Mutex<BTreeSet<(String, String)>>>;

/// A webhook receiver that keeps what it is sent, answering 503 while `down` is set.
async fn receiver(down: Arc<std::sync::atomic::AtomicBool>) -> (String, Received) {
    let got: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (keep, down) = (keep.clone(), down.clone());
            async move {
                if down.load(Ordering::Relaxed) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = v["data"]["event_id"].as_str().unwrap_or("").to_string();
                let kind = v["type"].as_str().unwrap_or("").to_string();
                keep.lock().insert((id, kind));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// `hunts` with every hunt notifying a sink at `url`.
fn notifying(hunts: &str, url: &str) -> String {
    let sink = format!(
        "sinks:\n  - id: crm\n    url: \"{url}\"\n    max_attempts: 1000\n    breaker_failures: 3\n    breaker_open_for: 200ms\nhunts:\n"
    );
    hunts.replace("hunts:\n", &sink) + "    notify: [crm]\n"
}

/// Partitions handed from one node to the other while events come (ADR 0015, a
/// graceful hand-off): the old owner answers what it took and lets go; the new one
/// rebuilds the partition alone from the shared log and takes it over, with its
/// deliveries. Events sent in between are refused `moving` (nothing recorded) and
/// accepted once sent again; every answer, query, figure and delivery is the one a
/// single node gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_handed_over_between_nodes_give_one_nodes_answers() {
    let (seed, customers, count) = (31u64, 40u64, 600usize);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (codes, cap) = (3 + rng.below(20), 2 + rng.below(25));
    // The receivers are down until every move is done: the deliveries of the
    // partitions that move wait in the outbox, and must move with them.
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (one_url, one_got) = receiver(down.clone()).await;
    let (two_url, two_got) = receiver(down.clone()).await;
    let hunts = notifying(&two_steps(codes, cap), &two_url);
    let events: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let u = format!("c{}", rng.below(customers));
            match rng.below(3) {
                0 => ev(&format!("e{i}"), &u, "product_view", json!({})),
                1 => ev(
                    &format!("e{i}"),
                    &u,
                    "purchase",
                    json!({"price": rng.below(20)}),
                ),
                _ => ev(
                    &format!("e{}", rng.below(i.max(1) as u64)),
                    &u,
                    "product_view",
                    json!({}),
                ),
            }
        })
        .collect();
    let (_d1, one_dir) = tempdir();
    let one = Server::start(
        &one_dir,
        Options {
            hunts: Some(notifying(&two_steps(codes, cap), &one_url)),
            partitions: 8,
            ..Options::default()
        },
    )
    .await;
    // Two nodes on one log, as a cluster's nodes share its stream.
    let (_dl, log_dir) = tempdir();
    let shared: Arc<dyn hunt_store::PartitionLog> = Arc::new(
        hunt_store::Log::open(
            Arc::new(hunt_store::fs::RealFs),
            hunt_store::LogConfig::new(log_dir.join("log")),
        )
        .unwrap()
        .0,
    );
    let (_d2, a_dir) = tempdir();
    let (_d3, b_dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let router = InProcess {
        owner: Arc::new(Mutex::new((0..8).map(|p| p % 2).collect())),
        nodes: Default::default(),
        me: None,
        silent: Default::default(),
    };
    let mut nodes = Vec::new();
    // The partitions' own snapshots, shared as a cluster's snapshot bucket is.
    let parts = Arc::new(PartStore::default());
    // Node b's leases are newer: it may claim node a's blocks of a partition it takes.
    for (n, dir, epoch) in [(0, &a_dir, 1), (1, &b_dir, 2)] {
        let s = Server::start(
            dir,
            Options {
                hunts: Some(hunts.clone()),
                partitions: 8,
                apply_hunts: false,
                escrow: Some(MemoryEscrow::node(&bucket, epoch, 8)),
                spread: Some(hunt_server::route::Spread {
                    owned: (0..8).filter(|p| p % 2 == n).collect(),
                    router: Arc::new(router.of(n as usize)),
                }),
                shared_log: Some(shared.clone()),
                part_snapshots: Some(parts.clone()),
                ..Options::default()
            },
        )
        .await;
        let service = s.service().await;
        router.nodes.lock().push(Arc::downgrade(&service));
        nodes.push(s);
    }
    let moves = [(150, 2u32), (300, 4), (450, 0)];
    let mut won = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        if i == 225 {
            // A new version put on one node: the other reads it from the log and puts
            // it in force on its partitions; the answer waits for every partition's.
            let lower = |h: &str| h.replace("price >= 10", "price >= 5");
            let (st, put) = nodes[0].put_config(&lower(&hunts)).await;
            assert_eq!(st, 200, "{put}");
            assert_eq!(
                (&put["partitions"], &put["partitions_pending"]),
                (&json!(8), &json!([])),
                "{put}"
            );
            let (_, one_hunts) = one.get("/v1/config").await;
            let (st, _) = one
                .put_config(&lower(one_hunts["text"].as_str().unwrap()))
                .await;
            assert_eq!(st, 200);
        }
        if let Some(&(_, p)) = moves.iter().find(|(at, _)| *at == i) {
            let (a, b) = (nodes[0].service().await, nodes[1].service().await);
            a.leave(p).await.unwrap();
            // In between, nobody applies the partition: its events are refused for a
            // retry, nothing of them recorded.
            let u = (0..)
                .map(|k| format!("between{k}"))
                .find(|u| hunt_server::state::partition_of(u, 8) == p as usize)
                .unwrap();
            let between = ev("between", &u, "product_view", json!({}));
            for node in &nodes {
                let (st, r) = node.post(json!([between])).await;
                assert_eq!(st, 503, "{r}");
                assert_eq!(r["results"][0]["code"], "moving", "{r}");
            }
            let dedupe = b.config.dedupe;
            let log = shared.clone();
            let rebuilt = tokio::task::spawn_blocking(move || {
                hunt_server::recover::recover_partition(&*log, None, p, 8, dedupe, &mut |_| {})
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(rebuilt.report.mismatches, 0);
            b.adopt(p, rebuilt).await.unwrap();
            router.owner.lock()[p as usize] = 1;
            // Sent again once it has an owner: new, applied once.
            let (st, r) = nodes[0].post(json!([between])).await;
            assert_eq!(
                (st, &r["results"][0]["status"]),
                (200, &json!("accepted")),
                "{r}"
            );
            let (_, r1) = one.post(json!([between])).await;
            assert_eq!(
                without_codes(&r["results"][0]),
                without_codes(&r1["results"][0])
            );
        }
        let (st1, a1) = one.post(json!([e])).await;
        let (st2, a2) = nodes[i % 2].post(json!([e])).await;
        assert_eq!((st1, st2), (200, 200), "{a1} {a2}");
        let (r1, r2) = (&a1["results"][0], &a2["results"][0]);
        assert_eq!(
            without_codes(r1),
            without_codes(r2),
            "event {i} ({e}): one node and two differ"
        );
        if r2["status"] == "accepted" {
            for o in r2["outcomes"].as_array().unwrap() {
                if let Some(code) = o["code"].as_str() {
                    assert!(won.insert(code.to_string()), "{code} granted twice");
                }
            }
        }
    }
    // Every event again, to either node: a duplicate with its first answer, wherever
    // its partition went.
    for (i, e) in events.iter().enumerate() {
        let (_, a1) = one.post(json!([e])).await;
        let (_, a2) = nodes[(i + 1) % 2].post(json!([e])).await;
        assert_eq!(a2["results"][0]["status"], "duplicate", "{a2}");
        assert_eq!(
            without_codes(&a1["results"][0]),
            without_codes(&a2["results"][0])
        );
    }
    same_queries_and_figures(&one, &nodes, customers, seed).await;
    // Every outcome reached the receiver, whichever node held its partition when.
    down.store(false, Ordering::Relaxed);
    let up = tokio::time::Instant::now();
    let deadline = up + Duration::from_secs(60);
    loop {
        let (a, b) = (one_got.lock().clone(), two_got.lock().clone());
        if a == b && !a.is_empty() {
            eprintln!("{} deliveries, all in {:?}", a.len(), up.elapsed());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries differ: one node only {:?}; two nodes only {:?}",
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A node sharing the partitions snapshots each of its own, on its own; each
    // rebuilds from its snapshot as from the whole log.
    let b = nodes[1].service().await;
    b.snapshot().await.unwrap();
    let mine: BTreeSet<u32> = (0..8).filter(|p| b.owns(*p as usize)).collect();
    let stored: BTreeSet<u32> = parts.0.lock().keys().copied().collect();
    assert_eq!(stored, mine, "its partitions' snapshots, no other");
    let dedupe = b.config.dedupe;
    drop(b);
    for n in mine {
        let (log, store) = (shared.clone(), parts.clone());
        let (from_snapshot, from_log) = tokio::task::spawn_blocking(move || {
            let store: &dyn hunt_store::PartSnapshots = &*store;
            (
                hunt_server::recover::recover_partition(
                    &*log,
                    Some(store),
                    n,
                    8,
                    dedupe,
                    &mut |_| {},
                )
                .unwrap(),
                hunt_server::recover::recover_partition(&*log, None, n, 8, dedupe, &mut |_| {})
                    .unwrap(),
            )
        })
        .await
        .unwrap();
        assert!(from_snapshot.report.snapshot_lsn.is_some());
        let users = |s: &hunt_server::state::PartitionState| {
            s.users
                .iter()
                .map(|(id, u)| (id.to_string(), serde_json::to_value(u).unwrap()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            users(&from_snapshot.state),
            users(&from_log.state),
            "partition {n}"
        );
    }
    one.stop().await.unwrap();
    for n in &nodes {
        n.stop().await.unwrap();
    }
}

/// Gold rewarded by `dash`, silver by `side` (capped at `cap`).
fn gold_and_capped_side(gold: &str, cap: u64) -> String {
    format!(
        r#"
version: 1
pools:
  - id: gold
    codes: [{gold}]
  - id: silver
    codes: [S1, S2, S3, S4]
hunts:
  - id: dash
    steps: [{{ id: buy, on: purchase }}]
    reward: {{ pool: gold, per_user: 1 }}
  - id: side
    steps: [{{ id: look, on: visit }}]
    reward: {{ pool: silver, per_user: 1 }}
    max_winners: {cap}
"#
    )
}

/// A partition whose seeds before its marker fail half way (gold's new account seeded,
/// the cap's not) stays on the old version and goes on granting gold codes from the
/// old account: the new gold account must go on waiting for it (only a durable marker
/// counts), or the same code goes to two customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_failing_half_way_through_a_partitions_seeds_grants_no_code_twice() {
    use hunt_server::state::partition_of;
    let (_d, dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let codes: Vec<String> = (1..=8).map(|i| format!("C{i}")).collect();
    let s = Arc::new(
        start(
            &dir,
            Some(gold_and_capped_side(&codes.join(", "), 4)),
            MemoryEscrow::node(&bucket, 1, 8),
        )
        .await,
    );
    // Partition 3's seed of the new cap account is refused.
    *bucket.refuse_seed.lock() = Some(("cap.side.v2-".into(), 3));
    let reversed: Vec<String> = codes.iter().rev().cloned().collect();
    let (st, v) = s
        .put_config(&gold_and_capped_side(&reversed.join(", "), 3))
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["partitions_pending"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{v}"
    );
    // Customers of every partition, partition 3's first.
    let mut users: Vec<String> = (0..)
        .map(|i| format!("u{i}"))
        .filter(|u| partition_of(u, 8) == 3)
        .take(6)
        .collect();
    users.extend(
        (0..)
            .map(|i| format!("w{i}"))
            .filter(|u| partition_of(u, 8) != 3)
            .take(10),
    );
    // While partition 3 cannot seed, the new accounts hand nothing out: customers of
    // the new version are refused for a retry. Then the bucket is back, partition 3's
    // switch is asked again, and they get codes.
    let racing = {
        let s = s.clone();
        tokio::spawn(async move { race(&s, users.into_iter()).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    *bucket.refuse_seed.lock() = None;
    let won = racing.await.unwrap();
    let by_code: BTreeMap<&str, Vec<&str>> = won.iter().fold(BTreeMap::new(), |mut m, (u, c)| {
        m.entry(c.as_str()).or_default().push(u.as_str());
        m
    });
    let twice: Vec<_> = by_code.iter().filter(|(_, us)| us.len() > 1).collect();
    *bucket.refuse_seed.lock() = None;
    assert!(
        twice.is_empty() && won.len() <= 8,
        "codes granted twice: {twice:?}; {} codes granted from a pool of 8",
        won.len()
    );
    s.stop().await.unwrap();
}

/// A partition taken over in the middle of a switch by markers applies the version of
/// its last marker until its switch succeeds: from that version's escrow accounts,
/// never from the process's own counters (which would start again at the first code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_adopted_behind_whose_switch_fails_grants_no_code_twice() {
    use hunt_server::state::partition_of;
    let codes: Vec<String> = (1..=8).map(|i| format!("C{i}")).collect();
    let v1 = gold_and_capped_side(&codes.join(", "), 4);
    let reversed: Vec<String> = codes.iter().rev().cloned().collect();
    let v2 = gold_and_capped_side(&reversed.join(", "), 3);
    let (_dl, log_dir) = tempdir();
    let shared: Arc<dyn hunt_store::PartitionLog> = Arc::new(
        hunt_store::Log::open(
            Arc::new(hunt_store::fs::RealFs),
            hunt_store::LogConfig::new(log_dir.join("log")),
        )
        .unwrap()
        .0,
    );
    let (_d2, a_dir) = tempdir();
    let (_d3, b_dir) = tempdir();
    let bucket = Arc::new(Bucket::default());
    let router = InProcess {
        owner: Arc::new(Mutex::new((0..8).map(|p| p % 2).collect())),
        nodes: Default::default(),
        me: None,
        silent: Default::default(),
    };
    let mut nodes = Vec::new();
    for (n, dir, epoch) in [(0, &a_dir, 1), (1, &b_dir, 2)] {
        let s = Server::start(
            dir,
            Options {
                hunts: Some(v1.clone()),
                partitions: 8,
                apply_hunts: false,
                escrow: Some(MemoryEscrow::node(&bucket, epoch, 8)),
                spread: Some(hunt_server::route::Spread {
                    owned: (0..8).filter(|p| p % 2 == n).collect(),
                    router: Arc::new(router.of(n as usize)),
                }),
                shared_log: Some(shared.clone()),
                ..Options::default()
            },
        )
        .await;
        let service = s.service().await;
        router.nodes.lock().push(Arc::downgrade(&service));
        nodes.push(s);
    }
    let p = 2u32;
    let mut of_p = (0..)
        .map(|i| format!("p{i}"))
        .filter(|u| partition_of(u, 8) == p as usize);
    let mut won: Vec<(String, String)> = Vec::new();
    let code_of = |r: &serde_json::Value| {
        r["results"][0]["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "reward_granted")
            .map(|o| o["code"].as_str().unwrap().to_string())
    };
    for _ in 0..2 {
        let u = of_p.next().unwrap();
        let (st, r) = nodes[0]
            .post(json!([ev(&format!("{u}-buy"), &u, "purchase", json!({}))]))
            .await;
        assert_eq!(st, 200, "{r}");
        won.push((u, code_of(&r).expect("a code")));
    }
    // Partition 2's seed of the new cap account is refused (on every node).
    *bucket.refuse_seed.lock() = Some(("cap.side.v2-".into(), p));
    let (st, put) = nodes[0].put_config(&v2).await;
    assert_eq!(st, 200, "{put}");
    eprintln!("pending: {}", put["partitions_pending"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (a, b) = (nodes[0].service().await, nodes[1].service().await);
    a.leave(p).await.unwrap();
    let dedupe = b.config.dedupe;
    let log = shared.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        hunt_server::recover::recover_partition(&*log, None, p, 8, dedupe, &mut |_| {})
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!(
        "adopted behind on version {:?}, escrow attached: {:?}",
        rebuilt.behind.as_ref().map(|v| v.record.version),
        rebuilt.behind.as_ref().map(|v| v.escrow.is_some())
    );
    b.adopt(p, rebuilt).await.unwrap();
    router.owner.lock()[p as usize] = 1;
    for _ in 0..3 {
        let u = of_p.next().unwrap();
        let (st, r) = nodes[1]
            .post(json!([ev(&format!("{u}-buy"), &u, "purchase", json!({}))]))
            .await;
        eprintln!("{u}: {st} {}", r["results"][0]);
        if let Some(c) = code_of(&r) {
            won.push((u, c));
        }
    }
    eprintln!("won: {won:?}");
    let mut seen = BTreeMap::new();
    let twice: Vec<_> = won
        .iter()
        .filter(|(u, c)| seen.insert(c.clone(), u.clone()).is_some())
        .collect();
    *bucket.refuse_seed.lock() = None;
    assert!(
        twice.is_empty(),
        "codes granted twice: {twice:?} (all: {won:?})"
    );
}
