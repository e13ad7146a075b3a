//! Appending, reading, rolling segments, reopening, back-pressure, fail-stop.

use std::sync::Arc;

use hunt_store::fs::{Fs, RealFs, SimFs};
use hunt_store::{Durability, Log, LogConfig, LogError};

use crate::{all, block_on, open, small};

#[test]
fn appends_get_increasing_lsns_and_read_back_in_order_across_segments() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(1));
    let log = open(&fs, small("/data"));
    let mut lsns = Vec::new();
    for i in 0..200u32 {
        lsns.push(
            log.append(
                (i % 5) as u8,
                format!("record {i} {}", "x".repeat(i as usize % 90)).as_bytes(),
            )
            .unwrap(),
        );
    }
    assert_eq!(lsns, (1..=200).collect::<Vec<_>>());
    let segments = fs.list(std::path::Path::new("/data")).unwrap().len();
    assert!(
        segments > 3,
        "4 KiB segments should have rolled: {segments}"
    );
    let recs = all(&log);
    assert_eq!(recs.len(), 200);
    assert!(
        recs.iter()
            .enumerate()
            .all(|(i, r)| r.lsn == i as u64 + 1 && r.kind == (i % 5) as u8)
    );
    // From the middle, across a segment boundary.
    let tail: Vec<u64> = log
        .read_from(150)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .collect();
    assert_eq!(tail, (150..=200).collect::<Vec<_>>());
    drop(log);
    let (log, report) = Log::open(fs.clone(), small("/data")).unwrap();
    assert_eq!(
        (report.records, report.last_lsn, report.torn_tail.clone()),
        (200, 200, None)
    );
    assert_eq!(log.append(9, b"after reopen").unwrap(), 201);
}

#[test]
fn a_batch_gets_consecutive_lsns() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(2));
    let log = open(&fs, small("/data"));
    let span = log
        .submit(vec![
            (1, b"event".to_vec()),
            (2, b"outcome a".to_vec()),
            (2, b"outcome b".to_vec()),
        ])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(span.last, 3);
    // The ticket says where each record is: the first, and the i-th after it.
    assert_eq!((span.first, span.at(2)), (1, 3));
    assert_eq!(
        all(&log).iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![1, 2, 2]
    );
}

#[test]
fn many_threads_and_tasks_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let log = Arc::new(open(&fs, LogConfig::new(dir.path())));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| log.append(1, format!("t{t}-{i}").as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let from_async: Vec<u64> = (0..50)
        .map(|i| {
            block_on(async {
                log.submit_async(vec![(2, format!("a-{i}").into_bytes())])
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .last
            })
        })
        .collect();
    let mut lsns: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .chain(from_async)
        .collect();
    lsns.sort();
    assert_eq!(
        lsns,
        (1..=450).collect::<Vec<_>>(),
        "every append got its own lsn"
    );
    assert!(
        log.commits() < 450,
        "appends were grouped: {} commits",
        log.commits()
    );
    assert_eq!(all(&log).len(), 450);
}

#[test]
fn a_full_queue_makes_producers_wait_and_nothing_is_lost() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(3));
    let mut c = small("/data");
    c.queue_bytes_max = 600;
    let log = Arc::new(open(&fs, c));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..40)
                    .map(|i| log.submit(vec![(0, vec![t; 100 + i])]).unwrap())
                    .collect();
                let mut acked = 0;
                for t in tickets {
                    t.wait().unwrap();
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let acked: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(acked, 160);
    assert_eq!(all(&log).len(), 160);
}

#[test]
fn a_full_queue_makes_async_producers_wait_too() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(9));
    let mut c = small("/data");
    c.queue_bytes_max = 600;
    let log = Arc::new(open(&fs, c));
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                block_on(async {
                    let mut tickets = Vec::new();
                    for i in 0..40 {
                        tickets.push(log.submit_async(vec![(0, vec![t; 100 + i])]).await.unwrap());
                    }
                    let mut acked = 0;
                    for t in tickets {
                        t.await.unwrap();
                        acked += 1;
                    }
                    acked
                })
            })
        })
        .collect();
    let acked: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(acked, 160);
    assert_eq!(all(&log).len(), 160);
}

#[test]
fn a_failed_write_stops_the_log_for_good() {
    let sim = SimFs::new(4);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let log = open(&fs, small("/data"));
    log.append(1, b"fine").unwrap();
    sim.fail_after(0);
    let err = log.append(1, b"lost").unwrap_err();
    assert!(matches!(err, LogError::Stopped(_)), "{err:?}");
    // Every later append is refused, even though the disk is healthy again.
    sim.fail_after(1_000_000);
    let again = log.append(1, b"refused").unwrap_err();
    assert!(again.to_string().contains("restart the process"), "{again}");
    assert!(log.stopped().is_some());
    assert_eq!(log.durable_lsn(), 1);
}

#[test]
fn oversized_records_are_refused_before_anything_is_written() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(5));
    let log = open(&fs, small("/data"));
    let big = vec![0u8; hunt_store::record::PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(log.append(1, &big), Err(LogError::TooLarge(_))));
    assert_eq!(log.append(1, b"ok").unwrap(), 1);
}

#[test]
fn durability_none_says_so() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(6));
    let mut c = small("/data");
    c.durability = Durability::None;
    let (_log, report) = Log::open(fs, c).unwrap();
    assert!(
        report
            .to_string()
            .contains("durability=none (benchmarks only"),
        "{report}"
    );
}

/// A waker that records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn every_task_awaiting_clones_of_one_ticket_is_woken() {
    use std::future::Future;
    use std::task::{Context, Waker};
    // The server hands one ticket to every answer of a round; each answer's task
    // awaits its own clone. A ticket that kept one waker woke only the last of them.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(Arc::new(RealFs), LogConfig::new(dir.path()))
        .unwrap()
        .0;
    for _ in 0..1000 {
        // A batch ahead keeps the writer busy, so the ticket below is still pending.
        let _ahead = log.submit(vec![(0, vec![0; 1 << 20])]).unwrap();
        let t = log.submit(vec![(1, b"x".to_vec())]).unwrap();
        let flags: Vec<Arc<Flag>> = (0..3)
            .map(|_| Arc::new(Flag(std::sync::atomic::AtomicBool::new(false))))
            .collect();
        let mut pending = 0;
        for f in &flags {
            let waker = Waker::from(f.clone());
            let mut clone = t.clone();
            if std::pin::Pin::new(&mut clone)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
            {
                pending += 1;
            }
        }
        if pending < flags.len() {
            t.wait().unwrap();
            continue;
        }
        t.wait().unwrap();
        for (i, f) in flags.iter().enumerate() {
            assert!(
                f.0.load(std::sync::atomic::Ordering::SeqCst),
                "task {i} never woken"
            );
        }
        return;
    }
    panic!("never saw the ticket pending: the test proves nothing");
}
