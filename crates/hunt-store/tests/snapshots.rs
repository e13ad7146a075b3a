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
