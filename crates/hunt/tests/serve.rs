//! `hunt serve` as a process: killed with SIGKILL under load and started again, it has
//! every acknowledged event, and no code was granted twice; SIGTERM stops it cleanly;
//! `hunt replay` checks the log it leaves.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{root, text};

struct Served {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The thread that reads the server's standard error into `log`; it ends at the
    /// end of that stream, once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Everything the server wrote to standard error, once it has exited.
    fn log_after_exit(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log.lock().unwrap().clone()
    }
}

/// A test that fails half-way must not leave its server running.
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hunt serve` on an ephemeral port and waits until it is ready.
fn serve(data: &std::path::Path) -> Served {
    serve_with(data, &root().join("examples/welcome.yaml"))
}

fn serve_with(data: &std::path::Path, config: &std::path::Path) -> Served {
    serve_args(data, config, &[])
}

fn serve_args(data: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hunt"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .current_dir(root());
    serve_command(cmd)
}

/// Runs `cmd` (a `hunt serve` listening on an ephemeral port) and waits until it is
/// ready.
fn serve_command(mut cmd: Command) -> Served {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("hunt serve starts");
    let (log, rx, reader) = read_log(&mut child);
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server says where it listens")
        .parse()
        .unwrap();
    let t = Instant::now();
    while request(addr, "GET", "/readyz", "").map(|r| r.0) != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not ready: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Served {
        child,
        addr,
        log,
        reader: Some(reader),
    }
}

/// Reads a `hunt serve`'s standard error into a shared log, and sends each address it
/// says it listens on (`addr=`); the thread ends when the process has exited.
pub(super) fn read_log(
    child: &mut Child,
) -> (
    Arc<Mutex<String>>,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("addr=") {
                let addr: String = line[at + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    (log, rx, reader)
}

/// SIGTERM, then a clean stop, not a hang: it gets a minute. `context` says what to
/// show if it hangs.
pub(super) fn terminate(
    child: &mut Child,
    context: impl Fn() -> String,
) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "hunt serve did not stop within 60 s of SIGTERM: {}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

use super::crash::request;

fn event(user: &str, id: &str, step: usize) -> Value {
    match step {
        0 => json!({"id": id, "user": user, "type": "product_view", "data": {"category": "shoes"}}),
        1 => {
            json!({"id": id, "user": user, "type": "page_view", "data": {"url": "/blog/egg-hunt"}})
        }
        _ => json!({"id": id, "user": user, "type": "search", "data": {"query": "egg"}}),
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event_and_grants_no_code_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // (user, id, step) of every acknowledged event; every code granted.
    let acked: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let codes: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..5 {
        let server = serve(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..4 {
            let (stop, acked, codes, addr) =
                (stop.clone(), acked.clone(), codes.clone(), server.addr);
            clients.push(std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Three customers per request, each one step further along.
                    let evs: Vec<(String, String, usize)> = (0..3)
                        .map(|k| {
                            let user = format!("r{round}c{c}u{}", i / 3 * 3 + k);
                            (user, format!("r{round}c{c}e{i}k{k}"), i % 3)
                        })
                        .collect();
                    let body = json!(
                        evs.iter()
                            .map(|(u, id, s)| event(u, id, *s))
                            .collect::<Vec<_>>()
                    );
                    match request(addr, "POST", "/v1/events", &body.to_string()) {
                        Some((200, a)) => {
                            acked.lock().unwrap().extend(evs);
                            for r in a["results"].as_array().unwrap() {
                                for o in r["outcomes"].as_array().unwrap() {
                                    if o["kind"] == "reward_granted" {
                                        codes
                                            .lock()
                                            .unwrap()
                                            .push(o["code"].as_str().unwrap().into());
                                    }
                                }
                            }
                        }
                        // Cut off by the kill: not acknowledged, so nothing is owed.
                        _ => return,
                    }
                }
            }));
        }
        let before = acked.lock().unwrap().len();
        let t = Instant::now();
        while acked.lock().unwrap().len() < before + 1500 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut server = server;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        assert!(
            acked.lock().unwrap().len() > before,
            "round {round}: nothing acknowledged"
        );
    }
    let server = serve(&data);
    let acked = acked.lock().unwrap().clone();
    for chunk in acked.chunks(500) {
        let body = json!(
            chunk
                .iter()
                .map(|(u, id, s)| event(u, id, *s))
                .collect::<Vec<_>>()
        );
        let (st, a) = request(server.addr, "POST", "/v1/events", &body.to_string()).unwrap();
        assert_eq!(st, 200, "{a}");
        let missing: Vec<&Value> = a["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] != "duplicate")
            .map(|r| &r["id"])
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged events missing after SIGKILL: {missing:?}"
        );
    }
    let codes = codes.lock().unwrap().clone();
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "a code granted twice: {codes:?}");
    let (_, stats) = request(server.addr, "GET", "/v1/hunts/three-eggs/stats", "").unwrap();
    assert!(stats["rewards_granted"].as_u64().unwrap() <= 3, "{stats}");
    assert_eq!(
        stats["rewards_granted"].as_u64().unwrap() as usize,
        codes.len(),
        "{stats}"
    );

    // While it runs, the data directory is its own: a replay is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["replay", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );

    // SIGTERM: a clean stop with exit status 0.
    let mut server = server;
    let log = server.log.clone();
    let exit = terminate(&mut server.child, || log.lock().unwrap().clone());
    let log = server.log_after_exit();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");

    // The log it leaves replays with the same outcomes. Events written but cut off
    // before their answer may be there too.
    replays_with_at_least(&data, acked.len());
}

/// `hunt replay` of a stopped server's data: every record checks out, the outcomes are
/// the ones recorded, and at least `events` events are there.
fn replays_with_at_least(data: &std::path::Path, events: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["replay", "--json", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mismatches"], 0, "{r}");
    assert!(r["events"].as_u64().unwrap() >= events as u64, "{r}");
}

#[test]
fn serve_refuses_a_backlog_smaller_than_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args([
            "serve",
            "--config",
            "examples/welcome.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--backlog-max", "10", "--max-events", "20", "--data"])
        .arg(dir.path().join("data"))
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--backlog-max (10) must be at least --max-events (20)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_without_keys_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args([
            "serve",
            "--config",
            "examples/welcome.yaml",
            "--listen",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .current_dir(root())
        .env_remove("HUNT_API_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("without API keys"),
        "{}",
        text(&out.stderr)
    );
}

/// `hunt ARGS…` from the repository's root: exit code, standard output and error.
fn hunt_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn dlq(addr: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let server = format!("http://{addr}");
    hunt_cmd(&[&["dlq", "--server", &server], args].concat())
}

#[test]
fn dlq_commands_list_show_retry_and_drop_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: every delivery is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("hunts.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
version: 1
sinks:
  - {{ id: crm, url: "http://{closed}/hook", max_attempts: 1 }}
hunts:
  - id: claim
    steps: [{{ id: s, on: claim }}]
    notify: [crm]
"#
        ),
    )
    .unwrap();
    let mut s = serve_with(&dir.path().join("data"), &config);
    let (status, _) = request(
        s.addr,
        "POST",
        "/v1/events",
        &json!({"id": "e1", "user": "ann", "type": "claim"}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200);
    let t = Instant::now();
    let listed = loop {
        let (code, out, err) = dlq(s.addr, &["list"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("2 shown of 2") {
            break out;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Two outcomes (the step, the completion), each a dead letter naming the refusal.
    assert!(
        listed.contains("crm") && listed.contains("cannot connect"),
        "{listed}"
    );
    let id = listed
        .lines()
        .find_map(|l| {
            l.split('┆')
                .next()
                .and_then(|c| c.split('│').nth(1))
                .map(str::trim)
                .filter(|c| c.ends_with(".crm"))
        })
        .unwrap()
        .to_string();
    let (code, shown, err) = dlq(s.addr, &["show", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("hunt.step.found") || shown.contains("hunt.completed"),
        "{shown}"
    );
    assert!(shown.contains(&format!("\"id\": \"{id}\"")), "{shown}");
    let (code, _, err) = dlq(s.addr, &["retry"]);
    assert_eq!(code, 2, "a selection is needed");
    assert!(err.contains("say which dead letters"), "{err}");
    let (code, _, err) = dlq(s.addr, &["drop", "9.9.nothing"]);
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("9.9.nothing"), "{err}");
    let (code, out, err) = dlq(s.addr, &["retry", "--all"]);
    assert_eq!((code, out.trim()), (0, "retried 2"), "{err}");
    // Refused again: back in the DLQ, each now with two attempts in its history.
    let t = Instant::now();
    loop {
        let (_, out, _) = dlq(s.addr, &["--json", "list"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["total"] == 2
            && v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["attempts"] == 2)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = dlq(s.addr, &["drop", "--sink", "crm"]);
    assert_eq!((code, out.trim()), (0, "dropped 2"), "{err}");
    let (_, out, _) = dlq(s.addr, &["list"]);
    assert_eq!(out.trim(), "no dead letters");
    s.child.kill().unwrap();
    let _ = s.child.wait();
}

fn bench(addr: SocketAddr, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["bench", "--json", "--server", &format!("http://{addr}")])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        text(&out.stderr),
    )
}

#[test]
fn bench_loads_a_running_server_closed_and_open_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(&dir.path().join("data"));
    // Closed loop, a fixed number of events: all of them accepted, the last request
    // carrying the remainder.
    let (code, r, err) = bench(
        s.addr,
        &["--events", "2050", "--batch", "100", "--concurrency", "4"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["mode"], "closed loop");
    assert_eq!(
        (r["requests"].as_u64(), r["events_sent"].as_u64()),
        (Some(21), Some(2050)),
        "{r}"
    );
    assert_eq!(r["events_accepted"], 2050, "{r}");
    assert_eq!(r["errors"]["transport"], 0, "{r}");
    assert_eq!(r["errors"]["status"], serde_json::json!({}), "{r}");
    assert!(
        r.get("intervals").is_none(),
        "no intervals unless asked: {r}"
    );
    let l = &r["ack_latency"];
    let ms = |k: &str| l[k].as_f64().unwrap();
    assert!(
        ms("p50_ms") > 0.0 && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"),
        "{l}"
    );
    // Open loop: requests are due every 10 ms for one second, whatever the answers do;
    // reported every 200 ms as it goes.
    let (code, r, err) = bench(
        s.addr,
        &[
            "--rate",
            "1000",
            "--batch",
            "10",
            "--duration",
            "1s",
            "--concurrency",
            "4",
            "--report-every",
            "200ms",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["mode"], "open loop");
    let requests = r["requests"].as_u64().unwrap();
    assert!((1..=100).contains(&requests), "{r}");
    assert_eq!(r["events_sent"].as_u64(), Some(requests * 10), "{r}");
    assert_eq!(r["events_accepted"], r["events_sent"], "{r}");
    // Ids are fresh each run: nothing was answered as a duplicate.
    assert_eq!(r["events_duplicate"], 0, "{r}");
    // The intervals: every answered request in exactly one, each one's figures in
    // order, the intervals in time order.
    let intervals = r["intervals"].as_array().expect("intervals").clone();
    assert!(intervals.len() >= 4, "{r}");
    // About 20 requests are due in each 200 ms: they are spread, not in one interval.
    let busy = intervals
        .iter()
        .filter(|i| i["requests"].as_u64() > Some(0))
        .count();
    assert!(busy >= 3, "{r}");
    let counted: u64 = intervals
        .iter()
        .map(|i| i["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(counted), r["requests"].as_u64(), "{r}");
    let at: Vec<f64> = intervals
        .iter()
        .map(|i| i["at_s"].as_f64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    for i in &intervals {
        let ms = |k: &str| i[k].as_f64().unwrap();
        assert!(
            ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"),
            "{i}"
        );
    }
    s.child.kill().unwrap();
    let _ = s.child.wait();
    // Nothing listening, or not a URL it can use: a clear error, exit 2.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, err) = bench(closed, &["--events", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["bench", "--server", "https://shop.example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("http:// URL"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigterm_stops_a_server_whose_standard_error_was_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["serve", "--config", "examples/welcome.yaml", "--listen"])
        .arg(addr.to_string())
        .arg("--data")
        .arg(dir.path().join("data"))
        .current_dir(root())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while request(addr, "GET", "/readyz", "").map(|r| r.0) != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whoever read its log went away: every later log line fails to be written.
    drop(child.stderr.take());
    let exit = terminate(&mut child, || "its stderr was closed".into());
    assert_eq!(exit.code(), Some(0));
}

/// The crash harness (tests/harness/crash.rs), 20 cycles of SIGKILL under load. The long
/// mode: `cargo build --release -p hunt --bin hunt --example crash`, then
/// `target/release/examples/crash --cycles 500`.
#[test]
fn crash_harness_kills_the_server_20_times_and_every_promise_holds() {
    let seed = std::env::var("HUNT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0001);
    let report = super::crash::run(&super::crash::Config {
        hunt: env!("CARGO_BIN_EXE_hunt").into(),
        cycles: 20,
        seed,
        clients: 4,
        verbose: false,
        sabotage: None,
        cluster: false,
        spread: false,
    });
    eprintln!("{}", report.line());
    assert_eq!(report.cycles, 20, "{report:#?}");
    assert_eq!(report.failures(), 0, "seed {seed}: {report:#?}");
    // The run did what it is for: events acknowledged, requests cut off by kills and
    // sent again, duplicates sent on purpose, codes granted, deliveries received.
    assert!(report.acked > 1000, "{report:#?}");
    assert!(report.retried > 0 && report.resent > 0, "{report:#?}");
    assert!(report.granted > 0 && report.deliveries > 0, "{report:#?}");
    // ~1 delivery in 400 dead-letters (two attempts, one in twenty fails) and is retried
    // from the dead-letter queue at the end.
    assert!(report.dead_letters > 0, "{report:#?}");
}

/// The crash harness on a cluster: three NATS servers and two nodes, the clients on
/// both addresses; 4 cycles kill the owner node and a NATS server in turn, under load,
/// and every promise holds (deliveries included: the new owner resumes the outbox with
/// the same keys). The long mode: `target/release/examples/crash --cluster --cycles 200`.
#[test]
fn crash_harness_on_a_cluster_kills_owners_and_nats_servers_and_every_promise_holds() {
    let seed = 0x5EED_0002;
    let report = super::crash::run(&super::crash::Config {
        hunt: env!("CARGO_BIN_EXE_hunt").into(),
        cycles: 4,
        seed,
        clients: 4,
        verbose: true,
        sabotage: None,
        cluster: true,
        spread: false,
    });
    eprintln!("{}\n{}", report.line(), report.cluster_line());
    assert_eq!(report.cycles, 4, "{report:#?}");
    assert_eq!(report.failures(), 0, "seed {seed}: {report:#?}");
    assert_eq!(
        (report.node_kills, report.nats_kills),
        (2, 2),
        "{report:#?}"
    );
    assert_eq!(report.failovers.len(), 2, "{report:#?}");
    // No owner deposed but the ones killed: a NATS server's loss does not stop a node.
    assert_eq!(report.node_exits, 0, "{report:#?}");
    assert!(report.acked > 500, "{report:#?}");
    assert!(report.retried > 0 && report.resent > 0, "{report:#?}");
    assert!(report.granted > 0 && report.deliveries > 0, "{report:#?}");
}

/// The crash harness with the partitions spread over three nodes: 6 cycles kill a
/// node, stop one gracefully and kill a NATS server in turn, under load, each node
/// coming back to take its share again; every promise holds through the joins and the
/// leaves (deliveries included: each partition's new owner resumes its outbox). The
/// long mode: `target/release/examples/crash --spread --cycles 150`.
#[test]
fn crash_harness_on_spread_nodes_kills_and_stops_nodes_and_every_promise_holds() {
    let seed = 0x5EED_0003;
    let report = super::crash::run(&super::crash::Config {
        hunt: env!("CARGO_BIN_EXE_hunt").into(),
        cycles: 6,
        seed,
        clients: 4,
        verbose: true,
        sabotage: None,
        cluster: true,
        spread: true,
    });
    eprintln!("{}\n{}", report.line(), report.cluster_line());
    assert_eq!(report.cycles, 6, "{report:#?}");
    assert_eq!(report.failures(), 0, "seed {seed}: {report:#?}");
    assert_eq!(
        (report.node_kills, report.node_leaves, report.nats_kills),
        (2, 2, 2),
        "{report:#?}"
    );
    assert_eq!(report.failovers.len(), 2, "{report:#?}");
    assert_eq!(report.node_exits, 0, "{report:#?}");
    assert!(report.acked > 500, "{report:#?}");
    assert!(report.retried > 0 && report.resent > 0, "{report:#?}");
    assert!(report.granted > 0 && report.deliveries > 0, "{report:#?}");
}

/// The harness can fail: with acknowledged writes cut off the log after each kill (a
/// disk that lies), it reports them lost.
#[test]
fn crash_harness_reports_losses_when_the_disk_loses_acknowledged_writes() {
    let report = super::crash::run(&super::crash::Config {
        hunt: env!("CARGO_BIN_EXE_hunt").into(),
        cycles: 3,
        seed: 7,
        clients: 4,
        verbose: false,
        sabotage: Some(2000),
        cluster: false,
        spread: false,
    });
    eprintln!("{}", report.line());
    assert!(report.lost > 0, "{report:#?}");
    assert!(report.failures() > 0, "{report:#?}");
}

/// A size-limited tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root: {}",
            text(&out.stderr)
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The disk fills up under load: the server stops acknowledging with a 503 that says
/// why and stops (fail-stop); once space is freed it starts again from an intact log,
/// with every acknowledged event.
#[test]
fn a_full_disk_stops_acknowledging_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path().join("small"), "24m");
    let data = disk.path.join("data");
    // Room to start, taken back later.
    let ballast = disk.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; 8 << 20]).unwrap();
    let welcome = root().join("examples/welcome.yaml");
    let unlimited = ["--rate-per-user", "0"];
    let mut server = serve_args(&data, &welcome, &unlimited);
    let padding = "x".repeat(1500);
    let mut acked: Vec<Value> = Vec::new();
    let mut refusal = None;
    for i in 0..20_000 {
        let batch: Vec<Value> = (0..50)
            .map(|k| {
                json!({"id": format!("f{i}-{k}"), "user": format!("fill{}", k % 7),
                    "type": "page_view", "data": {"url": "/blog", "pad": padding}})
            })
            .collect();
        match request(server.addr, "POST", "/v1/events", &json!(batch).to_string()) {
            Some((200, _)) => acked.extend(batch),
            other => {
                refusal = Some(other);
                break;
            }
        }
    }
    // The first refusal is a 503 that says why.
    let (status, body) = refusal
        .expect("the disk never filled up")
        .expect("the request that hit the full disk was answered");
    eprintln!("after {} acknowledged events: {status} {body}", acked.len());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "log_stopped", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(acked.len() > 1000, "only {} acknowledged", acked.len());
    // Fail-stop: the process ends by itself, with status 1 and the reason in its log.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = server.log_after_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("No space left on device"), "{}", log);
    drop(server);

    // Space again: it starts from what is on disk, and every acknowledged event is there.
    std::fs::remove_file(&ballast).unwrap();
    let mut server = serve_args(&data, &welcome, &unlimited);
    for chunk in acked.chunks(500) {
        let (st, a) = request(server.addr, "POST", "/v1/events", &json!(chunk).to_string())
            .expect("answered");
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["duplicates"].as_u64(), Some(chunk.len() as u64), "{a}");
    }
    let log = server.log.clone();
    let exit = terminate(&mut server.child, || log.lock().unwrap().clone());
    assert_eq!(exit.code(), Some(0), "{}", log.lock().unwrap());
    // The log it leaves checks out, record by record.
    replays_with_at_least(&data, acked.len());
}

/// `examples/welcome.yaml` with its first step (`egg-shoes`) swapped for a cart step, its
/// own test cases left out, and the pool's codes as given.
fn welcome_edited(dir: &std::path::Path, codes: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("examples/welcome.yaml")).unwrap();
    let text = text[..text.find("tests:").unwrap()].to_string();
    let text = text
        .replace(
            "      - id: egg-shoes\n        on: product_view\n        when: event.data.category == \"shoes\"\n        clue: An egg is hiding among the shoes.\n",
            "      - id: egg-cart\n        on: cart_add\n",
        )
        .replace("codes: [WELCOME-A1, WELCOME-B2, WELCOME-C3]", codes);
    assert!(
        text.contains("egg-cart") && !text.contains("egg-shoes"),
        "{text}"
    );
    let path = dir.join(format!("new-{}.yaml", codes.len()));
    std::fs::write(&path, text).unwrap();
    path
}

fn diff(args: &[&str]) -> (i32, String, String) {
    hunt_cmd(&[&["diff"], args].concat())
}

#[test]
fn diff_counts_the_customers_each_change_touches_on_a_server_and_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = serve(&data);
    // ann found the shoes egg; bob the shoes and blog eggs; cy won WELCOME-A1.
    let post = |events: Value| {
        let (st, a) = request(s.addr, "POST", "/v1/events", &events.to_string()).unwrap();
        assert_eq!(st, 200, "{a}");
    };
    post(json!([event("ann", "a1", 0)]));
    post(json!([event("bob", "b1", 0), event("bob", "b2", 1)]));
    post(json!([
        event("cy", "c1", 0),
        event("cy", "c2", 1),
        event("cy", "c3", 2)
    ]));
    let new = welcome_edited(
        dir.path(),
        "codes: [WELCOME-A1, WELCOME-B2, WELCOME-C3, WELCOME-D4]",
    );
    let old = "examples/welcome.yaml";
    let new = new.to_str().unwrap();
    let expected = [
        "step egg-shoes removed from hunt three-eggs: 2 customers lose a find",
        "step egg-cart added to hunt three-eggs: 2 customers in progress now need it",
        "pool welcome-10: 3 listed codes → 4 listed codes: 1 customer holds codes from it (and keeps them)",
        "(3 customers looked at)",
    ];

    // On the running server (a dry run: nothing switches).
    let url = format!("http://{}", s.addr);
    let (code, out, err) = diff(&[old, new, "--server", &url]);
    assert_eq!(code, 0, "{out}{err}");
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let (_, c) = request(s.addr, "GET", "/v1/config", "").unwrap();
    assert_eq!(c["version"], 1, "{c}");
    let status = terminate(&mut s.child, || s.log.lock().unwrap().clone());
    assert!(status.success());

    // On the stopped server's data: the same counts.
    let (code, out, err) = diff(&[old, new, "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Without customers: the changes only, as JSON too.
    let (code, out, _) = diff(&[old, new, "--json"]);
    assert_eq!(code, 0);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["changes"].as_array().unwrap().len(), 3, "{plan}");
    assert_eq!(plan["customers"], Value::Null, "{plan}");

    // A version that would take back cy's code: refused, exit 1.
    let unsafe_new = welcome_edited(dir.path(), "codes: [WELCOME-B2, WELCOME-C3]");
    let (code, out, _) = diff(&[
        old,
        unsafe_new.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused: pool welcome-10 no longer holds 1 code(s) already granted (for example WELCOME-A1)"),
        "{out}"
    );
}

#[test]
fn a_restart_keeps_the_version_in_force_unless_told_to_apply_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let welcome = root().join("examples/welcome.yaml");
    let mut s = serve(&data);
    let text = std::fs::read_to_string(&welcome).unwrap() + "\n# version 2, put over HTTP\n";
    let (status, put) = request(s.addr, "PUT", "/v1/config", &text).unwrap();
    assert_eq!(status, 200, "{put}");
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());

    // The same command again: version 2 stays in force, and the log says why the file
    // was not applied and how to apply it.
    let mut s = serve(&data);
    let (_, c) = request(s.addr, "GET", "/v1/config", "").unwrap();
    assert_eq!(c["version"], 2, "{c}");
    assert!(c["text"].as_str().unwrap().contains("put over HTTP"));
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("it is not applied"), "{log}");
    assert!(log.contains("--apply-config"), "{log}");
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());

    // Told to: the file is version 3.
    let mut s = serve_args(&data, &welcome, &["--apply-config"]);
    let (_, c) = request(s.addr, "GET", "/v1/config", "").unwrap();
    assert_eq!(c["version"], 3, "{c}");
    assert!(!c["text"].as_str().unwrap().contains("put over HTTP"));
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());

    // On a cluster the flag is refused before anything starts.
    let (code, _, err) = hunt_cmd(&[
        "serve",
        "--config",
        welcome.to_str().unwrap(),
        "--apply-config",
        "--cluster",
        "nats://127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--apply-config"), "{err}");
}

/// The README's tour, on any date: the quick start's eggs, the upload of the Black
/// Friday file, a gift-finder win whose notifications are dead letters (no secret), and
/// the first version's hunt still answering after the switch.
#[test]
fn the_readme_tour_shows_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(&dir.path().join("data"));
    let addr = s.addr;
    let eggs = json!([
        {"id": "e1", "type": "product_view", "user": "ann", "data": {"category": "shoes"}},
        {"id": "e2", "type": "page_view", "user": "ann", "data": {"url": "/blog/egg-hunt"}},
        {"id": "e3", "type": "search", "user": "ann", "data": {"query": "golden egg"}},
    ]);
    let (status, a) = request(addr, "POST", "/v1/events", &eggs.to_string()).unwrap();
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["results"][2]["outcomes"][2]["code"], "WELCOME-A1", "{a}");
    let bf = std::fs::read_to_string(root().join("examples/black-friday-eggs.yaml")).unwrap();
    let (status, put) = request(addr, "PUT", "/v1/config", &bf).unwrap();
    assert_eq!(status, 200, "{put}");
    let gil = json!([
        {"id": "g1", "type": "page_view", "user": "gil", "data": {"url": "/blog/gift-guide"}},
        {"id": "g2", "type": "search", "user": "gil", "data": {"query": "gifts"}},
    ]);
    let (status, a) = request(addr, "POST", "/v1/events", &gil.to_string()).unwrap();
    assert_eq!(status, 200, "{a}");
    assert!(a.to_string().contains("\"code\":\"WRAP-A1\""), "{a}");
    // The dead letters: `hunt dlq list` shows them once the notifier has had them.
    let t = Instant::now();
    let listed = loop {
        let (code, out, err) = dlq(addr, &["list"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("gift-finder") || t.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(listed.contains("crm"), "{listed}");
    assert!(listed.contains("HUNT_CRM_SECRET"), "{listed}");
    // Ann's hunt left the file with the upload; she keeps her code and her steps by
    // name, and the hunt's figures and winners still answer.
    let (status, w) = request(addr, "GET", "/v1/hunts/three-eggs/winners", "").unwrap();
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["in_force"], false, "{w}");
    assert_eq!(w["winners"][0]["user"], "ann", "{w}");
    assert_eq!(w["winners"][0]["code"], "WELCOME-A1", "{w}");
    let (status, st) = request(addr, "GET", "/v1/hunts/three-eggs/stats", "").unwrap();
    assert_eq!(status, 200, "{st}");
    assert_eq!(
        (st["in_force"].clone(), st["completions"].clone()),
        (json!(false), json!(1)),
        "{st}"
    );
    assert_eq!(st["funnel"].as_array().unwrap().len(), 3, "{st}");
    let (_, u) = request(addr, "GET", "/v1/users/ann", "").unwrap();
    assert_eq!(
        u["hunts"][0]["found"],
        json!(["egg-shoes", "egg-blog", "egg-search"]),
        "{u}"
    );
    assert_eq!(u["rewards"][0]["code"], "WELCOME-A1", "{u}");
    // A hunt no version had is still unknown.
    let (status, e) = request(addr, "GET", "/v1/hunts/nope/winners", "").unwrap();
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (404, json!("unknown_hunt")),
        "{e}"
    );
    let (status, _) = request(addr, "GET", "/v1/hunts/nope/stats", "").unwrap();
    assert_eq!(status, 404);
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());
}

#[test]
fn serve_without_a_hunts_file_starts_on_the_embedded_example() {
    let dir = tempfile::tempdir().unwrap();
    // Run away from the repository: the example must come from the binary itself.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hunt"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path());
    let mut s = serve_command(cmd);
    let (addr, log) = (s.addr, s.log.clone());
    let (_, c) = request(addr, "GET", "/v1/config", "").unwrap();
    assert_eq!(c["version"], 1, "{c}");
    assert!(
        c["name"].as_str().unwrap().contains("embedded example"),
        "{c}"
    );
    assert!(
        log.lock().unwrap().contains("serving the embedded example"),
        "the banner: {}",
        log.lock().unwrap()
    );
    // The example's hunt runs: three eggs win its first code.
    let eggs = json!([
        {"id": "e1", "user": "ann", "type": "product_view", "data": {"category": "shoes"}},
        {"id": "e2", "user": "ann", "type": "page_view", "data": {"url": "/blog/egg-hunt"}},
        {"id": "e3", "user": "ann", "type": "search", "data": {"query": "egg"}},
    ]);
    let (status, answer) = request(addr, "POST", "/v1/events", &eggs.to_string()).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.to_string().contains("WELCOME-A1"), "{answer}");
    let status = terminate(&mut s.child, || log.lock().unwrap().clone());
    assert!(status.success());
}

/// Reads from `s` until the server closes it or `limit` passes: what came, and whether
/// it was closed.
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (String, bool) {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // Reset by the server: closed too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_and_bodies_bounded_in_time() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let welcome = root().join("examples/welcome.yaml");
    let mut s = serve_args(
        &dir.path().join("data"),
        &welcome,
        &["--header-timeout", "1s", "--body-timeout", "1s"],
    );
    // Headers sent a byte at a time and never finished: closed after the timeout.
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(closed, "a sender of half a header is cut off");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // A kept-alive connection left idle after its answer: closed after the timeout.
    let mut idle = std::net::TcpStream::connect(s.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (text, closed) = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle keep-alive connection is closed");
    // A body that stops coming: 408 with a JSON error, and the good events of other
    // requests are unharmed.
    let mut body = std::net::TcpStream::connect(s.addr).unwrap();
    body.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"id\":",
    )
    .unwrap();
    let (text, _) = read_until_closed(&mut body, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"body_timeout\""), "{text}");
    // A declared body over the limit, with `Expect: 100-continue`: 413 at once, and no
    // `100 Continue` first.
    let mut big = std::net::TcpStream::connect(s.addr).unwrap();
    big.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 52428800\r\n\r\n",
    )
    .unwrap();
    let (text, _) = read_until_closed(&mut big, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("\"body_too_large\""), "{text}");
    // A request target or headers over the limits: JSON 414 and 431, not hyper's empty
    // answers.
    let mut long = std::net::TcpStream::connect(s.addr).unwrap();
    long.write_all(
        format!(
            "GET /v1/users/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "u".repeat(9000)
        )
        .as_bytes(),
    )
    .unwrap();
    let (text, _) = read_until_closed(&mut long, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 414"), "{text}");
    assert!(text.contains("\"uri_too_long\""), "{text}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut wide = std::net::TcpStream::connect(s.addr).unwrap();
    wide.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many}\r\n").as_bytes(),
    )
    .unwrap();
    let (text, _) = read_until_closed(&mut wide, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(text.contains("\"headers_too_large\""), "{text}");
    // Requests hyper cannot parse, which it answers itself before any handler: JSON
    // too, with a code, and the connection closed.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ] {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(garbage).unwrap();
        let (text, closed) = read_until_closed(&mut c, Duration::from_secs(10));
        assert!(closed, "{text}");
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("content-type: application/json"), "{text}");
        assert!(text.contains("\"bad_request\""), "{text}");
    }
    // A chunked body with a broken chunk: 400, not 413.
    let mut broken = std::net::TcpStream::connect(s.addr).unwrap();
    broken
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n[]\r\n0\r\n\r\n")
        .unwrap();
    let (text, _) = read_until_closed(&mut broken, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"bad_body\""), "{text}");
    // The descriptors are on /metrics.
    let (_, _) = request(s.addr, "GET", "/readyz", "").unwrap();
    let metrics = {
        use std::io::Read;
        let mut m = std::net::TcpStream::connect(s.addr).unwrap();
        m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        m.read_to_string(&mut t).unwrap();
        t
    };
    assert!(metrics.contains("\nhunt_process_open_fds "), "{metrics}");
    assert!(metrics.contains("\nhunt_process_max_fds "), "{metrics}");
    assert!(
        metrics.contains("\nhunt_http_connections_open "),
        "{metrics}"
    );
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());
}

/// The descriptor limit reached under a connection flood: every failed accept is
/// counted and logged (never a silent hang), the watcher warns near the limit, and the
/// server answers again once connections close.
#[test]
fn at_the_descriptor_limit_failed_accepts_are_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(&dir.path().join("data"));
    let pid = s.child.id() as libc::pid_t;
    let open = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count() as u64
    };
    // Lower the running server's soft limit to a few descriptors above what it holds
    // (its connection cap stays what it was fitted to at start).
    let mut was = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut was) },
        0
    );
    let limit = open() + 6;
    let lowered = libc::rlimit {
        rlim_cur: limit,
        rlim_max: was.rlim_max,
    };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lowered, std::ptr::null_mut()) },
        0
    );
    // More connections than descriptors left: the kernel queues them, the server
    // cannot accept them all.
    let held: Vec<std::net::TcpStream> = (0..24)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    let t = Instant::now();
    let log = || s.log.lock().unwrap().clone();
    while !(log().contains("cannot accept a connection")
        && log().contains("file descriptors near the limit"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no log line of the limit: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    // Room again: the server answers, and its figures say what happened.
    let t = Instant::now();
    let metrics = loop {
        use std::io::{Read, Write};
        let mut text = String::new();
        let got = std::net::TcpStream::connect(s.addr).and_then(|mut m| {
            m.set_read_timeout(Some(Duration::from_secs(5)))?;
            m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            m.read_to_string(&mut text)
        });
        if got.is_ok() && text.starts_with("HTTP/1.0 200") {
            break text;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{}", log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not on /metrics"))
    };
    assert!(figure("hunt_http_accept_errors_total") > 0, "{metrics}");
    assert_eq!(figure("hunt_process_max_fds"), limit);
    assert!(terminate(&mut s.child, log).success());
}

#[test]
fn connections_over_the_cap_get_a_json_503_and_are_counted() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let welcome = root().join("examples/welcome.yaml");
    let mut s = serve_args(
        &dir.path().join("data"),
        &welcome,
        &["--max-connections", "3", "--header-timeout", "30s"],
    );
    // Three idle connections hold every slot (each is accepted: a request on it is
    // answered).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    // The fourth is answered 503 with a JSON error, and closed.
    let mut over = std::net::TcpStream::connect(s.addr).unwrap();
    let (text, closed) = read_until_closed(&mut over, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"too_many_connections\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(closed);
    // Once one is let go, the next is served, and the refusal was counted.
    drop(held.pop());
    let t = Instant::now();
    let metrics = loop {
        let mut m = std::net::TcpStream::connect(s.addr).unwrap();
        m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = m.read_to_string(&mut text);
        if text.starts_with("HTTP/1.0 200") {
            break text;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        metrics.contains("\nhunt_http_connections_max 3\n"),
        "{metrics}"
    );
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hunt_http_connections_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 1.0, "{metrics}");
    drop(held);
    assert!(terminate(&mut s.child, || s.log.lock().unwrap().clone()).success());
}
