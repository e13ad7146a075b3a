//! A child process for the kill test: appends with `fsync` durability from several
//! threads and prints `ACK <lsn> <payload>` for each acknowledged record, until killed.
//!
//! Usage: `hunt-store-torture DIR RUN`

use std::io::Write;
use std::sync::Arc;

use hunt_store::fs::RealFs;
use hunt_store::{Log, LogConfig};
use parking_lot::Mutex;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: hunt-store-torture DIR RUN");
        std::process::exit(2);
    };
    let mut config = LogConfig::new(&dir);
    config.segment_bytes = 256 * 1024;
    let log = match Log::open(Arc::new(RealFs), config) {
        Ok((l, _)) => Arc::new(l),
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            let run = run.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let payload = format!("r{run}-t{t}-{i}-{}", "x".repeat((i % 200) as usize));
                    match log.append(1, payload.as_bytes()) {
                        Ok(lsn) => {
                            let mut o = out.lock();
                            // Printed only after the record is durable.
                            let _ = writeln!(o, "ACK {lsn} {payload}");
                            let _ = o.flush();
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
