//! Any bytes as a snapshot file: loaded only if it checks out, skipped with a warning
//! otherwise, never a panic.
#![no_main]
use std::path::Path;
use std::sync::Arc;

use hunt_store::Snapshots;
use hunt_store::fs::{Fs, SimFs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(1));
    let snaps = Snapshots::open(fs.clone(), Path::new("/s")).unwrap();
    let mut f = fs
        .open_append(
            &Path::new("/s/snapshots").join(format!("{:020}.snap", 7)),
            true,
        )
        .unwrap();
    f.append(data).unwrap();
    drop(f);
    let (snap, warnings) = snaps.latest().unwrap();
    match snap {
        Some(s) => assert!(s.lsn == 7 && warnings.is_empty()),
        None => assert_eq!(warnings.len(), 1, "a skipped snapshot is reported"),
    }
});
