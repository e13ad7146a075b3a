//! Durable ingest through real HTTP on 127.0.0.1, against the disk's own limit.
//!
//! Per round, interleaved: the server with batches of 500 events from a few clients
//! (throughput); raw `write + fdatasync` of one small record in a loop (the disk's
//! latency floor); then single-event requests from 64 clients (acknowledgement
//! latency). Each scenario gets a fresh server and data directory; the server runs in
//! this process on its own runtime (2 threads), the clients on another (2 threads). 20
//! hunts of 5 steps; generated shopper traffic over 1 M customers; durability fsync.
//!
//! `cargo bench -p hunt-bench --bench ingest` (HUNT_BENCH_ROUNDS, default 3;
//! HUNT_BENCH_SECS, default 5; HUNT_BENCH_BATCH_CLIENTS, default 4;
//! HUNT_BENCH_PARTITIONS, default 8; HUNT_BENCH_SNAPSHOT_EVERY, default none: a
//! snapshot every so many events, to see what one costs under load). HUNT_BENCH_NO_FSYNC=1 runs the server without
//! fdatasync — not durable, for diagnosis only: it shows how much of a figure is the
//! disk's.
//!
//! HUNT_BENCH_SINK=1 measures something else: every hunt notifies one webhook sink, and
//! each round runs batches and single events with a healthy receiver (it answers 200 at
//! once), with a hanging one (it never answers), and without the sink (for reference),
//! in turning order, to show that a dead sink does not slow ingestion.
//!
//! HUNT_BENCH_COMPARE=1 runs the comparison: the same events in batches of 500 from the
//! same number of clients, through the engine (durable, over HTTP), NATS JetStream
//! (async publish with acks to a file-storage stream on 127.0.0.1:4222), PostgreSQL
//! (batched INSERT into a jsonb table, synchronous_commit on, 127.0.0.1:5432, database
//! `test`), and the raw limit (write + fdatasync of the engine's average commit), in
//! turning order per round; then medians and the ratios. It creates and drops its own
//! stream, table and files (HUNT_BENCH_NATS and HUNT_BENCH_POSTGRES override where).
//!
//! HUNT_BENCH_DLQ=N measures what N dead letters cost in memory (resident set, before
//! and after filling an outbox the way an overflowing sink does).
//!
//! HUNT_BENCH_STATE=N applies N events of the bench's traffic (every customer hunting)
//! to one partition, without HTTP or the log, and prints the heap bytes of customers'
//! state and of the dedupe window, counted by the allocator.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hunt_core::ingest::Limits;
use hunt_core::stats::percentile;
use hunt_core::traffic::{TrafficSpec, bench_hunts_file, generate};
use hunt_server::auth::Keys;
use hunt_server::http::HttpConfig;
use hunt_server::server::{ServeConfig, serve};
use hunt_server::service::EngineConfig;
use hyper::body::Bytes;
use tokio::sync::oneshot;

/// The allocator `hunt serve` runs with (docs/adr/0006). In the memory mode only, it
/// also counts the bytes handed out and not yet given back: one counter shared by all
/// threads would slow the other modes' allocations.
#[global_allocator]
static ALLOC: Counting = Counting(mimalloc::MiMalloc, AtomicUsize::new(0));
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Counting(mimalloc::MiMalloc, AtomicUsize);

impl Counting {
    fn add(&self, n: usize) {
        if COUNTING.load(Ordering::Relaxed) {
            self.1.fetch_add(n, Ordering::Relaxed);
        }
    }
    fn sub(&self, n: usize) {
        if COUNTING.load(Ordering::Relaxed) {
            self.1.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.add(layout.size());
        // SAFETY: the caller's contract is mimalloc's.
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        self.sub(layout.size());
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.add(layout.size());
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        self.add(new);
        self.sub(layout.size());
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new) }
    }
}

/// Bytes allocated and not freed since counting began (wrapping: frees of earlier
/// allocations count too, so only differences mean anything).
fn live() -> usize {
    ALLOC.1.load(Ordering::Relaxed)
}

type Full = http_body_util::Full<Bytes>;
type Conn = hyper::client::conn::http1::SendRequest<Full>;

const BATCH: usize = 500;
const SINGLE_CLIENTS: usize = 64;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Raw write + fdatasync of one 300-byte record at a time: sorted latencies.
fn raw_fsync(base: &Path, secs: f64) -> Vec<Duration> {
    raw_loop(base, "raw", secs, 319)
}

/// Write + fdatasync of `bytes` at a time, in a loop for `secs`: sorted latencies.
fn raw_loop(base: &Path, name: &str, secs: f64, bytes: usize) -> Vec<Duration> {
    let dir = fresh(base, name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .expect("raw file");
    let buf = vec![b'r'; bytes.max(1)];
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

/// A server on its own runtime.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    runtime: tokio::runtime::Runtime,
    done: std::sync::mpsc::Receiver<Result<(), String>>,
}

impl Server {
    fn start(dir: &Path, hunts: &str, partitions: usize) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("server")
            .build()
            .unwrap();
        let mut engine = EngineConfig::new(dir);
        engine.partitions = partitions;
        // Snapshots only at the stop, unless asked for (to see what one costs under load).
        engine.snapshot_every_events = env("HUNT_BENCH_SNAPSHOT_EVERY", u64::MAX);
        // For diagnosis only: how much of the latency is the disk's.
        if std::env::var("HUNT_BENCH_NO_FSYNC").is_ok() {
            engine.durability = hunt_store::Durability::None;
        }
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine,
            http: HttpConfig {
                limits: Limits::default(),
                keys: Keys::default(),
                rate_per_key: None,
                rate_per_user: None,
                conn: Default::default(),
            },
            hunts: Some(("bench.yaml".into(), hunts.to_string())),
            alerts: None,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let r = serve(config, listener, async move {
                let _ = rx.await;
            })
            .await;
            let _ = done_tx.send(r);
        });
        Server {
            addr,
            stop,
            runtime,
            done,
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let r = self.done.recv_timeout(Duration::from_secs(300));
        assert!(matches!(r, Ok(Ok(()))), "server stopped badly: {r:?}");
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

async fn connect(addr: SocketAddr) -> Conn {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

async fn request(
    conn: &mut Conn,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> (u16, Bytes) {
    conn.ready().await.expect("connection ready");
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("host", addr.to_string())
        .body(Full::new(body))
        .unwrap();
    let r = conn.send_request(req).await.expect("response");
    let status = r.status().as_u16();
    (
        status,
        r.into_body().collect().await.expect("body").to_bytes(),
    )
}

/// Mean records per group commit, from `/metrics`.
fn records_per_commit(metrics: &str) -> f64 {
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    value("hunt_commit_batch_records_sum") / value("hunt_commit_batch_records_count").max(1.0)
}

/// Bodies of `BATCH` events each, ids unique in the run.
fn batches(events: usize) -> Vec<Bytes> {
    traffic(events)
        .chunks(BATCH)
        .map(|c| Bytes::from(serde_json::to_vec(c).unwrap()))
        .collect()
}

/// The bench's shopper traffic, received now.
fn traffic(events: usize) -> Vec<hunt_core::engine::Event> {
    let mut evs = generate(&TrafficSpec {
        users: 1_000_000,
        events: events as u64,
        seed: 7,
        hunters: 0.3,
        ..TrafficSpec::default()
    });
    for e in &mut evs {
        // Received now: the generator's times lie in the hunts' future.
        e.time = None;
    }
    evs
}

/// One scenario's figures.
struct Run {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    records_per_commit: f64,
    /// The clean stop (a snapshot of everything applied) took this long.
    stop_secs: f64,
    /// `/metrics` at the end of the load.
    metrics: String,
}

/// Runs `clients` client loops against a fresh server; each loop gets the next body
/// from `body(client, i)` until the time is up (or it returns `None`).
fn scenario(
    base: &Path,
    hunts: &str,
    partitions: usize,
    clients: usize,
    secs: f64,
    events_per_request: usize,
    body: Arc<dyn Fn(usize, u64) -> Option<Bytes> + Send + Sync>,
) -> Run {
    let dir = fresh(base, "server");
    let server = Server::start(&dir, hunts, partitions);
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (lat, metrics, elapsed) = rt.block_on(async move {
        let mut conn = connect(addr).await;
        while request(&mut conn, addr, "GET", "/readyz", Bytes::new())
            .await
            .0
            != 200
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = connect(addr).await;
                let mut lat = Vec::new();
                for i in 0.. {
                    if started.elapsed().as_secs_f64() >= secs {
                        break;
                    }
                    let Some(b) = body(c, i) else { break };
                    let t = Instant::now();
                    let (status, answer) = request(&mut conn, addr, "POST", "/v1/events", b).await;
                    lat.push(t.elapsed());
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut conn = connect(addr).await;
        let (_, metrics) = request(&mut conn, addr, "GET", "/metrics", Bytes::new()).await;
        (lat, String::from_utf8_lossy(&metrics).into_owned(), elapsed)
    });
    drop(rt);
    // A clean stop takes a snapshot of every partition: how long the pause lasts.
    let t = Instant::now();
    server.stop();
    let stop_secs = t.elapsed().as_secs_f64();
    let mut lat = lat;
    lat.sort();
    let ms = |q| percentile(&lat, q).as_secs_f64() * 1e3;
    Run {
        per_s: (lat.len() * events_per_request) as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: ms(1.0),
        records_per_commit: records_per_commit(&metrics),
        stop_secs,
        metrics,
    }
}

/// A webhook receiver on its own one-thread runtime: answers 200 at once, or never.
struct Receiver {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(hang: bool) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("receiver")
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |_body: Bytes| async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                "ok"
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, runtime }
    }
}

/// A figure from `/metrics` (the first line starting with `series`).
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The bench's hunts, each notifying a sink at `addr`.
fn with_sink(hunts: &str, addr: SocketAddr) -> String {
    hunts
        .replacen(
            "hunts:\n",
            &format!(
                "sinks:\n  - {{ id: hook, url: \"http://{addr}/hook\", timeout: 5s }}\nhunts:\n"
            ),
            1,
        )
        .replace("    reward: {", "    notify: [hook]\n    reward: {")
}

/// One peer's figures for one round: events/s and batch latency p99 (ms).
type Peer = (f64, f64);

/// Runs `clients` loops for `secs`, each taking the next batch index and awaiting
/// `send(client, batch)`; returns events/s and the batch latency p99.
async fn closed_loop<F, Fut>(clients: usize, secs: f64, batches: usize, send: F) -> Peer
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (send, next) = (send.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut events) = (Vec::new(), 0);
            while started.elapsed().as_secs_f64() < secs {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    break;
                }
                let t = Instant::now();
                events += send(c, i).await;
                lat.push(t.elapsed());
            }
            (lat, events)
        }));
    }
    let (mut lat, mut events) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        events += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    (
        events as f64 / elapsed,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    )
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// JetStream: each event a message to a file-storage stream; a batch is published
/// asynchronously and then all its acks awaited.
fn jetstream(url: &str, events: &Arc<Vec<Vec<Bytes>>>, clients: usize, secs: f64) -> Peer {
    use async_nats::jetstream::{self, stream};
    let rt = client_runtime();
    let events = events.clone();
    let url = url.to_string();
    rt.block_on(async move {
        let name = format!("HUNT_BENCH_{}", std::process::id());
        let subject = format!("hunt.bench.{}", std::process::id());
        let mut contexts = Vec::new();
        for _ in 0..clients {
            let c = async_nats::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("NATS at {url}: {e}"));
            contexts.push(jetstream::new(c));
        }
        let _ = contexts[0].delete_stream(&name).await;
        contexts[0]
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create the bench stream");
        let contexts = Arc::new(contexts);
        let cx = contexts.clone();
        let n = events.len();
        let figures = closed_loop(clients, secs, n, move |c, i| {
            let (js, batch, subject) = (cx[c].clone(), events[i].clone(), subject.clone());
            async move {
                let mut acks = Vec::with_capacity(batch.len());
                for e in &batch {
                    acks.push(
                        js.publish(subject.clone(), e.clone())
                            .await
                            .expect("publish"),
                    );
                }
                for a in acks {
                    a.await.expect("ack");
                }
                batch.len()
            }
        })
        .await;
        let _ = contexts[0].delete_stream(&name).await;
        figures
    })
}

/// PostgreSQL: a batch is one INSERT of its rows (user, event as jsonb), committed
/// with synchronous_commit on.
fn postgres(
    conninfo: &str,
    events: &Arc<Vec<Vec<Bytes>>>,
    users: &Arc<Vec<Vec<String>>>,
    clients: usize,
    secs: f64,
) -> Peer {
    let rt = client_runtime();
    let (events, users) = (events.clone(), users.clone());
    let conninfo = conninfo.to_string();
    rt.block_on(async move {
        let table = format!("hunt_bench_{}", std::process::id());
        let mut conns = Vec::new();
        for _ in 0..clients {
            let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL ({conninfo}): {e}"));
            tokio::spawn(conn);
            c.batch_execute("SET synchronous_commit = on").await.unwrap();
            conns.push(c);
        }
        conns[0]
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, user_id text NOT NULL, event jsonb NOT NULL)"
            ))
            .await
            .unwrap();
        let insert = format!(
            "INSERT INTO {table} (user_id, event) SELECT u, e::jsonb FROM unnest($1::text[], $2::text[]) AS x(u, e)"
        );
        let conns = Arc::new(conns);
        let cx = conns.clone();
        let n = events.len();
        let figures = closed_loop(clients, secs, n, move |c, i| {
            let (conns, insert) = (cx.clone(), insert.clone());
            let (batch, who) = (events[i].clone(), users[i].clone());
            async move {
                let texts: Vec<String> = batch
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                conns[c].execute(&insert, &[&who, &texts]).await.expect("insert");
                batch.len()
            }
        })
        .await;
        conns[0]
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .await
            .unwrap();
        figures
    })
}

/// The disk's own limit: write + fdatasync of `bytes` at a time (the engine's average
/// group commit), counted as `records` events each.
fn raw_commits(base: &Path, secs: f64, bytes: usize, records: f64) -> Peer {
    let lat = raw_loop(base, "raw-commits", secs, bytes);
    (
        lat.len() as f64 * records / secs,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    )
}

/// The engine against its peers: see the module's comment.
fn compare(base: &Path, rounds: usize, secs: f64, clients: usize, partitions: usize) {
    let nats = std::env::var("HUNT_BENCH_NATS").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let pg = std::env::var("HUNT_BENCH_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into());
    let hunts = bench_hunts_file(20);
    let evs = traffic((secs * 400_000.0) as usize);
    // The same events, as the engine's bodies and as single messages or rows.
    let bodies: Vec<Bytes> = evs
        .chunks(BATCH)
        .map(|c| Bytes::from(serde_json::to_vec(c).unwrap()))
        .collect();
    let singles: Arc<Vec<Vec<Bytes>>> = Arc::new(
        evs.chunks(BATCH)
            .map(|c| {
                c.iter()
                    .map(|e| Bytes::from(serde_json::to_vec(e).unwrap()))
                    .collect()
            })
            .collect(),
    );
    let users: Arc<Vec<Vec<String>>> = Arc::new(
        evs.chunks(BATCH)
            .map(|c| c.iter().map(|e| e.user.clone()).collect())
            .collect(),
    );
    drop(evs);
    let bodies = Arc::new(bodies);
    println!(
        "compare: the same events in batches of {BATCH} from {clients} clients, {secs} s each, {rounds} rounds in turning order; engine: 20 hunts, {partitions} partitions, fsync; JetStream at {nats}, file storage; PostgreSQL ({pg}), synchronous_commit on"
    );
    let names = ["engine", "jetstream", "postgres", "raw fdatasync"];
    let mut figures: Vec<Vec<Peer>> = vec![Vec::new(); 4];
    // The raw limit writes what the engine's last run committed on average.
    let (mut commit_bytes, mut commit_records) = (64 * 1024, 140.0);
    for round in 0..rounds {
        for k in 0..4 {
            let peer = (round + k) % 4;
            let f = match peer {
                0 => {
                    let next = Arc::new(AtomicUsize::new(0));
                    let b = bodies.clone();
                    let run = scenario(
                        base,
                        &hunts,
                        partitions,
                        clients,
                        secs,
                        BATCH,
                        Arc::new(move |_, _| b.get(next.fetch_add(1, Ordering::Relaxed)).cloned()),
                    );
                    let commits = metric(&run.metrics, "hunt_commits_total ");
                    if commits > 0.0 {
                        commit_bytes =
                            (metric(&run.metrics, "hunt_commit_bytes_total ") / commits) as usize;
                        commit_records = run.records_per_commit;
                    }
                    (run.per_s, run.p99_ms)
                }
                1 => jetstream(&nats, &singles, clients, secs),
                2 => postgres(&pg, &singles, &users, clients, secs),
                _ => raw_commits(base, secs, commit_bytes, commit_records),
            };
            println!(
                "round {round}: {:14} {:>9.0} events/s   batch p99 {:>8.2} ms{}",
                names[peer],
                f.0,
                f.1,
                if peer == 3 {
                    format!("   ({commit_bytes} bytes, {commit_records:.0} records a commit)")
                } else {
                    String::new()
                }
            );
            figures[peer].push(f);
        }
    }
    let med = |i: usize, j: usize| {
        median(
            figures[i]
                .iter()
                .map(|f| if j == 0 { f.0 } else { f.1 })
                .collect(),
        )
    };
    let engine = med(0, 0);
    println!("medians of {rounds} rounds:");
    println!(
        "  {:14} {:>12} {:>14} {:>16}",
        "", "events/s", "batch p99 ms", "engine / this"
    );
    for (i, name) in names.iter().enumerate() {
        println!(
            "  {name:14} {:>12.0} {:>14.2} {:>16.2}",
            med(i, 0),
            med(i, 1),
            engine / med(i, 0)
        );
    }
    println!(
        "  targets: engine ≥ 2.5 × JetStream, ≥ 4 × PostgreSQL, ≥ 0.70 × raw fdatasync (engine / raw = {:.2})",
        engine / med(3, 0)
    );
}

/// Resident set size, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `n` dead letters as an overflowing sink leaves them: held, then dead-lettered.
fn dlq_memory(n: u64) {
    use hunt_server::notify::cloudevent::Delivery;
    use hunt_server::notify::outbox::{Change, DeliveryRecord, Outbox};
    let mut o = Outbox::default();
    let before = rss();
    let sink: Arc<str> = Arc::from("crm");
    let hunt: Arc<str> = Arc::from("golden-eggs");
    for i in 0..n {
        let (lsn, outcome) = (1_000_000 + i / 3, (i % 3) as u32);
        let key = format!("{lsn}.{outcome}.crm");
        o.queue_held(
            Delivery {
                sink: 0,
                sink_id: sink.clone(),
                hunt: hunt.clone(),
                lsn,
                outcome,
                partition: (i % 8) as u32,
                key: key.clone(),
                body: Vec::new(),
            },
            hunt_core::time::Timestamp(1_795_766_400_000),
        );
        o.apply(&DeliveryRecord {
            key,
            at: 1_795_766_400_000,
            change: Change::DeadLettered {
                error: "not sent: sink `crm` already had 100000 deliveries waiting (its bound)"
                    .into(),
            },
        })
        .unwrap();
    }
    let after = rss();
    assert_eq!(o.dead_letters().len() as u64, n);
    println!(
        "{n} dead letters: resident set {:.1} MB more, {:.0} bytes each",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / n as f64
    );
}

/// What customers' state and the dedupe window hold after `n` events of the bench's
/// traffic (every customer hunting), applied to one partition the way the server does:
/// heap bytes counted by the allocator, and the resident set.
fn state_memory(n: u64) {
    use hunt_core::rewards::Allocation;
    use hunt_server::records::ConfigRecord;
    use hunt_server::state::{DedupeConfig, PartitionState, Version};
    let version = Version::compile(ConfigRecord {
        version: 1,
        name: "bench.yaml".into(),
        text: bench_hunts_file(20),
        at: 0,
    })
    .expect("the bench hunts compile");
    let dedupe = DedupeConfig {
        window: hunt_core::time::Duration::from_secs(24 * 3600),
        entries_max: usize::MAX,
    };
    let (rss0, heap0) = (rss(), live());
    let mut state = PartitionState::new(dedupe, hunt_server::state::dedupe_secret());
    let received = hunt_core::time::Timestamp(1_795_766_400_000);
    let chunk = 1_000_000;
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let take = chunk.min(n - done);
        let mut evs = generate(&TrafficSpec {
            users: 1_000_000,
            events: take,
            seed: 7 + done,
            hunters: 1.0,
            ..TrafficSpec::default()
        });
        for e in &mut evs {
            // Unique ids across chunks; event times as generated (within the hunts).
            e.id = format!("c{done}-{}", e.id);
            let mut alloc = Allocation::new(&version.pools);
            state
                .apply(&version.engine, e, received, &mut alloc)
                .expect("the bench's events apply");
            alloc.commit();
        }
        done += take;
    }
    let (rss1, heap1) = (rss(), live());
    let customers = state.users.len();
    let with_progress = state
        .users
        .values()
        .filter(|u| !u.hunts().is_empty())
        .count();
    let progress: usize = state.users.values().map(|u| u.hunts().len()).sum();
    let entries = state.dedupe.len();
    // Dropping the window leaves the customers.
    state.dedupe = hunt_core::dedupe::DedupeWindow::new(dedupe.window, 1, [0, 0]);
    let heap2 = live();
    let window = heap1.wrapping_sub(heap2);
    let users = heap2.wrapping_sub(heap0);
    println!(
        "{n} events applied in {:.1} s: {customers} customers, {with_progress} with progress, in {:.1} hunts on average; {entries} dedupe entries",
        started.elapsed().as_secs_f64(),
        progress as f64 / with_progress.max(1) as f64
    );
    println!(
        "heap: customers and figures {:.1} MB ({:.0} bytes a customer); dedupe window {:.1} MB ({:.0} bytes an entry); resident set {:.1} MB more",
        users as f64 / 1e6,
        users as f64 / customers.max(1) as f64,
        window as f64 / 1e6,
        window as f64 / entries.max(1) as f64,
        (rss1 - rss0) as f64 / 1e6
    );
}

/// Healthy against hanging sink, interleaved: see the module's comment.
fn sink_rounds(base: &Path, rounds: usize, secs: f64, clients: usize, partitions: usize) {
    let hunts = bench_hunts_file(20);
    let bodies = Arc::new(batches((secs * 400_000.0) as usize));
    println!(
        "sink: 20 hunts notifying one webhook; batches of {BATCH} from {clients} clients, single events from {SINGLE_CLIENTS} clients; {partitions} partitions; {secs} s per scenario; {rounds} rounds; healthy, hanging and no sink in turning order"
    );
    // Per figure: (healthy, hanging, no sink at all).
    type Figures = (Vec<f64>, Vec<f64>, Vec<f64>);
    let mut figures: std::collections::BTreeMap<&str, Figures> = Default::default();
    for round in 0..rounds {
        // 0 healthy, 1 hanging, 2 none; the order turns each round.
        let order = [[0, 1, 2], [1, 2, 0], [2, 0, 1]][round % 3];
        for mode in order {
            let name = ["healthy", "hanging", "no sink"][mode];
            let rx = Receiver::start(mode == 1);
            let text = if mode == 2 {
                hunts.clone()
            } else {
                with_sink(&hunts, rx.addr)
            };
            let next = Arc::new(AtomicUsize::new(0));
            let b = bodies.clone();
            let t = scenario(
                base,
                &text,
                partitions,
                clients,
                secs,
                BATCH,
                Arc::new(move |_, _| b.get(next.fetch_add(1, Ordering::Relaxed)).cloned()),
            );
            let m = &t.metrics;
            println!(
                "round {round}: {name:7} batches {:>8.0} events/s  request p50 {:>6.2} ms  p99 {:>7.2} ms | deliveries: {:.0} delivered, {:.0} dead-lettered, {:.0} waiting, breaker {:.0}",
                t.per_s,
                t.p50_ms,
                t.p99_ms,
                metric(
                    m,
                    "hunt_sink_deliveries_total{sink=\"hook\",result=\"delivered\"}"
                ),
                metric(
                    m,
                    "hunt_sink_deliveries_total{sink=\"hook\",result=\"dead_lettered\"}"
                ),
                metric(m, "hunt_sink_queue_depth{sink=\"hook\"}"),
                metric(m, "hunt_sink_breaker_state{sink=\"hook\"}"),
            );
            let f = |v: &mut Figures, x: f64| match mode {
                0 => v.0.push(x),
                1 => v.1.push(x),
                _ => v.2.push(x),
            };
            f(figures.entry("batches events/s").or_default(), t.per_s);
            f(
                figures.entry("batches request p99 ms").or_default(),
                t.p99_ms,
            );
            let l = scenario(
                base,
                &text,
                partitions,
                SINGLE_CLIENTS,
                secs,
                1,
                Arc::new(move |c, i| {
                    Some(Bytes::from(format!(
                        r#"{{"id":"s{round}-{c}-{i}","user":"u-{:06}","type":"product_view","data":{{"product":"sku-{:04}","category":"shoes","price":59.0}}}}"#,
                        (c as u64 * 7919 + i * 104_729) % 1_000_000,
                        i % 500
                    )))
                }),
            );
            let m = &l.metrics;
            println!(
                "round {round}: {name:7} singles {:>8.0} req/s     ack p50 {:>6.2} ms  p99 {:>7.2} ms | deliveries: {:.0} delivered, {:.0} dead-lettered, {:.0} waiting, breaker {:.0}",
                l.per_s,
                l.p50_ms,
                l.p99_ms,
                metric(
                    m,
                    "hunt_sink_deliveries_total{sink=\"hook\",result=\"delivered\"}"
                ),
                metric(
                    m,
                    "hunt_sink_deliveries_total{sink=\"hook\",result=\"dead_lettered\"}"
                ),
                metric(m, "hunt_sink_queue_depth{sink=\"hook\"}"),
                metric(m, "hunt_sink_breaker_state{sink=\"hook\"}"),
            );
            f(figures.entry("singles req/s").or_default(), l.per_s);
            f(figures.entry("singles ack p99 ms").or_default(), l.p99_ms);
            rx.runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
    println!(
        "medians of {rounds} rounds (the target: hanging within 10 % of healthy; no sink is for reference):"
    );
    for (name, (healthy, hanging, none)) in figures {
        let (a, b, c) = (median(healthy), median(hanging), median(none));
        println!(
            "  {name:24} healthy {a:>10.2}  hanging {b:>10.2}  hanging/healthy {:.3}   no sink {c:>10.2}",
            b / a
        );
    }
}

fn main() {
    let rounds: usize = env("HUNT_BENCH_ROUNDS", 3);
    let secs: f64 = env("HUNT_BENCH_SECS", 5.0);
    let clients: usize = env("HUNT_BENCH_BATCH_CLIENTS", 4);
    let partitions: usize = env("HUNT_BENCH_PARTITIONS", 8);
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hunt-server-bench");
    if let Ok(n) = std::env::var("HUNT_BENCH_DLQ") {
        dlq_memory(n.parse().expect("HUNT_BENCH_DLQ=<count>"));
        return;
    }
    if let Ok(n) = std::env::var("HUNT_BENCH_STATE") {
        COUNTING.store(true, Ordering::Relaxed);
        state_memory(n.parse().expect("HUNT_BENCH_STATE=<events>"));
        return;
    }
    if std::env::var("HUNT_BENCH_COMPARE").is_ok() {
        compare(&base, rounds, secs, clients, partitions);
        let _ = std::fs::remove_dir_all(&base);
        return;
    }
    if std::env::var("HUNT_BENCH_SINK").is_ok() {
        sink_rounds(&base, rounds, secs, clients, partitions);
        let _ = std::fs::remove_dir_all(&base);
        return;
    }
    let hunts = bench_hunts_file(20);
    // Enough bodies for the fastest plausible run (400 k events/s).
    let bodies = Arc::new(batches((secs * 400_000.0) as usize));
    println!(
        "ingest: 20 hunts; batches of {BATCH} from {clients} clients, single events from {SINGLE_CLIENTS} clients; {partitions} partitions; {secs} s per scenario; {rounds} rounds"
    );
    let (mut thr, mut lat, mut raw_p99) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let next = Arc::new(AtomicUsize::new(0));
        let b = bodies.clone();
        let t = scenario(
            &base,
            &hunts,
            partitions,
            clients,
            secs,
            BATCH,
            Arc::new(move |_, _| b.get(next.fetch_add(1, Ordering::Relaxed)).cloned()),
        );
        println!(
            "round {round}: batches  {:>8.0} events/s   request p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  {:>6.0} records/commit  (stop with snapshot of {:.0} events: {:.2} s)",
            t.per_s,
            t.p50_ms,
            t.p99_ms,
            t.max_ms,
            t.records_per_commit,
            t.per_s * secs,
            t.stop_secs
        );
        thr.push(t);
        if std::env::var("HUNT_BENCH_ONLY_BATCHES").is_ok() {
            continue;
        }
        let r = raw_fsync(&base, secs.min(3.0));
        let raw = (
            percentile(&r, 0.5).as_secs_f64() * 1e3,
            percentile(&r, 0.99).as_secs_f64() * 1e3,
        );
        raw_p99.push(raw.1);
        let l = scenario(
            &base,
            &hunts,
            partitions,
            SINGLE_CLIENTS,
            secs,
            1,
            Arc::new(move |c, i| {
                Some(Bytes::from(format!(
                    r#"{{"id":"r{round}-{c}-{i}","user":"u-{:06}","type":"product_view","data":{{"product":"sku-{:04}","category":"shoes","price":59.0}}}}"#,
                    (c as u64 * 7919 + i * 104_729) % 1_000_000,
                    i % 500
                )))
            }),
        );
        println!(
            "round {round}: singles  {:>8.0} req/s      ack p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  {:>5.1} records/commit | raw fdatasync p50 {:.2} ms p99 {:.2} ms | ack p99 / raw p99 = {:.2}",
            l.per_s,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.records_per_commit,
            raw.0,
            raw.1,
            l.p99_ms / raw.1
        );
        lat.push(l);
    }
    // HUNT_BENCH_KEEP=1 keeps the last server's data directory (to time a replay).
    if std::env::var("HUNT_BENCH_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&base);
    }
    println!("medians of {rounds} rounds:");
    println!(
        "  durable ingest, batches of {BATCH}: {:.0} events/s (target ≥ 150000); {:.0} records per group commit",
        median(thr.iter().map(|t| t.per_s).collect()),
        median(thr.iter().map(|t| t.records_per_commit).collect())
    );
    println!(
        "  single events from {SINGLE_CLIENTS} clients: ack p99 {:.2} ms, raw fdatasync p99 {:.2} ms, ratio {:.2} (target ≤ 2); {:.0} req/s; {:.1} records per group commit",
        median(lat.iter().map(|l| l.p99_ms).collect()),
        median(raw_p99.clone()),
        median(
            lat.iter()
                .zip(&raw_p99)
                .map(|(l, r)| l.p99_ms / r)
                .collect()
        ),
        median(lat.iter().map(|l| l.per_s).collect()),
        median(lat.iter().map(|l| l.records_per_commit).collect()),
    );
}
