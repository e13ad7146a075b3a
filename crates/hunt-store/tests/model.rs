//! A model-based test, after Vector's disk-buffer model: random appends, crashes and
//! reopens on the simulated disk, against a model that knows which records were
//! acknowledged (synced) and which were only submitted.

use std::sync::Arc;

use hunt_store::fs::{Fs, SimFs};
use hunt_store::{Log, LogConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of records of these sizes and wait for it.
    Append(Vec<usize>),
    /// Submit without waiting (the record is in flight).
    Submit(usize),
    /// Power loss within the next few disk operations.
    CrashSoon(u64),
    /// Power loss now.
    Crash,
    /// Close cleanly and open again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..900, 1..4).prop_map(Op::Append),
        2 => (0usize..900).prop_map(Op::Submit),
        1 => (1u64..6).prop_map(Op::CrashSoon),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn config() -> LogConfig {
    let mut c = LogConfig::new("/m");
    c.segment_bytes = 3000;
    c.batch_bytes_max = 1500;
    c
}

fn payload(n: u64, size: usize) -> Vec<u8> {
    let mut p = format!("#{n}#").into_bytes();
    p.resize(size.max(p.len()), b'.');
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_log_keeps_every_acknowledged_record_and_nothing_else(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..40)) {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        // The model: what is on disk for sure, and what may or may not be (in order).
        let mut acked: Vec<Vec<u8>> = Vec::new();
        let mut maybe: Vec<Vec<u8>> = Vec::new();
        // Submitted, not yet known: their tickets tell.
        let mut inflight: Vec<(hunt_store::Ticket, Vec<u8>)> = Vec::new();
        let mut n = 0u64;
        let mut crashes = 0;
        let mut log = Some(Log::open(fs.clone(), config()).unwrap().0);
        for op in ops {
            if log.is_none() {
                maybe.extend(inflight.drain(..).map(|(_, p)| p));
                let (l, _) = Log::open(fs.clone(), config()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                // After recovery: the acknowledged records, then a prefix of the maybes.
                let got: Vec<Vec<u8>> = l.read_from(1).unwrap().map(|r| r.unwrap().payload).collect();
                prop_assert!(got.len() >= acked.len(), "lost acknowledged records: {} < {}", got.len(), acked.len());
                prop_assert_eq!(&got[..acked.len()], &acked[..]);
                let extra = &got[acked.len()..];
                prop_assert!(extra.len() <= maybe.len() && extra == &maybe[..extra.len()], "unexpected records after the acknowledged ones");
                acked = got;
                maybe.clear();
                log = Some(l);
            }
            let l = log.as_ref().expect("open");
            match op {
                Op::Append(sizes) => {
                    let batch: Vec<(u8, Vec<u8>)> = sizes.iter().map(|s| { n += 1; (1, payload(n, *s)) }).collect();
                    let payloads: Vec<Vec<u8>> = batch.iter().map(|b| b.1.clone()).collect();
                    match l.submit(batch).and_then(|t| t.wait()) {
                        // Acknowledged: so is everything submitted before it (one writer,
                        // in order, each commit synced).
                        Ok(_) => {
                            acked.append(&mut maybe);
                            acked.extend(inflight.drain(..).map(|(_, p)| p));
                            acked.extend(payloads);
                        }
                        Err(_) => {
                            maybe.extend(inflight.drain(..).map(|(_, p)| p));
                            maybe.extend(payloads);
                        }
                    }
                }
                Op::Submit(size) => {
                    n += 1;
                    let p = payload(n, size);
                    if let Ok(t) = l.submit(vec![(1, p.clone())]) {
                        inflight.push((t, p));
                    }
                }
                Op::CrashSoon(k) => sim.crash_after(k),
                Op::Crash => {
                    sim.crash();
                }
                Op::Reopen => {
                    let l = log.take().expect("open");
                    l.close();
                    // Closing wrote what was queued, unless the disk died: the tickets say.
                    for (t, p) in inflight.drain(..) {
                        match t.wait() {
                            Ok(_) if maybe.is_empty() => acked.push(p),
                            _ => maybe.push(p),
                        }
                    }
                }
            }
            if sim.crashes() > crashes {
                // Power was lost: the process is gone with it.
                crashes = sim.crashes();
                log = None;
            }
        }
    }
}
