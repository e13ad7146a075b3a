//! Notifications through a real receiver on 127.0.0.1 that answers, fails, hangs and
//! recovers: signed CloudEvents, the circuit breaker, the dead-letter queue, retries
//! with the same keys, and restarts in the middle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hunt_server::notify::signature;
use serde_json::{Value, json};

use crate::common::{Options, Server, ev, tempdir};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Answer,
    Fail,
    Hang,
}

/// What the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
struct Got {
    key: String,
    body: Value,
    signed: bool,
}

#[derive(Default)]
struct Inner {
    mode: Option<Mode>,
    got: Vec<Got>,
    /// Requests seen in any mode.
    seen: usize,
    /// Alerts posted to `/alerts`.
    alerts: Vec<Value>,
}

#[derive(Clone)]
struct Receiver {
    inner: Arc<Mutex<Inner>>,
    secret: &'static [u8],
    url: String,
}

impl Receiver {
    async fn start(secret: &'static [u8]) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            mode: Some(Mode::Answer),
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver { inner, secret, url };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .route("/alerts", axum::routing::post(alert_hook))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn set(&self, m: Mode) {
        self.inner.lock().unwrap().mode = Some(m);
    }

    fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().got.clone()
    }

    fn seen(&self) -> usize {
        self.inner.lock().unwrap().seen
    }
}

async fn alert_hook(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.inner.lock().unwrap().alerts.push(v);
    StatusCode::OK
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mode = {
        let mut i = r.inner.lock().unwrap();
        i.seen += 1;
        i.mode.unwrap()
    };
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Fail => StatusCode::SERVICE_UNAVAILABLE,
        Mode::Answer => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let signed = headers
                .get(signature::HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|h| signature::verify(r.secret, h, &body, now, 300).is_ok());
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            r.inner.lock().unwrap().got.push(Got { key, body, signed });
            StatusCode::OK
        }
    }
}

fn hunts(url: &str, secret_env: &str) -> String {
    format!(
        r#"
version: 1
pools:
  - id: p
    generate: {{ prefix: "C-", count: 1000 }}
sinks:
  - id: crm
    url: "{url}"
    timeout: 300ms
    secret_env: {secret_env}
    max_attempts: 3
    breaker_failures: 3
    breaker_open_for: 200ms
hunts:
  - id: claim
    steps: [{{ id: s, on: claim }}]
    reward: {{ pool: p }}
    notify: [crm]
"#
    )
}

/// Each claim gives three outcomes: the step found, the hunt completed, the reward.
const PER_CLAIM: usize = 3;

async fn claim(s: &Server, user: &str) {
    let (status, body) = s
        .post(json!([ev(&format!("{user}-c"), user, "claim", json!({}))]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted", "{body}");
}

/// Polls `f` every 20 ms for up to 30 s.
async fn until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, mut f: F) {
    for _ in 0..1500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn dlq(s: &Server) -> Value {
    let (status, v) = s.get("/v1/dlq?limit=1000").await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hanging_then_recovering_sink_loses_nothing_and_blocks_nothing() {
    const SECRET: &[u8] = b"whsec-test-notify-0123456789";
    const VAR: &str = "HUNT_TEST_NOTIFY_SECRET";
    // SAFETY: set once, before any server of this test reads it; no other test uses it.
    unsafe { std::env::set_var(VAR, std::str::from_utf8(SECRET).unwrap()) };
    let rx = Receiver::start(SECRET).await;
    let (_tmp, dir) = tempdir();
    let opts = || Options {
        hunts: Some(hunts(&rx.url, VAR)),
        ..Options::default()
    };
    let s = Server::start(&dir, opts()).await;

    // Healthy: each outcome arrives once, as a signed CloudEvent keyed by its id.
    claim(&s, "ann").await;
    until("ann's outcomes delivered", || async {
        rx.got().len() >= PER_CLAIM
    })
    .await;
    // Sent concurrently: in any order (the key says which outcome of which event).
    let mut got = rx.got();
    got.sort_by(|a, b| a.key.cmp(&b.key));
    let types: Vec<&str> = got
        .iter()
        .map(|g| g.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["hunt.step.found", "hunt.completed", "hunt.reward.granted"]
    );
    for g in &got {
        assert!(g.signed, "the signature verifies: {g:?}");
        assert_eq!(g.body["id"], g.key.as_str(), "the CloudEvent id is the key");
        assert_eq!(g.body["subject"], "ann");
    }
    assert_eq!(got[2].body["data"]["code"], "C-0001");

    // Hanging: ingestion goes on answering; the breaker opens.
    rx.set(Mode::Hang);
    for u in ["bob", "cat"] {
        claim(&s, u).await;
    }
    until("the breaker opens", || async {
        gauge(&s.metrics().await, "hunt_sink_breaker_state{sink=\"crm\"}") == Some(2.0)
    })
    .await;
    for u in ["dan", "eve"] {
        claim(&s, u).await;
    }

    // Failing fast: the last attempts fail and every one of them reaches the DLQ.
    rx.set(Mode::Fail);
    let waiting = 4 * PER_CLAIM;
    until("all of them dead-lettered", || async {
        dlq(&s).await["total"] == waiting
    })
    .await;
    let before = dlq(&s).await;
    for e in before["entries"].as_array().unwrap() {
        assert_eq!(e["attempts"], 3, "{e}");
        let errors: Vec<&str> = e["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["error"].as_str().unwrap())
            .collect();
        assert!(
            errors.last().unwrap().contains("no attempts left (3 of 3)"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.contains("503") || e.contains("no answer within 300 ms")),
            "{errors:?}"
        );
    }
    let m = s.metrics().await;
    assert_eq!(
        gauge(&m, "hunt_sink_dead_letters{sink=\"crm\"}"),
        Some(waiting as f64)
    );

    // A crash (no final snapshot): the DLQ, with its history, is rebuilt from the log.
    s.abort().await;
    let s = Server::start(&dir, opts()).await;
    let after = dlq(&s).await;
    assert_eq!(after, before, "the same dead letters after a restart");
    // And from the snapshot a clean stop takes.
    s.stop().await.unwrap();
    let s = Server::start(&dir, opts()).await;
    assert_eq!(
        dlq(&s).await,
        before,
        "the same dead letters from the snapshot"
    );

    // Recovered: retry-all delivers each dead letter once, with its key.
    rx.set(Mode::Answer);
    let (status, v) = s.post_json("/v1/dlq/retry", json!({"all": true})).await;
    assert_eq!((status, &v["retried"]), (200, &json!(waiting)), "{v}");
    until("the retried ones delivered", || async {
        rx.got().len() >= PER_CLAIM + waiting
    })
    .await;
    until("the breaker closes", || async {
        gauge(&s.metrics().await, "hunt_sink_breaker_state{sink=\"crm\"}") == Some(0.0)
    })
    .await;
    assert_eq!(dlq(&s).await["total"], 0);
    let dead_keys: Vec<&str> = before["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for g in rx.got() {
        assert!(g.signed);
        // Dead letters keep no body in memory: it is rebuilt from the event's record,
        // and must be the CloudEvent first sent.
        assert_eq!(g.body["id"], g.key.as_str(), "{g:?}");
        assert_eq!(g.body["specversion"], "1.0", "{g:?}");
        *counts.entry(g.key).or_default() += 1;
    }
    for k in &dead_keys {
        assert_eq!(counts.get(*k), Some(&1), "{k} delivered once, with its key");
    }

    // Pending when the server stops: delivered after the restart.
    rx.set(Mode::Hang);
    claim(&s, "fay").await;
    until("fay's deliveries attempted", || async { rx.seen() > 0 }).await;
    s.abort().await;
    rx.set(Mode::Answer);
    let s = Server::start(&dir, opts()).await;
    until("fay's outcomes delivered after the restart", || async {
        rx.got()
            .iter()
            .filter(|g| g.body["subject"] == "fay")
            .count()
            >= PER_CLAIM
    })
    .await;
    // Nothing lost, nothing doubled: every key of every outcome exactly once (no 2xx
    // answer was ever cut off by a crash here, so at-least-once is exactly once).
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for g in rx.got() {
        *counts.entry(g.key).or_default() += 1;
    }
    assert_eq!(counts.len(), 6 * PER_CLAIM, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // Nothing left anywhere.
    let (status, v) = s.get(&format!("/v1/dlq/{}", dead_keys[0])).await;
    assert_eq!(status, 404, "{v}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_filtered_and_dropped() {
    let rx = Receiver::start(b"unused-secret-0123456789").await;
    rx.set(Mode::Fail);
    let (_tmp, dir) = tempdir();
    let text = hunts(&rx.url, "HUNT_TEST_UNSET_SECRET_VARIABLE")
        .replace("    secret_env: HUNT_TEST_UNSET_SECRET_VARIABLE\n", "")
        .replace("max_attempts: 3", "max_attempts: 1");
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(text),
            ..Options::default()
        },
    )
    .await;
    claim(&s, "ann").await;
    until("dead-lettered", || async {
        dlq(&s).await["total"] == PER_CLAIM
    })
    .await;
    let list = dlq(&s).await;
    let first = list["entries"][0]["id"].as_str().unwrap().to_string();
    let (status, one) = s.get(&format!("/v1/dlq/{first}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["state"], "dead");
    assert_eq!(one["event"]["id"], first.as_str(), "the CloudEvent sent");
    assert!(
        one["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{one}"
    );
    // Filters.
    assert_eq!(s.get("/v1/dlq?sink=other").await.1["total"], 0);
    assert_eq!(s.get("/v1/dlq?hunt=claim").await.1["total"], PER_CLAIM);
    assert_eq!(
        s.get("/v1/dlq?since=2999-01-01T00:00:00Z").await.1["total"],
        0
    );
    let (status, v) = s.get("/v1/dlq?since=yesterday").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("since"));
    // A selection is required, and only one kind of it.
    let (status, v) = s.post_json("/v1/dlq/drop", json!({})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("no_selection"))
    );
    let (status, v) = s
        .post_json("/v1/dlq/drop", json!({"id": first, "all": true}))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_selection"))
    );
    let (status, v) = s.post_json("/v1/dlq/drop", json!({"ids": [1]})).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = s
        .post_json("/v1/dlq/retry", json!({"id": "9.9.nothing"}))
        .await;
    assert_eq!(status, 404);
    // Drop one by id, then the rest by filter.
    let (status, v) = s.post_json("/v1/dlq/drop", json!({"id": first})).await;
    assert_eq!((status, &v["dropped"]), (200, &json!(1)), "{v}");
    let (status, v) = s
        .post_json("/v1/dlq/drop", json!({"sink": "crm", "hunt": "claim"}))
        .await;
    assert_eq!((status, &v["dropped"]), (200, &json!(PER_CLAIM - 1)), "{v}");
    assert_eq!(dlq(&s).await["total"], 0);
    // Dropped stays dropped across a restart from the log.
    s.abort().await;
    let s = Server::start(
        &dir,
        Options {
            hunts: None,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(dlq(&s).await["total"], 0);
    assert_eq!(rx.got().len(), 0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_and_resolve_in_the_api_metrics_and_webhook() {
    let rx = Receiver::start(b"unused-secret-0123456789").await;
    rx.set(Mode::Fail);
    let (_tmp, dir) = tempdir();
    let text = hunts(&rx.url, "X")
        .replace("    secret_env: X\n", "")
        .replace("max_attempts: 3", "max_attempts: 1")
        .replace("count: 1000", "count: 4");
    let alerts_url = rx.url.replace("/hook", "/alerts");
    let alerts = hunt_server::alerts::AlertsConfig::parse(&format!(
        r#"
every: 50ms
webhook: {{ url: "{alerts_url}" }}
rules:
  - {{ name: dlq, dead_letters_over: 0, sink: crm }}
  - {{ name: crm_down, breaker_open_for: 100ms }}
  - {{ name: codes_low, pool_below_percent: 50 }}
  - {{ name: codes_soon_gone, pool_runs_out_within: 1h, window: 2s }}
  - {{ name: backlog, backlog_over: 1000000, for: 1m }}
"#
    ))
    .unwrap();
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(text),
            alerts: Some(alerts),
            ..Options::default()
        },
    )
    .await;
    let firing = |v: &Value, alert: &str| {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert"] == alert && a["state"] == "firing")
    };
    let (status, v) = s.get("/v1/alerts").await;
    assert_eq!((status, &v["firing"]), (200, &json!(0)), "{v}");
    for u in ["ann", "bob", "cat"] {
        claim(&s, u).await;
    }
    until(
        "dead letters, a breaker, a pool low and running out",
        || async {
            let v = s.get("/v1/alerts").await.1;
            ["dlq", "crm_down", "codes_low", "codes_soon_gone"]
                .iter()
                .all(|a| firing(&v, a))
        },
    )
    .await;
    let (_, v) = s.get("/v1/alerts").await;
    assert!(!firing(&v, "backlog"), "{v}");
    assert_eq!(v["rules"].as_array().unwrap().len(), 5);
    let m = s.metrics().await;
    assert_eq!(
        gauge(&m, "hunt_alert_firing{alert=\"dlq\",subject=\"crm\"}"),
        Some(1.0)
    );
    assert_eq!(
        gauge(&m, "hunt_alert_firing{alert=\"codes_low\",subject=\"p\"}"),
        Some(1.0)
    );
    until("the webhook told of the dead letters", || async {
        rx.inner
            .lock()
            .unwrap()
            .alerts
            .iter()
            .any(|a| a["alert"] == "dlq" && a["status"] == "firing" && a["subject"] == "crm")
    })
    .await;
    // Every delivery settled in the dead-letter queue first: one still in flight when
    // the retry is made would be dead-lettered after it and keep the alert firing.
    until("all nine dead-lettered", || async {
        dlq(&s).await["total"] == 3 * PER_CLAIM
    })
    .await;
    // The sink recovers and its dead letters are retried: both alerts resolve.
    rx.set(Mode::Answer);
    let (status, _) = s.post_json("/v1/dlq/retry", json!({"sink": "crm"})).await;
    assert_eq!(status, 200);
    until("resolved", || async {
        let v = s.get("/v1/alerts").await.1;
        !firing(&v, "dlq") && !firing(&v, "crm_down")
    })
    .await;
    until("the webhook told of the resolution", || async {
        rx.inner
            .lock()
            .unwrap()
            .alerts
            .iter()
            .any(|a| a["alert"] == "dlq" && a["status"] == "resolved")
    })
    .await;
    let m = s.metrics().await;
    assert_eq!(
        gauge(&m, "hunt_alert_firing{alert=\"dlq\",subject=\"crm\"}"),
        Some(0.0)
    );
    // A new hunts file with another pool: the old pool's alerts go (resolved first,
    // since `codes_low` was firing), the new pool's come.
    let text = hunts(&rx.url, "X")
        .replace("    secret_env: X\n", "")
        .replace("  - id: p\n", "  - id: q\n")
        .replace("reward: { pool: p }", "reward: { pool: q }");
    let (status, v) = s.put_config(&text).await;
    assert_eq!(status, 200, "{v}");
    until("the old pool's alerts gone", || async {
        let v = s.get("/v1/alerts").await.1;
        let subjects: Vec<&str> = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["subject"].as_str().unwrap())
            .collect();
        !subjects.contains(&"p") && subjects.contains(&"q")
    })
    .await;
    until("the webhook told `codes_low` resolved", || async {
        rx.inner
            .lock()
            .unwrap()
            .alerts
            .iter()
            .any(|a| a["alert"] == "codes_low" && a["subject"] == "p" && a["status"] == "resolved")
    })
    .await;
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sinks_queue_and_dead_letters_are_bounded() {
    let rx = Receiver::start(b"unused-secret-0123456789").await;
    rx.set(Mode::Hang);
    let (_tmp, dir) = tempdir();
    // Attempts enough that the two waiting ones outlast the hang, however long it takes.
    let text = hunts(&rx.url, "X")
        .replace("    secret_env: X\n", "")
        .replace("max_attempts: 3", "max_attempts: 1000");
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(text),
            sink_queue_max: 2,
            sink_dlq_max: 4,
            ..Options::default()
        },
    )
    .await;
    for u in ["ann", "bob", "cat"] {
        claim(&s, u).await;
    }
    // 9 deliveries: 2 wait (in flight, hanging), 7 overflow into the dead-letter queue,
    // which keeps its newest 4 and evicts 3.
    until("overflow dead-lettered and the oldest evicted", || async {
        gauge(
            &s.metrics().await,
            "hunt_sink_deliveries_total{sink=\"crm\",result=\"evicted\"}",
        ) == Some(3.0)
    })
    .await;
    let list = dlq(&s).await;
    assert_eq!(list["total"], 4, "{list}");
    for e in list["entries"].as_array().unwrap() {
        assert_eq!(e["attempts"], 1, "{e}");
        assert!(
            e["last_error"]
                .as_str()
                .unwrap()
                .contains("already had 2 deliveries waiting"),
            "{e}"
        );
    }
    let kept: Vec<String> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let m = s.metrics().await;
    assert_eq!(gauge(&m, "hunt_sink_queue_depth{sink=\"crm\"}"), Some(2.0));
    assert_eq!(gauge(&m, "hunt_sink_dead_letters{sink=\"crm\"}"), Some(4.0));
    // The same after a crash: evictions are in the log. The receiver is back by then.
    s.abort().await;
    rx.set(Mode::Answer);
    let s = Server::start(
        &dir,
        Options {
            hunts: None,
            sink_queue_max: 2,
            sink_dlq_max: 4,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(dlq(&s).await["total"], 4);
    // The two waiting ones arrive, then the kept dead letters on retry.
    until("the two waiting delivered", || async {
        rx.got().len() == 2
    })
    .await;
    let (status, _) = s.post_json("/v1/dlq/retry", json!({"all": true})).await;
    assert_eq!(status, 200);
    until("the kept dead letters delivered", || async {
        rx.got().len() == 2 + 4
    })
    .await;
    let got: Vec<String> = rx.got().into_iter().map(|g| g.key).collect();
    assert!(kept.iter().all(|k| got.contains(k)), "{kept:?} in {got:?}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_without_its_secret_sends_nothing_and_its_dead_letters_say_so() {
    let rx = Receiver::start(b"unused-secret-0123456789").await;
    let (_tmp, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(hunts(&rx.url, "HUNT_TEST_NEVER_SET_SECRET_VARIABLE")),
            ..Options::default()
        },
    )
    .await;
    claim(&s, "ann").await;
    until("dead-lettered", || async {
        dlq(&s).await["total"] == PER_CLAIM
    })
    .await;
    let list = dlq(&s).await;
    for e in list["entries"].as_array().unwrap() {
        let error = e["last_error"].as_str().unwrap();
        assert!(
            error.contains("HUNT_TEST_NEVER_SET_SECRET_VARIABLE is not set"),
            "{error}"
        );
        assert!(error.contains("set the variable"), "{error}");
        assert!(
            !error.contains("receiver refused"),
            "nothing was sent, so nothing was refused: {error}"
        );
        assert_eq!(e["attempts"], 1, "not tried again: {e}");
    }
    assert!(
        rx.inner.lock().unwrap().got.is_empty(),
        "nothing unsigned reached the receiver"
    );
    s.stop().await.unwrap();
}
