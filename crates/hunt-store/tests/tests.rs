//! hunt-store's integration tests, one binary: `mod` per area. Failpoint tests are a
//! separate binary (`failpoints.rs`): failpoints are process-wide.

mod basics;
mod crash;
mod kill;
mod model;
mod recovery;
mod snapshots;

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use hunt_store::fs::Fs;
use hunt_store::{Log, LogConfig, Record};

/// A small config: tiny segments and batches, so tests cross every boundary.
pub fn small(dir: &str) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 4096;
    c.batch_bytes_max = 2048;
    c.queue_bytes_max = 16 * 1024;
    c
}

pub fn all(log: &Log) -> Vec<Record> {
    log.read_from(1).unwrap().map(|r| r.unwrap()).collect()
}

pub fn open(fs: &Arc<dyn Fs>, c: LogConfig) -> Log {
    Log::open(fs.clone(), c).unwrap().0
}

/// Runs a future to completion on this thread (enough for the log's futures).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}
