//! The crash harness: the real `hunt serve` binary on a data directory of its own, under
//! concurrent load with known event ids (retries and duplicates included), killed with
//! SIGKILL at seeded random moments and started again, many times. After every start it
//! checks through the API what the product promises:
//!
//! - every acknowledged event is there: posted again, it is a duplicate with its first
//!   answer's outcomes;
//! - no event is applied twice: a customer's count of `tick` events (a step with a huge
//!   `count`) lies between the ticks acknowledged and the ticks ever sent, and equals
//!   them once every request has been answered;
//! - no customer holds two codes of a pool with `per_user: 1`, no pool grants more than
//!   it holds, no code is held twice, and every code an answer granted is held;
//! - at the end, with every request answered, the webhook's queue drained and any dead
//!   letters retried, every outcome of an acknowledged event was delivered to the
//!   webhook (at least once, as documented: keys received twice are counted).
//!
//! Used by the `cli` test (20 cycles) and by `cargo run --release -p hunt --example
//! crash -- --cycles N` (the long mode).
//!
//! **On a cluster** (`Config::cluster`): three NATS servers and two nodes, the clients
//! sending to both addresses in turn (the standby forwards to the owner). The cycles
//! alternate: the owner node is killed (the standby takes over, and the killed node
//! comes back as the standby), then one NATS server is killed and started again. The
//! same checks run through the owner after every cycle, and the report gives each
//! failover's time, from the kill to the other node's `/readyz` 200.
//!
//! **With the partitions spread over three nodes** (`Config::spread`): three
//! `hunt serve --spread` nodes share the partitions, the clients send to all three, and
//! the cycles take turns: a node killed (its partitions are taken once their leases
//! lapse; it comes back and takes its share again), a node stopped gracefully (it hands
//! its partitions over; it comes back), a NATS server killed. Events refused `moving`
//! while a partition changes hands are sent again, as a client would. The checks run
//! through a node at random once every partition has the owner the assignment gives it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How to run.
pub struct Config {
    /// The `hunt` binary.
    pub hunt: PathBuf,
    pub cycles: usize,
    pub seed: u64,
    /// Client threads posting events.
    pub clients: usize,
    /// Print a line per cycle.
    pub verbose: bool,
    /// For the harness's own test: after each kill, cut this many bytes off the end of
    /// the newest log segment, as a disk that lost acknowledged writes would. The checks
    /// must then report losses.
    pub sabotage: Option<u64>,
    /// Run on a three-server NATS cluster with two nodes (see the module's docs).
    pub cluster: bool,
    /// With `cluster`: three nodes sharing the partitions (`--spread`).
    pub spread: bool,
}

/// What a run saw. Every field but the first five, `deliveries`, `redelivered` and
/// `dead_letters` (retried at the end) must be 0.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub cycles: usize,
    /// Events acknowledged (distinct ids).
    pub acked: usize,
    /// Requests that got no answer because of a kill, later sent again.
    pub retried: u64,
    /// Requests sent again after they had been answered (duplicates on purpose).
    pub resent: u64,
    pub granted: usize,
    /// Acknowledged events missing after a restart, or a customer's count below them.
    pub lost: usize,
    /// A duplicate answered with other outcomes than the first answer.
    pub wrong_answers: usize,
    /// A customer's count above the ticks ever sent: an event applied twice.
    pub applied_twice: usize,
    /// A customer holding more codes of the pool than `per_user` allows.
    pub duplicate_grants: usize,
    /// More codes granted than the pool holds.
    pub overgrants: usize,
    /// A code held by two customers.
    pub codes_twice: usize,
    /// A code granted in an answer that its customer does not hold.
    pub grants_lost: usize,
    /// Outcomes of acknowledged events that never reached the webhook: at the end the
    /// queue is drained and the dead letters retried, so every one must have.
    pub notifications_missing: usize,
    /// Deliveries received (counting repeats; 503s not counted).
    pub deliveries: usize,
    /// Idempotency keys received more than once (allowed: at least once).
    pub redelivered: usize,
    /// Deliveries whose idempotency key was not their CloudEvent's id, or had come
    /// before with another outcome.
    pub key_mismatches: usize,
    /// Dead letters at the end, before they were retried.
    pub dead_letters: usize,
    /// Anything else that went wrong, in words (the first few).
    pub problems: Vec<String>,
    /// On a cluster: owner nodes killed, NATS servers killed, and each failover's
    /// seconds from the kill to the other node's `/readyz` 200.
    pub node_kills: usize,
    pub nats_kills: usize,
    pub failovers: Vec<f64>,
    /// On a cluster: nodes that stopped by themselves (a deposed owner stops), started
    /// again as standbys.
    pub node_exits: usize,
    /// With the partitions spread: nodes stopped gracefully (SIGTERM) and started again.
    pub node_leaves: usize,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.lost
            + self.wrong_answers
            + self.applied_twice
            + self.duplicate_grants
            + self.overgrants
            + self.codes_twice
            + self.grants_lost
            + self.notifications_missing
            + self.key_mismatches
            + self.problems.len()
    }

    pub fn line(&self) -> String {
        format!(
            "cycles={} acked={} retried={} resent={} granted={} lost={} wrong_answers={} applied_twice={} duplicate_grants={} overgrants={} codes_twice={} grants_lost={} deliveries={} redelivered={} key_mismatches={} dead_letters={} notifications_missing={}",
            self.cycles,
            self.acked,
            self.retried,
            self.resent,
            self.granted,
            self.lost,
            self.wrong_answers,
            self.applied_twice,
            self.duplicate_grants,
            self.overgrants,
            self.codes_twice,
            self.grants_lost,
            self.deliveries,
            self.redelivered,
            self.key_mismatches,
            self.dead_letters,
            self.notifications_missing,
        )
    }

    /// The cluster's figures: kills, and the failovers' min, median and max seconds.
    pub fn cluster_line(&self) -> String {
        let mut f = self.failovers.clone();
        f.sort_by(f64::total_cmp);
        let at = |q: f64| {
            f.get(((f.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        format!(
            "node_kills={} node_leaves={} nats_kills={} node_exits={} failover_s min={} median={} max={}",
            self.node_kills,
            self.node_leaves,
            self.nats_kills,
            self.node_exits,
            s(at(0.0)),
            s(at(0.5)),
            s(at(1.0)),
        )
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// SplitMix64: the harness's only source of chance, so a seed replays a run's choices
/// (not its timing). The cluster tests draw their events from it too.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const POOL: usize = 20;
/// Each client posts for 12 customers at a time, and moves on to 12 new ones every 200
/// events: new customers keep completing the prize hunt, so notifications flow in
/// every cycle, not only in the first.
const USERS_PER_CLIENT: u64 = 12;
const EVENTS_PER_COHORT: u64 = 200;
const SECRET_ENV: &str = "HUNT_CRASH_SECRET";

fn hunts_file(hook: SocketAddr) -> String {
    format!(
        r#"version: 1
pools:
  - id: prize
    generate: {{ prefix: P-, count: {POOL} }}
sinks:
  - id: hook
    url: "http://{hook}/hook"
    timeout: 2s
    secret_env: {SECRET_ENV}
    breaker_open_for: 200ms
    max_attempts: 2
hunts:
  - id: tally
    steps: [{{ id: tick, on: tick, count: 1000000000 }}]
  - id: prize
    steps: [{{ id: a, on: a }}, {{ id: b, on: b }}]
    reward: {{ pool: prize, per_user: 1 }}
    notify: [hook]
"#
    )
}

/// What the clients and the checks share.
#[derive(Default)]
struct Books {
    /// First answer's outcomes of every acknowledged event, by id; with its user and
    /// body.
    acked: HashMap<String, (String, Value, Value)>,
    /// Ids in the order they were acknowledged (for the checks of recent ones).
    order: Vec<String>,
    /// Tick ids ever sent, per user (answered or not).
    ticks_sent: HashMap<String, HashSet<String>>,
    /// Tick ids acknowledged, per user.
    ticks_acked: HashMap<String, usize>,
    /// Codes granted in answers, per user.
    codes: HashMap<String, HashSet<String>>,
    /// Every customer events were sent for.
    users: HashSet<String>,
    /// Customers with an event acknowledged since the last check.
    touched: HashSet<String>,
    retried: u64,
    resent: u64,
    /// Requests that were not answered and are still to be sent again.
    unanswered: usize,
    problems: Vec<String>,
}

/// Pausing the clients: the checks run while none is posting.
struct Gate {
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((false, 0)),
            changed: Condvar::new(),
        }
    }

    /// A client waits here while closed, and counts itself as parked.
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 {
            return;
        }
        s.1 += 1;
        self.changed.notify_all();
        while !s.0 {
            s = self.changed.wait(s).unwrap();
        }
        s.1 -= 1;
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Closes and waits until `clients` are parked.
    fn close(&self, clients: usize) {
        let mut s = self.state.lock().unwrap();
        s.0 = false;
        while s.1 < clients {
            s = self.changed.wait(s).unwrap();
        }
    }
}

/// One request on its own connection: status and JSON body (or Null); None if the
/// connection failed (the server is down or was killed mid-request).
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_nodelay(true).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The webhook's receiver: records every delivery's key and data; answers 200, or 503
/// to one in twenty (so that retries happen and, with `max_attempts: 2`, one delivery in
/// ~400 becomes a dead letter, retried at the end).
#[derive(Default)]
struct Received {
    /// Idempotency key → times received.
    keys: HashMap<String, (usize, (String, String, String))>,
    /// Deliveries whose key is not their CloudEvent's id, or whose key arrived before
    /// with another outcome.
    key_mismatches: usize,
    /// (event id, outcome kind, step or code) of every delivery.
    outcomes: HashSet<(String, String, String)>,
    count: usize,
}

fn receiver(seed: u64) -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Received>> = Arc::default();
    let sink = got.clone();
    let n = Arc::new(AtomicU64::new(seed));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (sink, n) = (sink.clone(), n.clone());
            std::thread::spawn(move || serve_deliveries(conn, &sink, &n));
        }
    });
    (addr, got)
}

fn serve_deliveries(conn: TcpStream, got: &Mutex<Received>, n: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    loop {
        let (mut key, mut len) = (None, 0usize);
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "idempotency-key" => key = Some(value.trim().to_string()),
                    "content-length" => len = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let fail = Rng(n.fetch_add(1, Ordering::Relaxed)).below(20) == 0;
        if !fail {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let d = &v["data"];
            let outcome = outcome_id(d["event_id"].as_str().unwrap_or(""), d);
            let key = key.unwrap_or_default();
            let mut g = got.lock().unwrap();
            g.count += 1;
            // The key is the CloudEvent's id, and one key is always the same outcome.
            if v["id"].as_str() != Some(key.as_str()) {
                g.key_mismatches += 1;
            }
            match g.keys.get_mut(&key) {
                Some((n, first)) => {
                    *n += 1;
                    if *first != outcome {
                        g.key_mismatches += 1;
                    }
                }
                None => {
                    g.keys.insert(key, (1, outcome.clone()));
                }
            }
            g.outcomes.insert(outcome);
        }
        let status = if fail {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        // One write: `write!` makes one per piece, and small writes after the first
        // wait for the peer's delayed ACK (Nagle), 40 ms a delivery.
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An outcome as (event id, kind, detail), the same from an answer or a delivery.
fn outcome_id(event: &str, o: &Value) -> (String, String, String) {
    let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
    let detail = match o["kind"].as_str().unwrap_or("") {
        "step_found" => s("step"),
        "reward_granted" => s("code"),
        "reward_denied" => s("reason"),
        _ => String::new(),
    };
    (event.to_string(), s("kind"), detail)
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hunt serve` on `addr` with the harness's hunts file, its data in `data`,
/// and `more` flags.
fn spawn(
    cfg: &Config,
    dir: &Path,
    data: &str,
    addr: SocketAddr,
    more: &[String],
) -> Result<Server, String> {
    // A cluster node's log is kept beside its data (kept when a run fails).
    let log = if more.is_empty() {
        Stdio::null()
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{data}.log")))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let child = Command::new(&cfg.hunt)
        .args(["serve", "--config"])
        .arg(dir.join("hunts.yaml"))
        .arg("--data")
        .arg(dir.join(data))
        .args(["--listen", &addr.to_string()])
        .args(["--rate-per-user", "0", "--snapshot-every", "5000"])
        .args(more)
        .env(SECRET_ENV, "crash-harness-secret")
        .env("RUST_LOG", if more.is_empty() { "warn" } else { "info" })
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.hunt.display()))?;
    Ok(Server { child })
}

fn start(cfg: &Config, dir: &Path, addr: SocketAddr) -> Result<Server, String> {
    let server = spawn(cfg, dir, "data", addr, &[])?;
    let t = Instant::now();
    loop {
        if let Some((200, _)) = request(addr, "GET", "/readyz", "") {
            return Ok(server);
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err("the server was not ready within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One client: posts batches of its customers' events, sends unanswered requests again
/// until they are answered, and sometimes sends an answered one again on purpose.
fn client(
    c: usize,
    seed: u64,
    addrs: Vec<SocketAddr>,
    books: Arc<Mutex<Books>>,
    gate: Arc<Gate>,
    draining: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut seq = 0u64;
    let mut turn = c;
    let mut pending: Option<(Vec<Value>, bool)> = None;
    let mut answered: Vec<Vec<Value>> = Vec::new();
    loop {
        gate.pass();
        if done.load(Ordering::Relaxed) {
            return;
        }
        let (batch, retry) = match pending.take() {
            Some((b, r)) => (b, r),
            None if draining.load(Ordering::Relaxed) => {
                // Everything this client sent is answered.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            None if !answered.is_empty() && rng.below(10) == 0 => {
                let i = rng.below(answered.len() as u64) as usize;
                books.lock().unwrap().resent += 1;
                (answered[i].clone(), false)
            }
            None => {
                let n = 1 + rng.below(20) as usize;
                let mut b = Vec::with_capacity(n);
                let mut books = books.lock().unwrap();
                for _ in 0..n {
                    seq += 1;
                    let cohort = seq / EVENTS_PER_COHORT;
                    let user = format!(
                        "c{c}u{}",
                        cohort * USERS_PER_CLIENT + rng.below(USERS_PER_CLIENT)
                    );
                    books.users.insert(user.clone());
                    let id = format!("c{c}-{seq}");
                    let kind = match rng.below(20) {
                        0..=13 => "tick",
                        14..=16 => "a",
                        _ => "b",
                    };
                    if kind == "tick" {
                        books
                            .ticks_sent
                            .entry(user.clone())
                            .or_default()
                            .insert(id.clone());
                    }
                    b.push(json!({"id": id, "user": user, "type": kind}));
                }
                (b, false)
            }
        };
        let body = Value::Array(batch.clone()).to_string();
        // On a cluster, each request to the next node in turn.
        turn += 1;
        let addr = addrs[turn % addrs.len()];
        match request(addr, "POST", "/v1/events", &body) {
            Some((200, a)) => {
                let mut books = books.lock().unwrap();
                if retry {
                    books.retried += 1;
                    books.unanswered -= 1;
                }
                let results = a["results"].as_array().cloned().unwrap_or_default();
                if results.len() != batch.len() {
                    books.problems.push(format!(
                        "{} results for {} events: {a}",
                        results.len(),
                        batch.len()
                    ));
                    continue;
                }
                // Events refused for a retry (on a cluster, the pools' escrow out of
                // reach; with the partitions spread, a partition changing hands):
                // nothing of them was recorded; sent again.
                let mut resend = Vec::new();
                for (e, r) in batch.iter().zip(&results) {
                    let id = e["id"].as_str().unwrap_or("").to_string();
                    let user = e["user"].as_str().unwrap_or("").to_string();
                    let status = r["status"].as_str().unwrap_or("");
                    let outcomes = r["outcomes"].clone();
                    match (books.acked.get(&id), status) {
                        (Some((_, _, first)), "duplicate") => {
                            if *first != outcomes {
                                let p = format!(
                                    "{id}: answered as a duplicate with {outcomes}, first {first}"
                                );
                                books.problems.push(p);
                            }
                        }
                        // Sent again while its partition changes hands: refused for a
                        // retry, nothing done; it was acknowledged before.
                        (Some(_), "rejected") if r["code"] == "moving" => {}
                        (Some(_), s) => {
                            let p = format!("{id} was acknowledged, then answered `{s}`");
                            books.problems.push(p);
                        }
                        // New, or sent before without an answer: either is right.
                        (None, "accepted" | "duplicate") => {
                            for o in outcomes.as_array().into_iter().flatten() {
                                if o["kind"] == "reward_granted" {
                                    let code = o["code"].as_str().unwrap_or("").to_string();
                                    books.codes.entry(user.clone()).or_default().insert(code);
                                }
                            }
                            if e["type"] == "tick" {
                                *books.ticks_acked.entry(user.clone()).or_default() += 1;
                            }
                            books.order.push(id.clone());
                            books.touched.insert(user.clone());
                            books.acked.insert(id, (user, e.clone(), outcomes));
                        }
                        (None, "rejected")
                            if matches!(
                                r["code"].as_str(),
                                Some("pools_unavailable" | "moving")
                            ) =>
                        {
                            resend.push(e.clone());
                        }
                        (None, s) => {
                            books.problems.push(format!("{id} answered `{s}`: {r}"));
                        }
                    }
                }
                if !resend.is_empty() {
                    books.unanswered += 1;
                    pending = Some((resend, true));
                }
                drop(books);
                if !retry && answered.len() < 200 {
                    answered.push(batch);
                }
            }
            // Not stored (overload, starting, or a refusal), or not known (no answer; on
            // a cluster, 504 when the owner's answer did not come back to the standby):
            // sending again is safe.
            Some((429 | 503 | 504, _)) | None => {
                if !retry {
                    books.lock().unwrap().unanswered += 1;
                }
                pending = Some((batch, true));
                std::thread::sleep(Duration::from_millis(10));
            }
            Some((st, a)) => {
                let mut books = books.lock().unwrap();
                if retry {
                    books.unanswered -= 1;
                }
                books
                    .problems
                    .push(format!("a batch was answered {st}: {a}"));
            }
        }
    }
}

/// The checks through the API, with every client parked. `recent` ids are posted again
/// in full; `sample` more at random from the older ones.
fn check(
    addr: SocketAddr,
    books: &Books,
    recent_from: usize,
    sample: usize,
    exact: bool,
    rng: &mut Rng,
    report: &mut Report,
) {
    // Every customer at the end; otherwise those touched since the last check, those
    // granted a code, and a sample of the others.
    let users: Vec<&String> = if exact {
        books.users.iter().collect()
    } else {
        let all: Vec<&String> = books.users.iter().collect();
        let mut users: HashSet<&String> = books.touched.iter().chain(books.codes.keys()).collect();
        for _ in 0..sample.min(all.len()).min(50) {
            users.insert(all[rng.below(all.len() as u64) as usize]);
        }
        users.into_iter().collect()
    };
    let mut ids: Vec<&String> = books.order[recent_from.min(books.order.len())..]
        .iter()
        .collect();
    for _ in 0..sample.min(recent_from) {
        ids.push(&books.order[rng.below(recent_from as u64) as usize]);
    }
    for chunk in ids.chunks(500) {
        let body: Vec<&Value> = chunk.iter().map(|id| &books.acked[*id].1).collect();
        let Some(a) = answered(addr, "POST", "/v1/events", &json!(body).to_string()) else {
            report.problem("posting acknowledged events again failed".into());
            return;
        };
        for (id, r) in chunk
            .iter()
            .zip(a["results"].as_array().into_iter().flatten())
        {
            if r["status"] != "duplicate" {
                report.lost += 1;
                report.problem(format!("acknowledged {id} is missing: {r}"));
            } else if r["outcomes"] != books.acked[*id].2 {
                report.wrong_answers += 1;
                report.problem(format!(
                    "{id}: duplicate answered {}, first {}",
                    r["outcomes"], books.acked[*id].2
                ));
            }
        }
    }
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    for user in users {
        let Some((st, u)) = answered_or_404(addr, &format!("/v1/users/{user}")) else {
            report.problem(format!("GET /v1/users/{user} failed"));
            return;
        };
        if st == 404 {
            if books.ticks_acked.get(user).copied().unwrap_or(0) > 0
                || books.codes.contains_key(user)
            {
                report.lost += 1;
                report.problem(format!("customer {user} is unknown after a restart"));
            }
            continue;
        }
        let count = u["hunts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["hunt"] == "tally")
            .and_then(|h| h["counts"]["tick"].as_u64())
            .unwrap_or(0) as usize;
        let acked = books.ticks_acked.get(user).copied().unwrap_or(0);
        let sent = books.ticks_sent.get(user).map_or(0, |s| s.len());
        if count < acked {
            report.lost += acked - count;
            report.problem(format!(
                "{user}: {count} ticks counted, {acked} acknowledged"
            ));
        }
        if count > sent || (exact && count != sent) {
            if count > sent {
                report.applied_twice += count - sent;
            } else {
                report.lost += sent - count;
            }
            report.problem(format!("{user}: {count} ticks counted, {sent} sent"));
        }
        let codes: Vec<String> = u["rewards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["pool"] == "prize")
            .filter_map(|g| g["code"].as_str().map(String::from))
            .collect();
        if codes.len() > 1 {
            report.duplicate_grants += codes.len() - 1;
            report.problem(format!("{user} holds {codes:?}"));
        }
        for c in &codes {
            if let Some(other) = held.insert(c.clone(), user.clone()) {
                report.codes_twice += 1;
                report.problem(format!("{c} held by {user} and {other}"));
            }
        }
        for c in books.codes.get(user).into_iter().flatten() {
            if !codes.contains(c) {
                report.grants_lost += 1;
                report.problem(format!("{user} was granted {c} but does not hold it"));
            }
        }
    }
    if held.len() > POOL {
        report.overgrants += held.len() - POOL;
        report.problem(format!("{} codes held, the pool has {POOL}", held.len()));
    }
    report.granted = report.granted.max(held.len());
    match request(addr, "GET", "/v1/hunts/prize/stats", "") {
        Some((200, s)) => {
            let granted = s["rewards_granted"].as_u64().unwrap_or(u64::MAX) as usize;
            if granted > POOL {
                report.overgrants += granted - POOL;
                report.problem(format!("{granted} codes granted, the pool has {POOL}"));
            }
            if exact && granted != held.len() {
                report.problem(format!("{granted} codes granted, {} held", held.len()));
            }
        }
        other => report.problem(format!("GET /v1/hunts/prize/stats: {other:?}")),
    }
}

/// A 200 answer from `addr`, asked again for up to 60 s while it is refused for a
/// retry: 503 (with the partitions spread, a partition changing hands), or an answer
/// with events refused `moving` (posting acknowledged events again is safe).
fn answered(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<Value> {
    let t = Instant::now();
    loop {
        match request(addr, method, path, body) {
            Some((200, a)) => {
                let moving = a["results"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["code"] == "moving"));
                if !moving {
                    return Some(a);
                }
            }
            Some((503, _)) | None => {}
            Some(_) => return None,
        }
        if t.elapsed() > Duration::from_secs(60) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A customer: 200 or 404, asked again for up to 60 s while refused for a retry.
fn answered_or_404(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let t = Instant::now();
    loop {
        match request(addr, "GET", path, "") {
            Some((st @ (200 | 404), v)) => return Some((st, v)),
            Some((503, _)) | None if t.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => return None,
        }
    }
}

/// The whole run. Returns the report; the caller decides what fails.
pub fn run(cfg: &Config) -> Report {
    let tmp = std::env::temp_dir().join(format!("hunt-crash-{}-{}", std::process::id(), cfg.seed));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let report = if cfg.cluster && cfg.spread {
        run_spread_in(cfg, &tmp)
    } else if cfg.cluster {
        run_cluster_in(cfg, &tmp)
    } else {
        run_in(cfg, &tmp)
    };
    if report.failures() == 0 || cfg.sabotage.is_some() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("crash harness: data directory kept at {}", tmp.display());
    }
    report
}

fn run_in(cfg: &Config, dir: &Path) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(cfg.seed);
    let (hook, received) = receiver(cfg.seed);
    std::fs::write(dir.join("hunts.yaml"), hunts_file(hook)).unwrap();
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let load = Clients::start(cfg, vec![addr]);
    let (books, gate) = (&load.books, &load.gate);
    let mut checked = 0;
    let started = Instant::now();
    let mut last = None;
    for cycle in 0..=cfg.cycles {
        let server = match start(cfg, dir, addr) {
            Ok(s) => s,
            Err(e) => {
                report.problem(format!("cycle {cycle}: {e}"));
                break;
            }
        };
        {
            let mut b = books.lock().unwrap();
            check(addr, &b, checked, 200, false, &mut rng, &mut report);
            checked = b.order.len();
            b.touched.clear();
        }
        if cfg.verbose {
            let text = metrics_text(addr);
            eprintln!(
                "cycle {cycle}: started ({:.1} s) | received {} | sink queue {} dead letters {}",
                started.elapsed().as_secs_f64(),
                received.lock().unwrap().count,
                metric(&text, "hunt_sink_queue_depth{sink=\"hook\"}"),
                metric(&text, "hunt_sink_dead_letters{sink=\"hook\"}"),
            );
        }
        if cycle == cfg.cycles {
            last = Some(server);
            break;
        }
        gate.open();
        // Load for a random while, then SIGKILL, mid-request more often than not.
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        let mut server = server;
        let _ = server.child.kill();
        let _ = server.child.wait();
        gate.close(cfg.clients);
        if let Some(n) = cfg.sabotage {
            cut_newest_segment(&dir.join("data"), n);
        }
        report.cycles = cycle + 1;
        if cfg.verbose {
            let b = books.lock().unwrap();
            eprintln!(
                "cycle {cycle}: acked {} ({:.0} s) | lost {} applied_twice {} duplicate_grants {} overgrants {}",
                b.order.len(),
                started.elapsed().as_secs_f64(),
                report.lost,
                report.applied_twice,
                report.duplicate_grants,
                report.overgrants
            );
        }
    }
    if last.is_none() {
        report.problem("no server is running for the last checks".into());
    } else {
        end_checks(addr, &[addr], &load, &received, &mut rng, &mut report);
    }
    load.stop();
    report
}

/// A node of the cluster run: its id, address and process.
struct ClusterNode {
    id: &'static str,
    addr: SocketAddr,
    server: Option<Server>,
}

/// Starts a node; returns once it listens (as the owner or as a standby).
fn start_node(
    cfg: &Config,
    dir: &Path,
    nats: &hunt_cluster::testing::NatsCluster,
    id: &str,
    addr: SocketAddr,
) -> Result<Server, String> {
    let spread: &[&str] = if cfg.spread { &["--spread"] } else { &[] };
    let more: Vec<String> = [
        "--cluster",
        &nats.urls().join(","),
        "--cluster-monitor",
        &nats.monitor_urls().join(","),
        "--cluster-name",
        "crash",
        "--partitions",
        "8",
        "--node-id",
        id,
        "--lease",
        "3s",
    ]
    .iter()
    .chain(spread)
    .map(|s| s.to_string())
    .collect();
    let server = spawn(cfg, dir, &format!("data-{id}"), addr, &more)?;
    let t = Instant::now();
    while request(addr, "GET", "/readyz", "").is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!("node {id} did not listen within 120 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(server)
}

/// The node whose `/readyz` answers 200, waiting up to `limit`.
fn owner(nodes: &[ClusterNode], limit: Duration) -> Option<usize> {
    let t = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if let Some((200, _)) = request(n.addr, "GET", "/readyz", "") {
                return Some(i);
            }
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_cluster_in(cfg: &Config, dir: &Path) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(cfg.seed);
    let (hook, received) = receiver(cfg.seed);
    std::fs::write(dir.join("hunts.yaml"), hunts_file(hook)).unwrap();
    let free = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut nats = hunt_cluster::testing::NatsCluster::start(3, false);
    let mut nodes = [
        ClusterNode {
            id: "a",
            addr: free(),
            server: None,
        },
        ClusterNode {
            id: "b",
            addr: free(),
            server: None,
        },
    ];
    for n in nodes.iter_mut() {
        match start_node(cfg, dir, &nats, n.id, n.addr) {
            Ok(s) => n.server = Some(s),
            Err(e) => {
                report.problem(e);
                return report;
            }
        }
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let load = Clients::start(cfg, addrs);
    let (books, gate) = (&load.books, &load.gate);
    let mut checked = 0;
    let started = Instant::now();
    let mut at = None;
    for cycle in 0..=cfg.cycles {
        let Some(o) = owner(&nodes, Duration::from_secs(120)) else {
            report.problem(format!("cycle {cycle}: no node was ready within 120 s"));
            break;
        };
        {
            let mut b = books.lock().unwrap();
            check(
                nodes[o].addr,
                &b,
                checked,
                200,
                false,
                &mut rng,
                &mut report,
            );
            checked = b.order.len();
            b.touched.clear();
        }
        if cycle == cfg.cycles {
            at = Some(nodes[o].addr);
            break;
        }
        // Load for a random while, then a kill under it: the owner node on even cycles,
        // a NATS server on odd ones. The clients go on sending meanwhile.
        gate.open();
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        if cycle % 2 == 0 {
            if let Some(mut s) = nodes[o].server.take() {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
            let killed = Instant::now();
            let other = 1 - o;
            let t = Instant::now();
            loop {
                if let Some((200, _)) = request(nodes[other].addr, "GET", "/readyz", "") {
                    report.failovers.push(killed.elapsed().as_secs_f64());
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    report.problem(format!("cycle {cycle}: no takeover within 120 s"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            report.node_kills += 1;
        } else if !nats_server_killed(&mut nats, &mut rng, cycle, &mut report) {
            gate.close(cfg.clients);
            report.cycles = cycle + 1;
            break;
        }
        // A killed node comes back as the standby; a node that stopped by itself (a
        // deposed owner stops) too, and is counted.
        bring_back(cfg, dir, &nats, &mut nodes, cycle, &mut report);
        gate.close(cfg.clients);
        report.cycles = cycle + 1;
        if cfg.verbose {
            cycle_line(cycle, &report, &books.lock().unwrap(), started);
        }
    }
    let end = at.map(|a| (a, vec![a]));
    finish(end, load, &received, nodes, nats, &mut rng, &mut report);
    report
}

/// Waits until every partition's owner is the one the assignment over `live` gives it,
/// as `hunt cluster status` reads the owners.
fn spread_settled(
    cfg: &Config,
    nats: &hunt_cluster::testing::NatsCluster,
    live: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    let mut last = String::new();
    loop {
        let out = Command::new(&cfg.hunt)
            .args(["cluster", "status", "--cluster", &nats.urls().join(",")])
            .args(["--cluster-name", "crash", "--json"])
            .output()
            .map_err(|e| format!("hunt cluster status: {e}"))?;
        if let Ok(s) = serde_json::from_slice::<Value>(&out.stdout) {
            let owners = s["owners"].as_array().cloned().unwrap_or_default();
            let settled = owners.len() == 8
                && owners.iter().enumerate().all(|(p, o)| {
                    o["owner"].as_str() == hunt_cluster::assign::owner(p as u32, live)
                });
            if settled {
                return Ok(());
            }
            last = s["owners"].to_string();
        }
        if t.elapsed() > limit {
            return Err(format!(
                "the partitions did not settle on {live:?} within {limit:?}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_spread_in(cfg: &Config, dir: &Path) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(cfg.seed);
    let (hook, received) = receiver(cfg.seed);
    std::fs::write(dir.join("hunts.yaml"), hunts_file(hook)).unwrap();
    let free = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut nats = hunt_cluster::testing::NatsCluster::start(3, false);
    let mut nodes: Vec<ClusterNode> = ["a", "b", "c"]
        .into_iter()
        .map(|id| ClusterNode {
            id,
            addr: free(),
            server: None,
        })
        .collect();
    for n in nodes.iter_mut() {
        match start_node(cfg, dir, &nats, n.id, n.addr) {
            Ok(s) => n.server = Some(s),
            Err(e) => {
                report.problem(e);
                return report;
            }
        }
    }
    let ids: Vec<&str> = nodes.iter().map(|n| n.id).collect();
    let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let load = Clients::start(cfg, all.clone());
    let (books, gate) = (&load.books, &load.gate);
    let mut checked = 0;
    let started = Instant::now();
    let mut at = None;
    for cycle in 0..=cfg.cycles {
        // Every node up again: the partitions settle on all three, then the checks,
        // through one of them.
        if let Err(e) = spread_settled(cfg, &nats, &ids, Duration::from_secs(120)) {
            report.problem(format!("cycle {cycle}: {e}"));
            break;
        }
        let through = all[rng.below(all.len() as u64) as usize];
        {
            let mut b = books.lock().unwrap();
            check(through, &b, checked, 200, false, &mut rng, &mut report);
            checked = b.order.len();
            b.touched.clear();
        }
        if cycle == cfg.cycles {
            at = Some(through);
            break;
        }
        // Load for a random while, then under it: a node killed, a node stopped
        // gracefully, or a NATS server killed, in turn. The clients go on sending.
        gate.open();
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        let n = rng.below(nodes.len() as u64) as usize;
        match cycle % 3 {
            0 => {
                if let Some(mut s) = nodes[n].server.take() {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                }
                report.node_kills += 1;
                // The others take its partitions once their leases lapse.
                let others: Vec<&str> = ids.iter().copied().filter(|i| *i != nodes[n].id).collect();
                let killed = Instant::now();
                match spread_settled(cfg, &nats, &others, Duration::from_secs(120)) {
                    Ok(()) => report.failovers.push(killed.elapsed().as_secs_f64()),
                    Err(e) => report.problem(format!("cycle {cycle}: {e}")),
                }
            }
            1 => {
                if let Some(mut s) = nodes[n].server.take() {
                    let _ = Command::new("kill")
                        .args(["-TERM", &s.child.id().to_string()])
                        .status();
                    let t = Instant::now();
                    loop {
                        match s.child.try_wait() {
                            Ok(Some(st)) if st.success() => break,
                            Ok(Some(st)) => {
                                report.problem(format!(
                                    "cycle {cycle}: node {} stopped with {st}",
                                    nodes[n].id
                                ));
                                break;
                            }
                            _ if t.elapsed() > Duration::from_secs(60) => {
                                report.problem(format!(
                                    "cycle {cycle}: node {} did not stop within 60 s",
                                    nodes[n].id
                                ));
                                break;
                            }
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                }
                report.node_leaves += 1;
                std::thread::sleep(Duration::from_millis(rng.below(1000)));
            }
            _ => {
                if !nats_server_killed(&mut nats, &mut rng, cycle, &mut report) {
                    gate.close(cfg.clients);
                    report.cycles = cycle + 1;
                    break;
                }
            }
        }
        // A node killed or stopped comes back (it joins again); one that stopped by
        // itself too, and is counted.
        bring_back(cfg, dir, &nats, &mut nodes, cycle, &mut report);
        gate.close(cfg.clients);
        report.cycles = cycle + 1;
        if cfg.verbose {
            cycle_line(cycle, &report, &books.lock().unwrap(), started);
        }
    }
    let end = at.map(|a| (a, all.clone()));
    finish(end, load, &received, nodes, nats, &mut rng, &mut report);
    report
}

/// Kills one NATS server at random, starts it again after up to 3 s, and waits for the
/// cluster to be healthy; false (with the problem reported) if it is not within 180 s.
fn nats_server_killed(
    nats: &mut hunt_cluster::testing::NatsCluster,
    rng: &mut Rng,
    cycle: usize,
    report: &mut Report,
) -> bool {
    let i = rng.below(3) as usize;
    nats.kill(i);
    std::thread::sleep(Duration::from_millis(rng.below(3000)));
    nats.start_node(i);
    report.nats_kills += 1;
    // A server catching up on a long stream takes a while to be healthy.
    match nats.try_wait_ready(Duration::from_secs(180)) {
        Ok(()) => true,
        Err(e) => {
            let kept = nats.keep();
            report.problem(format!(
                "cycle {cycle}: {e} (the servers' data and logs are kept in {})",
                kept.display()
            ));
            false
        }
    }
}

/// Starts every node that is not running again: one killed or stopped by the cycle,
/// or one that stopped by itself (counted).
fn bring_back(
    cfg: &Config,
    dir: &Path,
    nats: &hunt_cluster::testing::NatsCluster,
    nodes: &mut [ClusterNode],
    cycle: usize,
    report: &mut Report,
) {
    for n in nodes.iter_mut() {
        let exited = match n.server.as_mut() {
            None => false,
            Some(s) => s.child.try_wait().ok().flatten().is_some(),
        };
        if exited {
            report.node_exits += 1;
            n.server = None;
        }
        if n.server.is_none() {
            match start_node(cfg, dir, nats, n.id, n.addr) {
                Ok(s) => n.server = Some(s),
                Err(e) => report.problem(format!("cycle {cycle}: {e}")),
            }
        }
    }
}

/// A cycle's line, for a verbose run.
fn cycle_line(cycle: usize, report: &Report, books: &Books, started: Instant) {
    eprintln!(
        "cycle {cycle}: {} | acked {} ({:.0} s) | lost {} applied_twice {} duplicate_grants {} overgrants {}",
        report.cluster_line(),
        books.order.len(),
        started.elapsed().as_secs_f64(),
        report.lost,
        report.applied_twice,
        report.duplicate_grants,
        report.overgrants
    );
}

/// The end of a cluster run: the last checks through the node `end` names (draining
/// the deliveries of the nodes it lists), then the clients, nodes and servers stopped;
/// the servers' data kept if anything failed.
fn finish<N>(
    end: Option<(SocketAddr, Vec<SocketAddr>)>,
    load: Clients,
    received: &Mutex<Received>,
    nodes: N,
    mut nats: hunt_cluster::testing::NatsCluster,
    rng: &mut Rng,
    report: &mut Report,
) {
    match end {
        None => report.problem("no node is ready for the last checks".into()),
        Some((addr, all)) => end_checks(addr, &all, &load, received, rng, report),
    }
    load.stop();
    drop(nodes);
    if report.failures() > 0 {
        eprintln!(
            "crash harness: the NATS servers' data and logs are kept at {}; the nodes' logs are beside their data",
            nats.keep().display()
        );
    }
    drop(nats);
}

/// The clients and what they share with the checks.
struct Clients {
    books: Arc<Mutex<Books>>,
    gate: Arc<Gate>,
    draining: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    count: usize,
}

impl Clients {
    /// Starts `cfg.clients` clients sending to `addrs` in turn, parked at the gate.
    fn start(cfg: &Config, addrs: Vec<SocketAddr>) -> Clients {
        let books: Arc<Mutex<Books>> = Arc::default();
        let gate = Arc::new(Gate::new());
        let draining = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let threads = (0..cfg.clients)
            .map(|c| {
                let (books, gate, draining, done) =
                    (books.clone(), gate.clone(), draining.clone(), done.clone());
                let (seed, addrs) = (cfg.seed, addrs.clone());
                std::thread::spawn(move || client(c, seed, addrs, books, gate, draining, done))
            })
            .collect();
        gate.close(cfg.clients);
        Clients {
            books,
            gate,
            draining,
            done,
            threads,
            count: cfg.clients,
        }
    }

    fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        self.gate.open();
        for c in self.threads {
            let _ = c.join();
        }
    }
}

/// The end, through the node at `addr`: every request still unanswered is sent until
/// answered; then the exact checks, and the webhook.
fn end_checks(
    addr: SocketAddr,
    all: &[SocketAddr],
    load: &Clients,
    received: &Mutex<Received>,
    rng: &mut Rng,
    report: &mut Report,
) {
    let Clients {
        books,
        gate,
        draining,
        count: clients,
        ..
    } = load;
    let clients = *clients;
    draining.store(true, Ordering::Relaxed);
    gate.open();
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        gate.close(clients);
        if books.lock().unwrap().unanswered == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            report.problem("requests still unanswered after 60 s".into());
            break;
        }
        gate.open();
    }
    {
        let b = books.lock().unwrap();
        check(addr, &b, 0, 0, true, rng, report);
        report.acked = b.acked.len();
        report.retried = b.retried;
        report.resent = b.resent;
        for p in &b.problems {
            report.problem(p.clone());
        }
    }
    // Every outcome of the prize hunt reaches the webhook. The receiver is up, so what
    // waits must drain; the dead letters (with two attempts and one in twenty failing,
    // one delivery in ~400) are then retried from the dead-letter queue, and everything
    // must have arrived.
    // Each node delivers its own partitions' outcomes.
    let drain_all = || all.iter().map(|a| drain(*a)).sum::<usize>();
    let mut waiting = drain_all();
    let dead = dlq_total(addr);
    report.dead_letters = dead;
    // A retry has a fresh attempt budget, and one attempt in twenty still fails: a few
    // rounds, as an operator would.
    let mut left = dead;
    for _ in 0..5 {
        if left == 0 {
            break;
        }
        match request(addr, "POST", "/v1/dlq/retry", r#"{"all": true}"#) {
            Some((200, _)) => waiting = drain_all(),
            other => {
                report.problem(format!("retrying the dead letters: {other:?}"));
                break;
            }
        }
        left = dlq_total(addr);
    }
    if waiting > 0 {
        report.problem(format!(
            "{waiting} deliveries still waiting, no longer draining, though the receiver is up"
        ));
    }
    {
        let got = received.lock().unwrap();
        let b = books.lock().unwrap();
        let mut missing = 0usize;
        for (id, (_, _, outcomes)) in &b.acked {
            for o in outcomes.as_array().into_iter().flatten() {
                if o["hunt"] == "prize" && !got.outcomes.contains(&outcome_id(id, o)) {
                    missing += 1;
                }
            }
        }
        report.deliveries = got.count;
        report.redelivered = got.keys.values().filter(|(n, _)| *n > 1).count();
        report.key_mismatches = got.key_mismatches;
        report.notifications_missing = missing;
        if missing > 0 {
            report.problem(format!(
                "{missing} outcomes of acknowledged events never reached the webhook \
                 ({dead} had been dead letters, {left} still are; {waiting} still waiting)"
            ));
        }
    }
}

fn dlq_total(addr: SocketAddr) -> usize {
    request(addr, "GET", "/v1/dlq", "")
        .and_then(|(_, v)| v["total"].as_u64())
        .unwrap_or(0) as usize
}

/// Waits while the webhook's deliveries drain; gives up once the queue has not shrunk
/// for 30 s. Returns how many still wait.
fn drain(addr: SocketAddr) -> usize {
    let (mut best, mut since) = (f64::INFINITY, Instant::now());
    loop {
        let text = metrics_text(addr);
        let waiting = metric(&text, "hunt_sink_queue_depth{sink=\"hook\"}")
            + metric(&text, "hunt_sink_in_flight{sink=\"hook\"}");
        if waiting == 0.0 && text.contains("hunt_sink_queue_depth") {
            return 0;
        }
        if waiting < best {
            (best, since) = (waiting, Instant::now());
        } else if since.elapsed() > Duration::from_secs(30) {
            return waiting as usize;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cut_newest_segment(data: &Path, bytes: u64) {
    let newest = std::fs::read_dir(data)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max();
    if let Some(p) = newest
        && let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p)
        && let Ok(len) = f.metadata().map(|m| m.len())
    {
        let _ = f.set_len(len.saturating_sub(bytes));
    }
}

fn metrics_text(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
