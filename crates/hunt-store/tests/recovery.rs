//! Opening after damage: a torn tail is cut and reported; damage before the tail stops
//! the start, naming segment and offset, unless repair is asked for.

use std::path::Path;
use std::sync::Arc;

use hunt_store::fs::{Fs, RealFs, SimFs};
use hunt_store::{Log, LogConfig, LogError};

use crate::{all, open, small};

fn segments(fs: &dyn Fs, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs
        .list(Path::new(dir))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_torn_tail_is_cut_and_reported_on_a_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let log = open(&fs, LogConfig::new(dir.path()));
    for i in 0..10 {
        log.append(1, format!("r{i}").as_bytes()).unwrap();
    }
    drop(log);
    let seg = dir
        .path()
        .join(&segments(&*fs, dir.path().to_str().unwrap())[0]);
    // Half a record at the end, as a crash mid-write leaves it.
    let mut bytes = std::fs::read(&seg).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0x11, 0, 0, 0, 0xAB, 0xCD]);
    std::fs::write(&seg, &bytes).unwrap();
    let (log, report) = Log::open(fs.clone(), LogConfig::new(dir.path())).unwrap();
    let (name, offset, cut) = report.torn_tail.clone().expect("a torn tail");
    assert_eq!((offset as usize, cut), (whole, 6));
    assert!(seg.ends_with(&name));
    assert!(
        report.to_string().contains("cut a torn tail of 6 byte(s)"),
        "{report}"
    );
    assert_eq!(all(&log).len(), 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, whole);
}

#[test]
fn damage_before_the_tail_stops_the_start_naming_segment_and_offset() {
    let sim = SimFs::new(7);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let log = open(&fs, small("/data"));
    for i in 0..100 {
        log.append(1, format!("record number {i:>50}").as_bytes())
            .unwrap();
    }
    drop(log);
    let segs = segments(&*fs, "/data");
    assert!(segs.len() >= 2);
    sim.corrupt(&Path::new("/data").join(&segs[0]), 100);
    let err = match Log::open(fs.clone(), small("/data")) {
        Err(e) => e,
        Ok(_) => panic!("a corrupt segment must stop the start"),
    };
    let LogError::Corrupt {
        segment, offset, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(segment, &segs[0]);
    assert!(*offset <= 100);
    assert!(err.to_string().contains("open with repair"), "{err}");
}

#[test]
fn repair_moves_the_damage_aside_and_says_what_was_lost() {
    let sim = SimFs::new(8);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let log = open(&fs, small("/data"));
    for i in 0..100 {
        log.append(1, format!("record number {i:>50}").as_bytes())
            .unwrap();
    }
    drop(log);
    let segs = segments(&*fs, "/data");
    sim.corrupt(&Path::new("/data").join(&segs[1]), 50);
    let mut c = small("/data");
    c.repair = true;
    let (log, report) = Log::open(fs.clone(), c).unwrap();
    let (seg, _offset, bytes, lost) = report.repaired.clone().expect("repaired");
    assert_eq!(seg, segs[1]);
    assert!(bytes > 0 && lost > 0, "{report}");
    let kept = all(&log);
    assert_eq!(
        kept.len() as u64 + lost + 1,
        100,
        "kept {} + intact moved {lost} + the damaged one = 100",
        kept.len()
    );
    assert!(kept.iter().enumerate().all(|(i, r)| r.lsn == i as u64 + 1));
    assert!(!fs.list(Path::new("/data/damaged")).unwrap().is_empty());
    // The log goes on from where the good part ends.
    assert_eq!(log.append(1, b"next").unwrap(), kept.len() as u64 + 1);
}

#[test]
fn an_unfinished_batch_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let log = open(&fs, LogConfig::new(dir.path()));
    log.append(1, b"alone").unwrap();
    log.submit(vec![(1, b"event".to_vec()), (2, b"outcome".to_vec())])
        .unwrap()
        .wait()
        .unwrap();
    drop(log);
    let seg = dir
        .path()
        .join(&segments(&*fs, dir.path().to_str().unwrap())[0]);
    let bytes = std::fs::read(&seg).unwrap();
    // Keep the batch's first record only: its "more follows" flag is left dangling.
    let first_len = 19 + b"alone".len();
    let second_end = first_len + 19 + b"event".len();
    std::fs::write(&seg, &bytes[..second_end]).unwrap();
    let (log, report) = Log::open(fs.clone(), LogConfig::new(dir.path())).unwrap();
    assert!(report.torn_tail.is_some());
    let recs = all(&log);
    assert_eq!(recs.len(), 1, "the half batch is gone: {recs:?}");
    assert_eq!(log.append(1, b"next").unwrap(), 2);
}
