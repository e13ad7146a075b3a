//! Any bytes as a log segment: recovery opens it or refuses with an error, never a
//! panic; whatever it opens reads back without errors and accepts a new append.
#![no_main]
use std::path::Path;
use std::sync::Arc;

use hunt_store::fs::{Fs, SimFs};
use hunt_store::{Log, LogConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sim = SimFs::new(1);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let dir = Path::new("/f");
    fs.create_dir_all(dir).unwrap();
    let mut f = fs
        .open_append(&dir.join(format!("{:020}.log", 1)), true)
        .unwrap();
    f.append(data).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    drop(f);
    if let Ok((log, report)) = Log::open(fs.clone(), LogConfig::new(dir)) {
        let read: Vec<_> = log.read_from(1).unwrap().collect();
        assert!(
            read.iter().all(|r| r.is_ok()),
            "recovered log returned an error"
        );
        assert_eq!(read.len() as u64, report.records);
        assert_eq!(log.append(1, b"after").unwrap(), report.last_lsn + 1);
    }
});
