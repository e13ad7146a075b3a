//! Two nodes in one process, each on its own local log and owning half of the
//! partitions, joined by [`NatsRouter`] and [`Responder`] over one `nats-server`,
//! against one node that owns everything: the same events give the same answers.
//! The pools of the two come from the cluster's escrow (JetStream's pools bucket), as
//! on a cluster.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request as HttpRequest, header};
use hunt_cluster::testing::NatsCluster;
use hunt_cluster::{Cluster, ClusterConfig};
use hunt_server::escrow::EscrowBackend;
use hunt_server::http::HttpConfig;
use hunt_server::route::Spread;
use hunt_server::server::{Running, ServeConfig};
use hunt_server::service::{EngineConfig, ProvidedLog, Service};
use hunt_server::state::partition_of;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::cmd::cluster_node::{ESCROW_BLOCK_MAX, NodeEscrow};

pub(crate) const PARTITIONS: usize = 8;
/// The two nodes' ids: node 0 owns the even partitions, node 1 the odd ones.
const IDS: [&str; 2] = ["a", "b"];

/// One server, in this process.
pub(crate) struct Node {
    pub(crate) running: Running,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(hunts: &str, spread: Option<Spread>, escrow: Option<NodeEscrow>) -> Node {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut engine = EngineConfig::new(dir.path());
        engine.partitions = PARTITIONS;
        engine.spread = spread;
        if let Some(escrow) = escrow {
            // As on a cluster: the pools from the escrow, beside a log of its own.
            let (log, _) = hunt_store::Log::open(
                Arc::new(hunt_store::fs::RealFs),
                hunt_store::LogConfig::new(dir.path().join("log")),
            )
            .expect("a log");
            engine.provided_log = Some(ProvidedLog {
                log: Arc::new(log),
                name: "a local log".into(),
                snapshots: None,
                part_snapshots: None,
                tenure: None,
                metrics: None,
                escrow: Some(Arc::new(escrow) as Arc<dyn EscrowBackend>),
                escrow_grants: Default::default(),
                cluster_view: None,
            });
        }
        Node::start_on(hunts, dir, engine).await
    }

    /// A server of `engine` in `dir`, started with `hunts`.
    pub(crate) async fn start_on(
        hunts: &str,
        dir: tempfile::TempDir,
        engine: EngineConfig,
    ) -> Node {
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine,
            http: HttpConfig {
                limits: Default::default(),
                keys: Default::default(),
                rate_per_key: None,
                rate_per_user: None,
                conn: Default::default(),
            },
            hunts: Some(("hunts.yaml".into(), hunts.to_string())),
            alerts: None,
        };
        hunt_server::notify::install_tls_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = hunt_server::server::start(config, listener)
            .await
            .expect("the server starts");
        for _ in 0..3000 {
            if running.service().is_some() {
                return Node { running, _dir: dir };
            }
            assert!(!running.is_finished(), "the server stopped at start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server did not become ready");
    }

    pub(crate) fn service(&self) -> Arc<Service> {
        self.running.service().expect("running")
    }

    pub(crate) async fn call(&self, request: HttpRequest<Body>) -> (u16, Value, Option<String>) {
        let routes = self.running.routes().expect("running");
        let r = routes.oneshot(request).await.expect("an answer");
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let body = to_bytes(r.into_body(), 64 << 20).await.expect("a body");
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, v, retry)
    }

    /// A counter of `/metrics`.
    async fn counter(&self, name: &str) -> u64 {
        let routes = self.running.routes().expect("running");
        let request = HttpRequest::get("/metrics").body(Body::empty()).unwrap();
        let r = routes.oneshot(request).await.expect("an answer");
        let text = to_bytes(r.into_body(), 64 << 20).await.expect("a body");
        let text = String::from_utf8_lossy(&text);
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        let value = line.and_then(|l| l.split(' ').nth(1)?.parse().ok());
        value.unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    pub(crate) async fn post(&self, events: Value) -> (u16, Value, Option<String>) {
        let request = HttpRequest::post("/v1/events")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(events.to_string()))
            .unwrap();
        self.call(request).await
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self
            .call(HttpRequest::get(path).body(Body::empty()).unwrap())
            .await;
        (s, v)
    }
}

/// One `nats-server`, two nodes joined over it, and one node alone.
struct Pair {
    /// The NATS server: stopped when dropped.
    _nats: NatsCluster,
    urls: Vec<String>,
    subjects: Subjects,
    one: Node,
    nodes: Vec<Node>,
    /// Each node's responder, hosting nothing until asked.
    responders: Vec<Option<Responder>>,
}

fn owned(node: usize) -> BTreeSet<u32> {
    (0..PARTITIONS as u32)
        .filter(|p| *p as usize % 2 == node)
        .collect()
}

impl Pair {
    /// Waits `route` for an owner's answer and `gather` for the shares.
    async fn start(hunts: &str, route: Duration, gather: Duration) -> Pair {
        let nats = NatsCluster::start(1, false);
        let urls = nats.urls();
        let mut cfg = ClusterConfig::new(urls.clone(), "route");
        cfg.monitor = nats.monitor_urls();
        cfg.partitions = Some(PARTITIONS as u32);
        cfg.replicas = 1;
        let cluster = Cluster::connect(&cfg).await.expect("the cluster");
        let subjects = Subjects::of(cluster.name());
        let (_, live) = watch::channel(IDS.iter().map(|s| s.to_string()).collect());
        let one = Node::start(hunts, None, None).await;
        let mut nodes = Vec::new();
        for (n, id) in IDS.iter().enumerate() {
            let client = async_nats::connect(urls.clone()).await.expect("NATS");
            let router = NatsRouter::new(client, subjects.clone(), *id, live.clone())
                .with_timeouts(route, gather);
            let escrow = NodeEscrow::new(
                hunt_cluster::Escrow::open(&cluster, 1, ESCROW_BLOCK_MAX)
                    .await
                    .expect("the pools bucket"),
                1,
            );
            let spread = Spread {
                owned: owned(n),
                router: Arc::new(router),
            };
            nodes.push(Node::start(hunts, Some(spread), Some(escrow)).await);
        }
        let mut pair = Pair {
            _nats: nats,
            urls,
            subjects,
            one,
            nodes,
            responders: Vec::new(),
        };
        for n in 0..IDS.len() {
            let r = pair.responder(n).await;
            pair.responders.push(Some(r));
        }
        pair
    }

    /// A responder for node `n`, hosting nothing yet.
    async fn responder(&self, n: usize) -> Responder {
        let client = async_nats::connect(self.urls.clone()).await.expect("NATS");
        Responder::start(
            client,
            self.subjects.clone(),
            IDS[n],
            &self.nodes[n].service(),
        )
        .await
        .expect("a responder")
    }

    fn responder_of(&self, n: usize) -> &Responder {
        self.responders[n].as_ref().expect("a responder")
    }

    async fn host_all(&self) {
        for n in 0..IDS.len() {
            for p in owned(n) {
                self.responder_of(n).host(p).await.expect("hosted");
            }
        }
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
pub(crate) fn two_steps(codes: u64, cap: u64) -> String {
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

pub(crate) fn ev(id: &str, user: &str, kind: &str, data: Value) -> Value {
    json!({"id": id, "user": user, "type": kind, "data": data})
}

/// A customer of partition `p`, the `k`th one.
pub(crate) fn customer_of(p: u32, k: usize) -> String {
    (0..)
        .map(|i| format!("u{i}"))
        .filter(|u| partition_of(u, PARTITIONS) == p as usize)
        .nth(k)
        .expect("customers")
}

/// Times and codes left out: they differ between two runs of the same events.
pub(crate) fn without_times_and_codes(v: &Value) -> Value {
    match v {
        Value::Object(m) => m
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
        Value::Array(a) => a.iter().map(without_times_and_codes).collect(),
        other => other.clone(),
    }
}

/// Figures as two runs of the same events share them: winners by customer (their
/// order and codes follow the clock), pools without their burn-down.
fn figures(v: &Value) -> Value {
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

const FIGURES: [&str; 3] = [
    "/v1/hunts/trail/stats",
    "/v1/hunts/trail/winners?limit=10000",
    "/v1/pools",
];

/// Sends `events` in order to the node alone and to the two nodes (each to one of them
/// in turn), and checks that every answer, every customer's view (asked of either node)
/// and every gathered figure is the one node's, and that each event is counted as
/// accepted once.
async fn one_and_two_agree(pair: &Pair, events: &[Value], customers: usize, label: &str) {
    for (i, e) in events.iter().enumerate() {
        let (s1, a1, _) = pair.one.post(json!([e])).await;
        // Sent to either node: the other's partitions go over NATS.
        let (s2, a2, _) = pair.nodes[i % 2].post(json!([e])).await;
        assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
        let (r1, r2) = (&a1["results"][0], &a2["results"][0]);
        assert_eq!(
            without_times_and_codes(r1),
            without_times_and_codes(r2),
            "{label}, event {i} ({e}): one node and two differ"
        );
    }
    // Each customer, asked of either node, is their owner's answer, and one node's.
    for c in 0..customers {
        for path in [format!("/v1/users/c{c}"), format!("/v1/users/c{c}/hunts")] {
            let (s1, a1) = pair.one.get(&path).await;
            let (sa, aa) = pair.nodes[0].get(&path).await;
            let (sb, ab) = pair.nodes[1].get(&path).await;
            assert_eq!((sa, sb), (s1, s1), "{label}, {path}: {a1} {aa} {ab}");
            assert_eq!(aa, ab, "{label}, {path}: the owner's answer on both");
            assert_eq!(
                without_times_and_codes(&a1),
                without_times_and_codes(&aa),
                "{label}, {path}: one node and two differ"
            );
        }
    }
    // The figures gathered on either node are one node's.
    for path in FIGURES {
        let (s1, a1) = pair.one.get(path).await;
        let (sa, aa) = pair.nodes[0].get(path).await;
        let (sb, ab) = pair.nodes[1].get(path).await;
        assert_eq!((s1, sa, sb), (200, 200, 200), "{path}: {a1} {aa} {ab}");
        assert_eq!(figures(&a1), figures(&aa), "{label}, {path}: asked of a");
        assert_eq!(figures(&a1), figures(&ab), "{label}, {path}: asked of b");
    }
    // Each event is counted as accepted once, by the node that applied it.
    let accepted = "hunt_events_accepted_total";
    let (a, b) = (
        pair.nodes[0].counter(accepted).await,
        pair.nodes[1].counter(accepted).await,
    );
    assert_eq!(a + b, pair.one.counter(accepted).await, "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_nats_give_one_nodes_answers_to_events_queries_and_figures() {
    // (seed, customers, events, pool and cap): a pool and a cap drawn from the seed,
    // and a pool that runs out while the second node's partitions hold blocks of it
    // nobody there asks for (after the first 300 events, only customers of the first
    // node's partitions come): the codes come back through give-backs over NATS.
    for (seed, customers, count, pool) in [(7u64, 40, 300, None), (5, 150, 900, Some((60, 1000)))] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (codes, cap) = pool.unwrap_or_else(|| (3 + rng.below(20), 2 + rng.below(25)));
        let hunts = two_steps(codes, cap);
        let pair = Pair::start(&hunts, ROUTE_TIMEOUT, GATHER_TIMEOUT).await;
        pair.host_all().await;
        let events: Vec<Value> = (0..count)
            .map(|i| {
                let u = loop {
                    let u = format!("c{}", rng.below(customers));
                    if pool.is_none() || i < 300 || partition_of(&u, PARTITIONS).is_multiple_of(2) {
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
        one_and_two_agree(&pair, &events, customers as usize, &format!("seed {seed}")).await;
        let (_, stats) = pair.one.get(FIGURES[0]).await;
        eprintln!(
            "seed {seed}: pool {codes}, cap {cap}: {} granted, {} denied, the same on one node and two",
            stats["rewards_granted"], stats["rewards_denied"]
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..Default::default()
    })]

    /// The same answers, as a property: any events of a few customers, each customer's
    /// in order, any pool and cap; sent one at a time (no pool races).
    #[test]
    fn two_nodes_give_one_nodes_answers_for_any_events(
        ops in proptest::collection::vec((0u8..3, 0usize..8, 0u64..20, 0usize..1000), 10..60),
        codes in 1u64..10,
        cap in 1u64..10,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pair = Pair::start(&two_steps(codes, cap), ROUTE_TIMEOUT, GATHER_TIMEOUT).await;
            pair.host_all().await;
            let events: Vec<Value> = ops
                .iter()
                .enumerate()
                .map(|(i, &(kind, c, price, earlier))| {
                    let u = format!("c{c}");
                    match kind {
                        0 => ev(&format!("e{i}"), &u, "product_view", json!({})),
                        1 => ev(&format!("e{i}"), &u, "purchase", json!({"price": price})),
                        // An earlier event's id again (of this customer or another:
                        // a duplicate either way, answered as the first).
                        _ => ev(&format!("e{}", earlier % i.max(1)), &u, "product_view", json!({})),
                    }
                })
                .collect();
            one_and_two_agree(&pair, &events, 8, &format!("pool {codes}, cap {cap}")).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_partition_nobody_serves_are_refused_for_a_retry_and_recorded_nowhere() {
    let pair = Pair::start(&two_steps(10, 10), ROUTE_TIMEOUT, GATHER_TIMEOUT).await;
    let (a, b) = (&pair.nodes[0], &pair.nodes[1]);
    let b_serves = pair.responder_of(1);
    // Partition 1 is b's, which does not serve it yet.
    let u = customer_of(1, 0);
    let events = json!([
        ev("x1", &u, "product_view", json!({})),
        ev("x2", &u, "purchase", json!({"price": 12})),
    ]);
    let (s, v, retry) = a.post(events.clone()).await;
    assert_eq!(s, 503, "{v}");
    assert!(retry.is_some(), "a 503 says when to retry");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(
            (&r["status"], &r["code"]),
            (&json!("rejected"), &json!("moving")),
            "{v}"
        );
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("no node serves partition 1"),
            "{v}"
        );
    }
    let (s, v) = a.get(&format!("/v1/users/{u}")).await;
    assert_eq!((s, &v["error"]["code"]), (503, &json!("moving")), "{v}");
    // Nothing of it anywhere: the owner does not know the customer.
    let (s, v) = b.get(&format!("/v1/users/{u}")).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (404, &json!("unknown_user")),
        "{v}"
    );

    // Served: the same events are taken now, as new ones.
    b_serves.host(1).await.unwrap();
    let (s, v, _) = a.post(events.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 2, "taken for the first time: {v}");
    let (s, v) = a.get(&format!("/v1/users/{u}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        b.get(&format!("/v1/users/{u}")).await.1,
        "the owner's answer"
    );
    assert_eq!(v["rewards"].as_array().map(Vec::len), Some(1), "{v}");

    // Released: refused again; hosted again: taken, and the earlier ones are
    // duplicates with their first answers.
    b_serves.release(1).await;
    assert_eq!(b_serves.hosted().await, Vec::<u32>::new());
    let later = json!([ev("x3", &u, "product_view", json!({}))]);
    let (s, v, _) = a.post(later.clone()).await;
    assert_eq!(
        (s, &v["results"][0]["code"]),
        (503, &json!("moving")),
        "{v}"
    );
    b_serves.host(1).await.unwrap();
    let (s, v, _) = a.post(later).await;
    assert_eq!((s, &v["accepted"]), (200, &json!(1)), "{v}");
    let (s, v, _) = a.post(events).await;
    assert_eq!((s, &v["duplicates"]), (200, &json!(2)), "{v}");

    // An owner that takes the request and never answers: refused once the wait is
    // over; the events are not applied (nobody applies them) and go through later.
    let u3 = customer_of(3, 0);
    let client = async_nats::connect(pair.urls.clone()).await.unwrap();
    let mut silent = client.subscribe(pair.subjects.partition(3)).await.unwrap();
    subscribed(&client).await.unwrap();
    let silent_events = json!([ev("y1", &u3, "product_view", json!({}))]);
    let (s, v, _) = a.post(silent_events.clone()).await;
    assert_eq!(
        (s, &v["results"][0]["code"]),
        (503, &json!("moving")),
        "{v}"
    );
    let reason = v["results"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("did not answer"), "{v}");
    assert!(
        tokio::time::timeout(ROUTE_TIMEOUT, silent.next())
            .await
            .is_ok_and(|m| m.is_some()),
        "the request reached the silent one"
    );
    silent.unsubscribe().await.unwrap();
    b_serves.host(3).await.unwrap();
    let (s, v, _) = a.post(silent_events).await;
    assert_eq!((s, &v["accepted"]), (200, &json!(1)), "{v}");

    // A node that does not apply a partition does not serve it.
    assert!(b_serves.host(2).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_name_the_nodes_that_did_not_answer() {
    let mut pair = Pair::start(&two_steps(10, 10), ROUTE_TIMEOUT, GATHER_TIMEOUT).await;
    pair.host_all().await;
    // Two customers on each node complete the hunt.
    for (k, p) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let u = customer_of(p, k);
        let events = json!([
            ev(&format!("{u}-1"), &u, "product_view", json!({})),
            ev(&format!("{u}-2"), &u, "purchase", json!({"price": 15})),
        ]);
        let (s, v, _) = pair.nodes[0].post(events).await;
        assert_eq!((s, &v["accepted"]), (200, &json!(2)), "{v}");
    }
    let (_, all) = pair.nodes[0].get(FIGURES[0]).await;
    assert_eq!(all["completions"], 4, "{all}");
    assert!(all.get("partial").is_none(), "every node answered: {all}");

    // b stops answering: a's figures are its own share, and say b's is missing.
    pair.responders[1].take().unwrap().stop().await;
    let mut answers = Vec::new();
    for path in FIGURES {
        let (s, v) = pair.nodes[0].get(path).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["partial"], json!(["b"]), "{path}: {v}");
        answers.push(v);
    }
    let [mine, w, pools] = &answers[..] else {
        unreachable!("one answer per path")
    };
    assert_eq!(mine["completions"], 2, "{mine}");
    assert_eq!(w["total"], 2, "{w}");
    assert_eq!(
        pools["pools"][0]["remaining"], 8,
        "b's two codes are not counted: {pools}"
    );

    // b answers again: whole once more.
    let r = pair.responder(1).await;
    pair.responders[1] = Some(r);
    let (_, again) = pair.nodes[0].get(FIGURES[0]).await;
    assert_eq!(again, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_released_under_load_answers_what_it_took_and_refuses_the_rest() {
    let pair = Pair::start(&two_steps(10, 10), ROUTE_TIMEOUT, GATHER_TIMEOUT).await;
    pair.host_all().await;
    let (a, b_serves) = (&pair.nodes[0], pair.responder_of(1));
    // Each event a customer of b's partition 1 of its own, sent through a in six
    // lanes, each one event at a time, while b releases the partition once the first
    // is answered: some are in flight then, and the later ones find no responder.
    let events: Vec<Value> = (0..60)
        .map(|k| {
            ev(
                &format!("z{k}"),
                &customer_of(1, k),
                "product_view",
                json!({}),
            )
        })
        .collect();
    let first = tokio::sync::Notify::new();
    let (first, all) = (&first, &events);
    let lanes = futures_util::future::join_all((0..6).map(|lane| async move {
        let mut answers = Vec::new();
        for (k, e) in all.iter().enumerate().skip(lane).step_by(6) {
            answers.push((k, a.post(json!([e])).await));
            first.notify_one();
        }
        answers
    }));
    let release = async {
        first.notified().await;
        b_serves.release(1).await;
    };
    let (lanes, ()) = tokio::join!(lanes, release);
    let mut answers: Vec<_> = lanes.into_iter().flatten().collect();
    answers.sort_by_key(|(k, _)| *k);
    let answers = answers.into_iter().map(|(_, a)| a);
    // Each answer is the truth: taken means recorded (a retry is a duplicate), and
    // refused means nothing recorded (a retry is taken).
    b_serves.host(1).await.unwrap();
    let (mut taken, mut refused) = (0, 0);
    for (e, (s, v, _)) in events.iter().zip(answers) {
        let (again_s, again, _) = a.post(json!([e])).await;
        assert_eq!(again_s, 200, "{again}");
        match (s, v["results"][0]["code"].as_str()) {
            (200, None) => {
                taken += 1;
                assert_eq!(again["duplicates"], 1, "taken, so recorded: {v} {again}");
            }
            (503, Some("moving")) => {
                refused += 1;
                assert_eq!(
                    again["accepted"], 1,
                    "refused, so not recorded: {v} {again}"
                );
            }
            _ => panic!("neither taken nor refused for a retry: {s} {v}"),
        }
    }
    eprintln!("{taken} taken before the release, {refused} refused after it");
    assert!(taken > 0);
}

#[test]
fn events_over_a_message_are_cut_in_order_into_requests_that_fit() {
    let events: Vec<(usize, Event)> = (0..50)
        .map(|i| {
            let e = ev(
                &format!("e{i}"),
                "u",
                "product_view",
                json!({"n": "x".repeat(i)}),
            );
            (i, serde_json::from_value(e).unwrap())
        })
        .collect();
    let max = ENVELOPE_BYTES + 600;
    let parts = requests(events.clone(), max);
    assert!(parts.len() > 1, "cut: {}", parts.len());
    for part in &parts {
        let request = serde_json::to_vec(&Request::Events {
            events: part.clone(),
        })
        .unwrap();
        assert!(request.len() <= max, "{} bytes", request.len());
    }
    let again: Vec<(usize, Event)> = parts.into_iter().flatten().collect();
    assert_eq!(again, events, "every event once, in order");
    // Under the limit: one request.
    assert_eq!(requests(events, 1 << 20).len(), 1);
}
