//! `hunt bench`: a load generator for a running server.
//!
//! Realistic shopper traffic (the `gen-traffic` model, received now), posted in batches
//! over plain HTTP/1.1 keep-alive connections, one per client. Closed loop by default:
//! each client sends its next request when the last is answered. With `--rate`, open
//! loop: request `i` is due at `start + i × batch / rate`, and its latency is measured
//! from that intended time, so a server that stalls is charged for the requests it kept
//! waiting (no coordinated omission, as in wrk2).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hunt_core::engine::Event;
use hunt_core::stats::percentile;
use hunt_core::traffic::{Stream, TrafficSpec};
use hyper::body::Bytes;
use serde::Serialize;

type Body = http_body_util::Full<Bytes>;
type Conn = hyper::client::conn::http1::SendRequest<Body>;

#[derive(clap::Args)]
pub struct Args {
    /// The server's base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API key with the `ingest` role (or set HUNT_API_KEY).
    #[arg(long)]
    key: Option<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// How long to send (e.g. 10s, 2m). Without it and without --events: 10s.
    #[arg(long, value_parser = hunt_core::time::Duration::parse)]
    duration: Option<hunt_core::time::Duration>,
    /// Stop after this many events.
    #[arg(long)]
    events: Option<u64>,
    /// Open loop: this many events per second, whatever the answers' pace.
    #[arg(long)]
    rate: Option<f64>,
    /// How many customers the traffic spreads over.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Share of customers who are hunting (0 to 1).
    #[arg(long, default_value_t = 0.3)]
    hunters: f64,
    /// Seed of the traffic.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Every so often (e.g. 1s), the latency of the requests answered in that interval,
    /// as the run goes: a stall shows when it happened.
    #[arg(long, value_parser = hunt_core::time::Duration::parse)]
    report_every: Option<hunt_core::time::Duration>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Every this many events, the traffic turns to new customers doing the same kinds of
/// things (`u-…~1`, `u-…~2`…), so that a long run keeps meeting customers it has not
/// seen; its sessions are paced as this many events of `gen-traffic` are.
const CUSTOMERS_TURN: u64 = 1_000_000;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    events_sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

/// Why requests failed, counted.
#[derive(Default, Serialize)]
struct Errors {
    /// Answers by HTTP status other than 200 and 400.
    status: std::collections::BTreeMap<u16, u64>,
    /// Connections refused or broken, requests without an answer.
    transport: u64,
}

#[derive(Serialize)]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    server: String,
    mode: &'static str,
    concurrency: usize,
    batch: usize,
    /// The open loop's target, in events per second.
    rate: Option<f64>,
    seconds: f64,
    requests: u64,
    requests_per_s: f64,
    events_sent: u64,
    events_accepted: u64,
    events_duplicate: u64,
    events_rejected: u64,
    /// Events answered (accepted, duplicate or rejected) per second.
    events_per_s: f64,
    /// Request latency: send (or, open loop, intended send) to the whole answer.
    ack_latency: Latency,
    errors: Errors,
    /// With `--report-every`: each interval's answered requests and their latency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    intervals: Vec<Interval>,
}

/// The requests answered in one interval of a run.
#[derive(Serialize)]
struct Interval {
    /// Seconds from the start to the interval's end.
    at_s: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Interval {
    /// The interval ending at `at_s`, of these latencies (in any order).
    fn of(at_s: f64, mut lat: Vec<Duration>) -> Interval {
        lat.sort();
        let ms = |q| percentile(&lat, q).as_secs_f64() * 1e3;
        Interval {
            at_s,
            requests: lat.len() as u64,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }
}

fn address(server: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = server.strip_prefix("http://").ok_or_else(|| {
        anyhow::anyhow!("--server must be an http:// URL (the load generator speaks plain HTTP/1.1), got {server}")
    })?;
    let host = rest.trim_end_matches('/');
    anyhow::ensure!(
        !host.contains('/'),
        "--server takes the base URL only (like http://127.0.0.1:8080), got {server}"
    );
    use std::net::ToSocketAddrs;
    let addr = host
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to no address"))?;
    Ok((addr, host.to_string()))
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// The body of the next request: the stream's next `n` events, with ids unique to this
/// run. Made as the run goes: the first request goes out at once.
fn body(source: &parking_lot::Mutex<Source>, run: &str, n: u64) -> Bytes {
    let (first, events) = {
        let mut s = source.lock();
        let first = s.made;
        s.made += n;
        (
            first,
            s.stream.by_ref().take(n as usize).collect::<Vec<_>>(),
        )
    };
    let events: Vec<Event> = events
        .into_iter()
        .zip(first..)
        .map(|(mut e, seq)| {
            e.id = format!("{run}-{seq}");
            // Received now: the generator's times lie in its own window.
            e.time = None;
            let turn = seq / CUSTOMERS_TURN;
            if turn > 0 {
                e.user = format!("{}~{turn}", e.user);
            }
            e
        })
        .collect();
    Bytes::from(serde_json::to_vec(&events).expect("events serialize"))
}

/// Where requests' events come from.
struct Source {
    stream: Stream,
    made: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    check(&args)?;
    let (addr, host) = address(&args.server)?;
    let duration = match (args.duration, args.events) {
        (Some(d), _) => Some(Duration::from_millis(d.0.max(1) as u64)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let job = Arc::new(Job {
        addr,
        host,
        key: args
            .key
            .clone()
            .or_else(|| std::env::var("HUNT_API_KEY").ok()),
        source: traffic(&args),
        run_id: format!(
            "bench{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        ),
        batch: args.batch,
        events_total: args.events,
        requests_max: args
            .events
            .map(|e| e.div_ceil(args.batch as u64))
            .unwrap_or(u64::MAX),
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.batch as f64 / r)),
        tally: Tally::default(),
        next: AtomicU64::new(0),
        errors: parking_lot::Mutex::new(Errors::default()),
        answered: args
            .report_every
            .map(|_| parking_lot::Mutex::new(Vec::new())),
    });
    let bar = progress_bar(&args, duration);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let every = args
        .report_every
        .map(|d| Duration::from_millis(d.0.max(1) as u64));
    let text = !args.json;
    let (latencies, seconds, intervals) = rt.block_on(drive(
        job.clone(),
        args.concurrency,
        duration,
        bar,
        every.map(|e| (e, text)),
    ))?;
    let mut report = report(&args, &job, &latencies, seconds);
    report.intervals = intervals;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let failed = report.errors.transport > 0 || !report.errors.status.is_empty();
    let answered = report.events_accepted + report.events_duplicate + report.events_rejected;
    Ok(if failed && answered == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=4096).contains(&args.concurrency),
        "--concurrency must be 1-4096"
    );
    anyhow::ensure!(
        (1..=100_000).contains(&args.batch),
        "--batch must be 1-100000"
    );
    anyhow::ensure!(args.users >= 1, "--users must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.hunters),
        "--hunters must be 0 to 1"
    );
    if let Some(r) = args.rate {
        anyhow::ensure!(r > 0.0 && r.is_finite(), "--rate must be above 0");
    }
    if let Some(e) = args.events {
        anyhow::ensure!(e >= 1, "--events must be at least 1");
    }
    Ok(())
}

/// The traffic requests are made of, made as they are sent.
fn traffic(args: &Args) -> parking_lot::Mutex<Source> {
    parking_lot::Mutex::new(Source {
        stream: Stream::new(&TrafficSpec {
            users: args.users,
            events: CUSTOMERS_TURN,
            seed: args.seed,
            hunters: args.hunters,
            ..TrafficSpec::default()
        }),
        made: 0,
    })
}

fn progress_bar(args: &Args, duration: Option<Duration>) -> indicatif::ProgressBar {
    if args.quiet || args.json {
        return indicatif::ProgressBar::hidden();
    }
    let b = match duration {
        Some(d) => indicatif::ProgressBar::new(d.as_secs().max(1)),
        None => indicatif::ProgressBar::new(args.events.unwrap_or(0)),
    };
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    b
}

/// What every client shares: where to send, what, how fast, and the counts.
struct Job {
    addr: SocketAddr,
    host: String,
    key: Option<String>,
    source: parking_lot::Mutex<Source>,
    run_id: String,
    batch: usize,
    events_total: Option<u64>,
    requests_max: u64,
    /// Open loop: the time between two requests' turns.
    interval: Option<Duration>,
    tally: Tally,
    /// The next request's number, over all clients.
    next: AtomicU64,
    errors: parking_lot::Mutex<Errors>,
    /// With `--report-every`: latencies answered in the current interval.
    answered: Option<parking_lot::Mutex<Vec<Duration>>>,
}

/// Runs `concurrency` clients until the deadline or the last request; returns every
/// request's latency, sorted, the seconds it took, and with `report` (how often, and
/// whether to print each as it ends) the intervals.
async fn drive(
    job: Arc<Job>,
    concurrency: usize,
    duration: Option<Duration>,
    bar: indicatif::ProgressBar,
    report: Option<(Duration, bool)>,
) -> anyhow::Result<(Vec<Duration>, f64, Vec<Interval>)> {
    // Fail early and clearly when nothing listens there.
    connect(job.addr).await.map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(client(job.clone(), started, deadline)))
        .collect();
    // The progress bar, until every client is done.
    let progress = {
        let (bar, job) = (bar.clone(), job.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let sent = job.tally.events_sent.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                match duration {
                    Some(_) => bar.set_position(secs as u64),
                    None => bar.set_position(sent),
                }
                bar.set_message(format!("{:.0} events/s", sent as f64 / secs.max(1e-3)));
            }
        })
    };
    // Each interval's figures, taken (and printed) as it ends.
    let intervals = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let reporter = report.map(|(every, print)| {
        let (bar, job, intervals) = (bar.clone(), job.clone(), intervals.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at((started + every).into(), every);
            loop {
                tick.tick().await;
                let i = job.take_interval(started);
                if print {
                    bar.suspend(|| print_interval(&i));
                }
                intervals.lock().push(i);
            }
        })
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    if let Some((_, print)) = report {
        if let Some(r) = reporter {
            r.abort();
            let _ = r.await;
        }
        // The last, shorter interval: whatever was answered since the last tick.
        let last = job.take_interval(started);
        if last.requests > 0 {
            if print {
                bar.suspend(|| print_interval(&last));
            }
            intervals.lock().push(last);
        }
    }
    let intervals = std::mem::take(&mut *intervals.lock());
    bar.finish_and_clear();
    all.sort();
    Ok((all, seconds, intervals))
}

/// One client on its own connection: requests until the deadline or the last one;
/// returns each answered request's latency.
async fn client(job: Arc<Job>, started: Instant, deadline: Option<Instant>) -> Vec<Duration> {
    let mut lat = Vec::new();
    let mut conn: Option<Conn> = None;
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.requests_max {
            break;
        }
        // Open loop: wait for the request's turn; its clock starts then.
        let intended = match job.interval {
            Some(iv) => {
                let due = started + iv.mul_f64(i as f64);
                if deadline.is_some_and(|d| due >= d) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
        };
        // The last request of an --events run carries the rest.
        let n = match job.events_total {
            Some(total) => (total - i * job.batch as u64).min(job.batch as u64),
            None => job.batch as u64,
        };
        let body = body(&job.source, &job.run_id, n);
        if conn.is_none() {
            match connect(job.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    job.errors.lock().transport += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let answer = post(c, &job, body).await;
        job.tally.requests.fetch_add(1, Ordering::Relaxed);
        job.tally.events_sent.fetch_add(n, Ordering::Relaxed);
        match answer {
            Ok((status, bytes)) => {
                let took = intended.elapsed();
                lat.push(took);
                if let Some(i) = &job.answered {
                    i.lock().push(took);
                }
                job.count(status, &bytes);
            }
            Err(_) => {
                job.errors.lock().transport += 1;
                conn = None;
            }
        }
    }
    lat
}

/// One request: its status and whole body.
async fn post(c: &mut Conn, job: &Job, body: Bytes) -> Result<(u16, Bytes), String> {
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("host", &job.host)
        .header("content-type", "application/json");
    if let Some(k) = &job.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req.body(Body::new(body)).expect("a valid request");
    c.ready().await.map_err(|e| e.to_string())?;
    let r = c.send_request(req).await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let bytes = r
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

impl Job {
    /// The interval ending now: the latencies answered since the last one, taken.
    fn take_interval(&self, started: Instant) -> Interval {
        let lat = self
            .answered
            .as_ref()
            .map(|i| std::mem::take(&mut *i.lock()))
            .unwrap_or_default();
        Interval::of(started.elapsed().as_secs_f64(), lat)
    }

    /// Counts an answer: its events by status, or the request's status as an error.
    fn count(&self, status: u16, bytes: &[u8]) {
        if !matches!(status, 200 | 400) {
            *self.errors.lock().status.entry(status).or_default() += 1;
            return;
        }
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let count = |k: &str| v[k].as_u64().unwrap_or(0);
        let t = &self.tally;
        t.accepted.fetch_add(count("accepted"), Ordering::Relaxed);
        t.duplicates
            .fetch_add(count("duplicates"), Ordering::Relaxed);
        t.rejected.fetch_add(count("rejected"), Ordering::Relaxed);
        if status == 400 && v.get("accepted").is_none() {
            *self.errors.lock().status.entry(status).or_default() += 1;
        }
    }
}

fn report(args: &Args, job: &Job, latencies: &[Duration], seconds: f64) -> Report {
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let tally = &job.tally;
    let answered = t(&tally.accepted) + t(&tally.duplicates) + t(&tally.rejected);
    let ms = |q| percentile(latencies, q).as_secs_f64() * 1e3;
    Report {
        server: args.server.clone(),
        mode: if args.rate.is_some() {
            "open loop"
        } else {
            "closed loop"
        },
        concurrency: args.concurrency,
        batch: args.batch,
        rate: args.rate,
        seconds,
        requests: t(&tally.requests),
        requests_per_s: t(&tally.requests) as f64 / seconds,
        events_sent: t(&tally.events_sent),
        events_accepted: t(&tally.accepted),
        events_duplicate: t(&tally.duplicates),
        events_rejected: t(&tally.rejected),
        events_per_s: answered as f64 / seconds,
        ack_latency: Latency {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: ms(1.0),
        },
        errors: std::mem::take(&mut *job.errors.lock()),
        intervals: Vec::new(),
    }
}

/// One interval as a line, as the run goes.
fn print_interval(i: &Interval) {
    println!(
        "{:>8.1} s  {:>7} requests  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        i.at_s, i.requests, i.p50_ms, i.p99_ms, i.max_ms
    );
}

fn print_report(r: &Report) {
    println!(
        "{} against {}: {} clients, batches of {}{} for {:.1} s",
        r.mode,
        r.server,
        r.concurrency,
        r.batch,
        r.rate
            .map(|x| format!(", {x:.0} events/s intended"))
            .unwrap_or_default(),
        r.seconds
    );
    let mut t = crate::render::table(&["figure", "value"]);
    t.add_row(vec![
        "events/s (answered)".to_string(),
        crate::render::count(r.events_per_s.max(0.0).round() as u64),
    ]);
    t.add_row(vec![
        "requests/s".to_string(),
        format!("{:.1}", r.requests_per_s),
    ]);
    t.add_row(vec![
        "events accepted / duplicate / rejected".to_string(),
        format!(
            "{} / {} / {}",
            crate::render::count(r.events_accepted),
            crate::render::count(r.events_duplicate),
            crate::render::count(r.events_rejected)
        ),
    ]);
    let l = &r.ack_latency;
    t.add_row(vec![
        "ack latency p50 / p90 / p99 / p99.9 / max (ms)".to_string(),
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} / {:.1}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ),
    ]);
    let mut errs: Vec<String> = r
        .errors
        .status
        .iter()
        .map(|(s, n)| format!("HTTP {s}: {n}"))
        .collect();
    if r.errors.transport > 0 {
        errs.push(format!("transport: {}", r.errors.transport));
    }
    t.add_row(vec![
        "errors".to_string(),
        if errs.is_empty() {
            "none".to_string()
        } else {
            errs.join(", ")
        },
    ]);
    println!("{t}");
}
