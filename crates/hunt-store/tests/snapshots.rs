//! Snapshots: atomic saves, newest valid one loaded, damaged ones skipped with a warning.

use std::path::Path;
use std::sync::Arc;

use hunt_store::Snapshots;
use hunt_store::fs::{Fs, SimFs};

#[test]
fn newest_valid_snapshot_wins_and_damaged_ones_are_skipped() {
    let sim = SimFs::new(11);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let snaps = Snapshots::open(fs.clone(), Path::new("/d")).unwrap();
    assert_eq!(snaps.latest().unwrap().0, None);
    snaps.save(10, b"state at 10").unwrap();
    snaps.save(20, b"state at 20").unwrap();
    let (s, w) = snaps.latest().unwrap();
    assert_eq!((s.unwrap().lsn, w.len()), (20, 0));
    sim.corrupt(
        &Path::new("/d/snapshots").join(format!("{:020}.snap", 20)),
        30,
    );
    let (s, w) = snaps.latest().unwrap();
    let s = s.unwrap();
    assert_eq!(
        (s.lsn, s.payload.as_slice()),
        (10, b"state at 10".as_slice())
    );
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("checksum mismatch"), "{w:?}");
}

#[test]
fn a_crash_during_save_leaves_the_old_snapshot_or_the_new_one_whole() {
    for seed in 0..200 {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let snaps = Snapshots::open(fs.clone(), Path::new("/d")).unwrap();
        snaps.save(1, b"old").unwrap();
        sim.crash_after(seed % 5);
        let saved = snaps.save(2, &vec![7u8; 3000]).is_ok();
        sim.crash();
        let snaps = Snapshots::open(fs.clone(), Path::new("/d")).unwrap();
        let (s, _) = snaps.latest().unwrap();
        let s = s.expect("some snapshot survives");
        match s.lsn {
            2 => assert_eq!(s.payload, vec![7u8; 3000]),
            1 => assert!(!saved, "seed {seed}: a completed save was lost"),
            other => panic!("seed {seed}: unexpected lsn {other}"),
        }
    }
}

#[test]
fn retention_keeps_the_newest() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(12));
    let mut snaps = Snapshots::open(fs.clone(), Path::new("/d")).unwrap();
    snaps.keep = 2;
    for lsn in 1..=5 {
        snaps.save(lsn * 10, b"s").unwrap();
    }
    let mut names = fs.list(Path::new("/d/snapshots")).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{:020}.snap", 40), format!("{:020}.snap", 50)]
    );
}

#[test]
fn a_restart_loads_the_newest_snapshot_and_replays_only_the_tail() {
    use hunt_store::{Log, LogConfig};
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(13));
    let mut c = LogConfig::new("/r");
    c.segment_bytes = 1024;
    let log = Log::open(fs.clone(), c.clone()).unwrap().0;
    let snaps = Snapshots::open(fs.clone(), Path::new("/r")).unwrap();
    // The "projection": a running sum of the payloads' first bytes.
    let mut sum = 0u64;
    for i in 0..100u8 {
        log.append(1, &[i; 40]).unwrap();
        sum += u64::from(i);
        if i == 59 {
            snaps.save(60, &sum.to_le_bytes()).unwrap();
        }
    }
    drop(log);
    // Restart: state from the snapshot, then only the records after it.
    let log = Log::open(fs.clone(), c.clone()).unwrap().0;
    let (snap, warnings) = snaps.latest().unwrap();
    let snap = snap.unwrap();
    assert!(warnings.is_empty());
    let mut rebuilt = u64::from_le_bytes(snap.payload.try_into().unwrap());
    let tail: Vec<_> = log
        .read_from(snap.lsn + 1)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(tail.len(), 40, "only the tail is replayed");
    for r in &tail {
        rebuilt += u64::from(r.payload[0]);
    }
    assert_eq!(rebuilt, sum);
    // Retention: segments wholly before the snapshot can go; the log still opens and reads.
    let before = fs
        .list(Path::new("/r"))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    let pruned = log.prune_segments_before(snap.lsn + 1).unwrap();
    assert!(pruned > 0 && pruned < before, "pruned {pruned} of {before}");
    drop(log);
    let (log, report) = Log::open(fs.clone(), c).unwrap();
    assert_eq!(report.last_lsn, 100);
    let first = log.read_from(1).unwrap().next().unwrap().unwrap().lsn;
    assert!(
        first > 1 && first <= 61,
        "reading starts at the oldest kept record: {first}"
    );
    assert_eq!(log.read_from(61).unwrap().count(), 40);
    assert_eq!(log.append(1, b"next").unwrap(), 101);
}

#[test]
fn a_huge_length_in_a_snapshot_header_is_refused_not_a_panic() {
    // Found by the `snapshot` fuzz target: a length near u64::MAX overflowed a sum.
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(14));
    let snaps = Snapshots::open(fs.clone(), Path::new("/h")).unwrap();
    let mut bytes = b"HSNP\x01".to_vec();
    bytes.extend_from_slice(&7u64.to_le_bytes());
    bytes.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    bytes.extend_from_slice(&[0xff; 20]);
    let mut f = fs
        .open_append(
            &Path::new("/h/snapshots").join(format!("{:020}.snap", 7)),
            true,
        )
        .unwrap();
    f.append(&bytes).unwrap();
    drop(f);
    let (snap, warnings) = snaps.latest().unwrap();
    assert!(snap.is_none());
    assert!(warnings[0].contains("header says"), "{warnings:?}");
}
