//! The crash suite: thousands of seeded crashes on the simulated disk while producers
//! append. After each, every acknowledged record is there exactly once and nothing
//! corrupt is returned. A log that acknowledges before syncing fails it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hunt_store::fs::{Fs, SimFs};
use hunt_store::{Log, LogConfig};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub seeds: u64,
    pub crashes: u64,
    pub acked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupt_returned: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seeds={} crashes={} acked={} lost={} duplicated={} corrupt_returned={}",
            self.seeds, self.crashes, self.acked, self.lost, self.duplicated, self.corrupt_returned
        )
    }
}

fn config(broken: bool) -> LogConfig {
    let mut c = LogConfig::new("/crash");
    c.segment_bytes = 2048;
    c.batch_bytes_max = 1024;
    c.ack_before_sync_for_tests = broken;
    c
}

/// Runs `seeds` seeds of `crashes_per_seed` crashes each.
pub fn run(seeds: std::ops::Range<u64>, crashes_per_seed: u64, broken: bool) -> Tally {
    let mut t = Tally::default();
    for seed in seeds {
        t.seeds += 1;
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        // Every payload ever acknowledged.
        let mut acked: Vec<Vec<u8>> = Vec::new();
        for epoch in 0..=crashes_per_seed {
            let log = match Log::open(fs.clone(), config(broken)) {
                Ok((l, _)) => Arc::new(l),
                Err(_) => {
                    t.corrupt_returned += 1;
                    break;
                }
            };
            check(&log, &acked, &mut t);
            if epoch == crashes_per_seed {
                break;
            }
            // Producers append until the disk dies under them.
            sim.crash_after(3 + (seed * 7 + epoch * 13) % 40);
            let got = Arc::new(Mutex::new(Vec::new()));
            let producers: Vec<_> = (0..3u64)
                .map(|p| {
                    let log = log.clone();
                    let got = got.clone();
                    std::thread::spawn(move || {
                        for i in 0..30u64 {
                            let size = ((seed + p * 31 + i * 17) % 300) as usize;
                            let mut payload = format!("s{seed}e{epoch}p{p}i{i}:").into_bytes();
                            payload.resize(payload.len() + size, b'a' + (i % 26) as u8);
                            match log.append(1, &payload) {
                                Ok(_) => got.lock().unwrap().push(payload),
                                Err(_) => return,
                            }
                        }
                    })
                })
                .collect();
            for h in producers {
                h.join().expect("producer");
            }
            if sim.crashes() <= epoch {
                sim.crash(); // the producers finished before the crash point
            }
            drop(log);
            let newly = std::mem::take(&mut *got.lock().unwrap());
            t.acked += newly.len() as u64;
            acked.extend(newly);
        }
        t.crashes += sim.crashes();
    }
    t
}

fn check(log: &Log, acked: &[Vec<u8>], t: &mut Tally) {
    let mut seen: HashMap<&[u8], u32> = HashMap::new();
    let known: std::collections::HashSet<&[u8]> = acked.iter().map(|p| p.as_slice()).collect();
    let records: Vec<_> = match log.read_from(1) {
        Ok(r) => r.collect(),
        Err(_) => {
            t.corrupt_returned += 1;
            return;
        }
    };
    let mut payloads = Vec::new();
    for r in records {
        match r {
            Ok(r) => payloads.push(r.payload),
            Err(_) => t.corrupt_returned += 1,
        }
    }
    for p in &payloads {
        // Unacknowledged records may survive; a record no producer wrote may not.
        let plausible = known.contains(p.as_slice()) || (p.starts_with(b"s") && p.contains(&b':'));
        if !plausible {
            t.corrupt_returned += 1;
        }
        *seen.entry(p.as_slice()).or_default() += 1;
    }
    for p in acked {
        match seen.get(p.as_slice()) {
            None => t.lost += 1,
            Some(1) => {}
            Some(_) => t.duplicated += 1,
        }
    }
}

#[test]
fn thousands_of_crashes_lose_nothing_acknowledged() {
    let t = run(0..1000, 3, false);
    println!("{t}");
    assert!(t.crashes >= 3000, "{t}");
    assert!(t.acked > 10_000, "{t}");
    assert_eq!((t.lost, t.duplicated, t.corrupt_returned), (0, 0, 0), "{t}");
}

#[test]
fn a_log_that_acknowledges_before_syncing_fails_the_suite() {
    let t = run(0..200, 3, true);
    println!("broken build: {t}");
    assert!(
        t.lost > 0,
        "the suite must catch acknowledgements made before the sync: {t}"
    );
}
