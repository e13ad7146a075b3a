//! Append throughput and acknowledgement latency of the log, against the disk's own
//! limit: a raw loop of write + fdatasync at the same batch size, in the same run,
//! interleaved (log 1, raw 1, log 8, raw 8, log 64, raw 64, then again), medians of
//! the rounds. Records are 300 bytes; durability is fsync.
//!
//! `cargo bench -p hunt-store --bench append` (HUNT_BENCH_ROUNDS, HUNT_BENCH_SECS).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hunt_core::stats::percentile;
use hunt_store::fs::RealFs;
use hunt_store::{Durability, Log, LogConfig};

const RECORD_BYTES: usize = 300;

struct Run {
    records_per_s: f64,
    /// Acknowledgement (log) or write+fdatasync (raw) latency percentiles, in µs.
    p50: f64,
    p99: f64,
    p999: f64,
    /// Records per group commit (log) or per sync (raw).
    batch: f64,
}

/// A run's figures from its latencies, start and record count.
fn summarize(mut lat: Vec<Duration>, started: Instant, records: f64, batch: f64) -> Run {
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let us = |q| percentile(&lat, q).as_secs_f64() * 1e6;
    Run {
        records_per_s: records / elapsed,
        p50: us(0.5),
        p99: us(0.99),
        p999: us(0.999),
        batch,
    }
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn run_log(base: &Path, producers: usize, secs: f64) -> Run {
    let dir = fresh(base, "log");
    let mut config = LogConfig::new(&dir);
    config.durability = Durability::Fsync;
    let (log, _) = Log::open(Arc::new(RealFs), config).expect("open log");
    let log = Arc::new(log);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let payload = vec![b'r'; RECORD_BYTES];
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    log.append(1, &payload).expect("append");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer"))
        .collect();
    let n = lat.len() as f64;
    summarize(lat, started, n, n / log.commits().max(1) as f64)
}

/// Producers as async tasks on a 2-thread runtime, as the server will append.
fn run_log_async(base: &Path, producers: usize, secs: f64) -> Run {
    let dir = fresh(base, "log-async");
    let (log, _) = Log::open(Arc::new(RealFs), LogConfig::new(&dir)).expect("open log");
    let log = Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            rt.spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ticket = log
                        .submit_async(vec![(1, vec![b'r'; RECORD_BYTES])])
                        .await
                        .expect("submit");
                    ticket.await.expect("append");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = rt.block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let n = lat.len() as f64;
    summarize(lat, started, n, n / log.commits().max(1) as f64)
}

fn run_raw(base: &Path, batch: usize, secs: f64) -> Run {
    let dir = fresh(base, "raw");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .expect("raw file");
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .expect("dir sync");
    let buf = vec![b'r'; batch * (RECORD_BYTES + 19)];
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed());
    }
    let records = (lat.len() * batch) as f64;
    summarize(lat, started, records, batch as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used here.
    let rounds: usize = std::env::var("HUNT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let secs: f64 = std::env::var("HUNT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hunt-store-bench");
    let producer_counts = [1usize, 8, 64];
    let mut logs: Vec<Vec<Run>> = producer_counts.iter().map(|_| Vec::new()).collect();
    let mut raws: Vec<Vec<Run>> = producer_counts.iter().map(|_| Vec::new()).collect();
    let mut asyncs: Vec<Vec<Run>> = producer_counts.iter().map(|_| Vec::new()).collect();
    println!(
        "durability=fsync, {RECORD_BYTES}-byte records, {rounds} rounds of {secs}s, interleaved"
    );
    for round in 1..=rounds {
        for (i, &p) in producer_counts.iter().enumerate() {
            let l = run_log(&base, p, secs);
            let batch = l.batch.round().max(1.0) as usize;
            let r = run_raw(&base, batch, secs);
            println!(
                "round {round} producers {p:>2}: log {:>9.0} rec/s (batch {:>5.1}, ack p99 {:>8.0} µs) | raw {:>9.0} rec/s (fdatasync p99 {:>8.0} µs)",
                l.records_per_s, l.batch, l.p99, r.records_per_s, r.p99
            );
            let a = run_log_async(&base, p, secs);
            println!(
                "round {round} producers {p:>2}: async tasks {:>9.0} rec/s (batch {:>5.1}, ack p99 {:>8.0} µs)",
                a.records_per_s, a.batch, a.p99
            );
            logs[i].push(l);
            raws[i].push(r);
            asyncs[i].push(a);
        }
    }
    println!();
    println!("medians of {rounds} rounds:");
    println!(
        "| producers | log rec/s | raw rec/s (same batch) | log/raw | batch | ack p50 µs | ack p99 µs | ack p99.9 µs | raw p50 µs | raw p99 µs | raw p99.9 µs | ack p99 / raw p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, p) in producer_counts.iter().enumerate() {
        let m = |v: &Vec<Run>, f: fn(&Run) -> f64| median(v.iter().map(f).collect());
        let (l, r) = (&logs[i], &raws[i]);
        let (lr, rr) = (m(l, |x| x.records_per_s), m(r, |x| x.records_per_s));
        let (lp99, rp99) = (m(l, |x| x.p99), m(r, |x| x.p99));
        println!(
            "| {p} | {lr:.0} | {rr:.0} | {:.0} % | {:.1} | {:.0} | {lp99:.0} | {:.0} | {:.0} | {rp99:.0} | {:.0} | {:.2} |",
            100.0 * lr / rr,
            m(l, |x| x.batch),
            m(l, |x| x.p50),
            m(l, |x| x.p999),
            m(r, |x| x.p50),
            m(r, |x| x.p999),
            lp99 / rp99
        );
    }
    println!();
    println!("the same producers as async tasks on a 2-thread runtime (raw as above):");
    println!(
        "| producers | log rec/s | log/raw | batch | ack p50 µs | ack p99 µs | ack p99.9 µs | ack p99 / raw p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, p) in producer_counts.iter().enumerate() {
        let m = |v: &Vec<Run>, f: fn(&Run) -> f64| median(v.iter().map(f).collect());
        let (a, r) = (&asyncs[i], &raws[i]);
        println!(
            "| {p} | {:.0} | {:.0} % | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
            m(a, |x| x.records_per_s),
            100.0 * m(a, |x| x.records_per_s) / m(r, |x| x.records_per_s),
            m(a, |x| x.batch),
            m(a, |x| x.p50),
            m(a, |x| x.p99),
            m(a, |x| x.p999),
            m(a, |x| x.p99) / m(r, |x| x.p99)
        );
    }
    read_back(&base, rounds);
    let _ = std::fs::remove_dir_all(&base);
}

/// Reading from the page cache: 1 M records written once, then read back whole.
fn read_back(base: &Path, rounds: usize) {
    const N: usize = 1_000_000;
    let dir = fresh(base, "read");
    let mut config = LogConfig::new(&dir);
    config.durability = Durability::None; // only the written bytes matter here
    let (log, _) = Log::open(Arc::new(RealFs), config).expect("open log");
    let payload = vec![b'r'; RECORD_BYTES];
    let mut pending = Vec::new();
    for _ in 0..N / 1000 {
        pending.push(
            log.submit((0..1000).map(|_| (1u8, payload.clone())).collect())
                .expect("submit"),
        );
    }
    for t in pending {
        t.wait().expect("append");
    }
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let mut bytes = 0usize;
        for r in log.read_from(1).expect("reader") {
            bytes += r.expect("record").payload.len();
        }
        assert_eq!(bytes, N * RECORD_BYTES);
        rates.push(N as f64 / started.elapsed().as_secs_f64());
    }
    println!();
    println!(
        "reading {N} records of {RECORD_BYTES} bytes from the page cache: median {:.0} records/s over {rounds} rounds",
        median(rates)
    );
}
