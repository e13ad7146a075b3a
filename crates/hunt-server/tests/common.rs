//! A server on 127.0.0.1 (an ephemeral port) over a temporary data directory, and a
//! client for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hunt_core::ingest::Limits;
use hunt_server::auth::Keys;
use hunt_server::http::HttpConfig;
use hunt_server::server::{Running, ServeConfig, start};
use hunt_server::service::EngineConfig;
use serde_json::Value;

/// Three eggs in any order; a pool of 3 codes.
pub const EGGS: &str = r#"
version: 1
pools:
  - id: welcome
    codes: [W-1, W-2, W-3]
hunts:
  - id: eggs
    title: Three eggs
    steps:
      - { id: shoes, on: product_view, when: 'event.data.category == "shoes"', clue: Look at shoes. }
      - { id: blog, on: page_view, when: 'event.data.url == "/blog"', clue: Read the blog. }
      - { id: search, on: search, when: 'event.data.query.contains("egg")', clue: Search for eggs. }
    reward: { pool: welcome, per_user: 1 }
"#;

pub struct Options {
    pub hunts: Option<String>,
    pub partitions: usize,
    pub keys: Keys,
    pub limits: Limits,
    pub rate_per_user: Option<u32>,
    pub rate_per_key: Option<u32>,
    pub backlog_events_max: usize,
    pub dedupe_entries_max: usize,
    pub snapshot_every_events: u64,
    pub alerts: Option<hunt_server::alerts::AlertsConfig>,
    pub sink_queue_max: usize,
    pub sink_dlq_max: usize,
    /// `--apply-config`: the tests here start again with a new file to switch to it.
    pub apply_hunts: bool,
    /// Pools from this escrow, as on a cluster (the log then in `<dir>/log`).
    pub escrow: Option<std::sync::Arc<dyn hunt_server::escrow::EscrowBackend>>,
    /// The partitions this node applies, and the router to the others.
    pub spread: Option<hunt_server::route::Spread>,
    /// With `escrow`: this log, shared with other "nodes" of the test (as a cluster's
    /// stream is), instead of one in `<dir>/log`.
    pub shared_log: Option<std::sync::Arc<dyn hunt_store::PartitionLog>>,
    /// With `escrow`: where each partition's own snapshot goes.
    pub part_snapshots: Option<std::sync::Arc<dyn hunt_store::PartSnapshots>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            hunts: Some(EGGS.to_string()),
            partitions: 4,
            keys: Keys::default(),
            limits: Limits::default(),
            rate_per_user: None,
            rate_per_key: None,
            backlog_events_max: 100_000,
            dedupe_entries_max: 1_000_000,
            snapshot_every_events: 1_000_000,
            alerts: None,
            sink_queue_max: 100_000,
            sink_dlq_max: 1_000_000,
            apply_hunts: true,
            escrow: None,
            spread: None,
            shared_log: None,
            part_snapshots: None,
        }
    }
}

pub struct Server {
    #[allow(dead_code)]
    pub addr: SocketAddr,
    pub url: String,
    pub client: reqwest::Client,
    running: tokio::sync::Mutex<Option<Running>>,
    pub key: Option<String>,
}

impl Server {
    /// Starts a server on `dir` and waits until it is ready.
    pub async fn start(dir: &Path, o: Options) -> Server {
        Server::try_start(dir, o).await.expect("server starts")
    }

    /// Starts a server on `dir` again, with the hunts file its log holds.
    #[allow(dead_code)]
    pub async fn start_again(dir: &Path) -> Server {
        Server::start(
            dir,
            Options {
                hunts: None,
                ..Options::default()
            },
        )
        .await
    }

    pub async fn try_start(dir: &Path, o: Options) -> Result<Server, String> {
        let mut engine = EngineConfig::new(dir);
        engine.partitions = o.partitions;
        engine.backlog_events_max = o.backlog_events_max;
        engine.dedupe.entries_max = o.dedupe_entries_max;
        engine.snapshot_every_events = o.snapshot_every_events;
        engine.sink_queue_max = o.sink_queue_max;
        engine.sink_dlq_max = o.sink_dlq_max;
        engine.apply_hunts_file = o.apply_hunts;
        engine.spread = o.spread;
        if let Some(escrow) = o.escrow {
            // As on a cluster: a log given from outside, and pools from the escrow.
            let log: std::sync::Arc<dyn hunt_store::PartitionLog> = match o.shared_log {
                Some(log) => log,
                None => std::sync::Arc::new(
                    hunt_store::Log::open(
                        std::sync::Arc::new(hunt_store::fs::RealFs),
                        hunt_store::LogConfig::new(dir.join("log")),
                    )
                    .map_err(|e| e.to_string())?
                    .0,
                ),
            };
            engine.provided_log = Some(hunt_server::service::ProvidedLog {
                log,
                name: "a log given from outside".into(),
                snapshots: None,
                part_snapshots: o.part_snapshots,
                tenure: None,
                metrics: None,
                escrow: Some(escrow),
                escrow_grants: Default::default(),
                cluster_view: None,
            });
        }
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine,
            http: HttpConfig {
                limits: o.limits,
                keys: o.keys,
                rate_per_key: o.rate_per_key.and_then(std::num::NonZeroU32::new),
                rate_per_user: o.rate_per_user.and_then(std::num::NonZeroU32::new),
                conn: Default::default(),
            },
            hunts: o.hunts.map(|t| ("hunts.yaml".to_string(), t)),
            alerts: o.alerts,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        hunt_server::notify::install_tls_provider();
        let running = start(config, listener).await?;
        let s = Server {
            addr,
            url: format!("http://{addr}"),
            // A test must fail, never hang: every request has a deadline.
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            running: tokio::sync::Mutex::new(Some(running)),
            key: None,
        };
        // Ready once the log is replayed, or the start failed.
        for _ in 0..500 {
            if let Ok(r) = s.client.get(format!("{}/readyz", s.url)).send().await
                && r.status() == 200
            {
                return Ok(s);
            }
            let mut running = s.running.lock().await;
            if running.as_ref().is_some_and(|r| r.is_finished()) {
                let r = running.take().unwrap();
                let ended = r.run_until(std::future::pending()).await;
                return Err(ended.err().unwrap_or_else(|| "stopped at once".into()));
            }
            drop(running);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("server not ready after 5 s");
    }

    /// The running engine.
    #[allow(dead_code)]
    pub async fn service(&self) -> std::sync::Arc<hunt_server::service::Service> {
        self.running
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.service())
            .expect("a running server has its service")
    }

    /// Graceful stop (as on SIGTERM); returns how it ended.
    pub async fn stop(&self) -> Result<(), String> {
        let running = self.running.lock().await.take();
        match running {
            Some(r) => {
                tokio::time::timeout(std::time::Duration::from_secs(60), r.run_until(async {}))
                    .await
                    .expect("the server did not stop within 60 s")
            }
            None => Ok(()),
        }
    }

    /// Ends the server without a clean stop: no final snapshot (as after a crash of the
    /// process; the log itself is closed as the process would leave it).
    #[allow(dead_code)]
    pub async fn abort(&self) {
        if let Some(r) = self.running.lock().await.take() {
            r.kill().await;
        }
    }

    fn with_key(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => b.bearer_auth(k),
            None => b,
        }
    }

    /// Posts a body with a content type; returns status, headers and JSON (or Null).
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut b = self
            .client
            .post(format!("{}/v1/events", self.url))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = self.with_key(b).send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, events: Value) -> (u16, Value) {
        let (s, _, v) = self
            .post_raw(events.to_string(), "application/json", &[])
            .await;
        (s, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .with_key(self.client.get(format!("{}{path}", self.url)))
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }

    /// Posts JSON to any path.
    #[allow(dead_code)]
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .with_key(
                self.client
                    .post(format!("{}{path}", self.url))
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            )
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// The text of `/metrics`.
    #[allow(dead_code)]
    pub async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("request sent");
        r.text().await.unwrap()
    }

    pub async fn put_config(&self, text: &str) -> (u16, Value) {
        self.put_config_with(text, "").await
    }

    /// `PUT /v1/config?<query>`.
    pub async fn put_config_with(&self, text: &str, query: &str) -> (u16, Value) {
        let r = self
            .with_key(
                self.client
                    .put(format!("{}/v1/config?{query}", self.url))
                    .body(text.to_string()),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }
}

/// An event as JSON.
pub fn ev(id: &str, user: &str, kind: &str, data: Value) -> Value {
    serde_json::json!({"id": id, "user": user, "type": kind, "data": data})
}

/// The three events that complete the eggs hunt for `user` (ids `<user>-1..3`).
pub fn three_eggs(user: &str) -> Vec<Value> {
    vec![
        ev(
            &format!("{user}-1"),
            user,
            "product_view",
            serde_json::json!({"category": "shoes"}),
        ),
        ev(
            &format!("{user}-2"),
            user,
            "page_view",
            serde_json::json!({"url": "/blog"}),
        ),
        ev(
            &format!("{user}-3"),
            user,
            "search",
            serde_json::json!({"query": "an egg"}),
        ),
    ]
}

/// The `kind`s of an answer's outcomes for event `i`.
pub fn kinds(answer: &Value, i: usize) -> Vec<String> {
    answer["results"][i]["outcomes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The whole binary takes seconds; if it is still running after this, something hangs
/// (one such hang was seen once) and the process ends itself with a
/// message rather than holding CI until its limit.
const BINARY_SECS_MAX: u64 = 600;

fn watchdog() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(BINARY_SECS_MAX));
            eprintln!("the server tests are still running after {BINARY_SECS_MAX} s: aborting");
            std::process::abort();
        });
    });
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    watchdog();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("data");
    (d, p)
}
