//! The log: segments of records, appended through group commit, recovered on open.
//!
//! Producers (threads or async tasks) submit records; one writer thread takes everything
//! pending (up to `batch_bytes_max`), writes it with one write and makes it durable with
//! one `fdatasync`, and only then tells each producer where its records are (a `Span`).
//! A full queue (`queue_bytes_max`) makes producers wait. If a write or a sync fails, the log stops:
//! nothing more is acknowledged and every later append is refused, until the process
//! restarts and recovers from what is on disk.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::fs::{Fs, FsFile};
use crate::record::{self, DecodeError, FLAG_BATCH_CONTINUES, Lsn, PAYLOAD_BYTES_MAX, Record};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After `fdatasync`: an acknowledged record survives power loss. The default.
    Fsync,
    /// After the write only, with no sync: **for benchmarks only**; a crash can lose
    /// acknowledged records. Every report of a log opened so says so.
    None,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Fsync => f.write_str("durability=fsync"),
            Durability::None => {
                f.write_str("durability=none (benchmarks only: acknowledged records can be lost)")
            }
        }
    }
}

/// How to open a log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The data directory; segments live in it, snapshots under `snapshots/`.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// The most bytes one group commit writes.
    pub batch_bytes_max: usize,
    /// The most bytes waiting to be written; producers wait beyond it.
    pub queue_bytes_max: usize,
    pub durability: Durability,
    /// On a checksum failure before the tail: move the damaged part aside and go on
    /// (reporting what was lost) instead of refusing to open.
    pub repair: bool,
    /// Acknowledge before writing and syncing. **Wrong on purpose**: only the crash
    /// tests set it, to show they catch a log that acknowledges too early.
    #[doc(hidden)]
    pub ack_before_sync_for_tests: bool,
}

/// Default segment size: 64 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default group commit size: 4 MiB per write.
pub const BATCH_BYTES_DEFAULT: usize = 4 << 20;
/// Default queue bound: 64 MiB waiting.
pub const QUEUE_BYTES_DEFAULT: usize = 64 << 20;

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_DEFAULT,
            durability: Durability::Fsync,
            repair: false,
            ack_before_sync_for_tests: false,
        }
    }
}

/// Why the log refused or failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error(
        "the log stopped after a failed write or sync ({0}); nothing more is acknowledged: restart the process to recover"
    )]
    Stopped(String),
    #[error(
        "corrupt record in segment {segment} at offset {offset}: {reason}; refusing to start (open with repair to move the damaged part aside)"
    )]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("record of {0} bytes is over the limit of {PAYLOAD_BYTES_MAX}")]
    TooLarge(usize),
    #[error("the log is closed")]
    Closed,
    /// A replicated log refused the append because another owner has appended to the
    /// partition since this one last read or wrote it: this owner was deposed and must
    /// drop the partition, not retry.
    #[error(
        "partition {partition} has a newer owner: the log refused this node's append ({detail}); the partition is dropped here"
    )]
    Fenced { partition: u32, detail: String },
    /// A replicated log did not confirm an append (no quorum in time, or an error): the
    /// round may or may not be on the log, so it is refused, and the partition stops.
    #[error("the replicated log did not confirm an append to partition {partition}: {detail}")]
    Unconfirmed { partition: u32, detail: String },
}

pub(crate) fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> LogError {
    LogError::Io {
        op,
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub records: u64,
    /// The last LSN on disk (0: empty log).
    pub last_lsn: Lsn,
    /// A torn tail that was cut off: segment file, offset, bytes removed.
    pub torn_tail: Option<(String, u64, u64)>,
    /// With `repair`: what was moved aside to `damaged/` (segment, offset, bytes, intact
    /// records among them); the damaged records themselves are lost too.
    pub repaired: Option<(String, u64, u64, u64)>,
    pub durability: String,
}

impl std::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log: {} segment(s), {} record(s), last lsn {}, {}",
            self.segments, self.records, self.last_lsn, self.durability
        )?;
        if let Some((seg, off, bytes)) = &self.torn_tail {
            write!(
                f,
                "; cut a torn tail of {bytes} byte(s) from {seg} at offset {off}"
            )?;
        }
        if let Some((seg, off, bytes, lost)) = &self.repaired {
            write!(
                f,
                "; REPAIRED: moved {bytes} byte(s) from {seg} at offset {off} into damaged/: the damaged record(s) and {lost} intact record(s) after them are no longer in the log"
            )?;
        }
        Ok(())
    }
}

mod queue;
mod reader;
mod recovery;
mod ticket;
mod writer;

use queue::*;
pub use reader::Reader;
use recovery::*;
use ticket::*;
pub use ticket::{Span, Ticket, Tickets};
use writer::*;

/// Told of every group commit by the writer thread: keep it short and never block.
pub trait CommitObserver: Send + Sync {
    /// One group commit: `records` records in `bytes` bytes, written and synced, with
    /// `sync` the time the `fdatasync` took.
    fn committed(&self, records: usize, bytes: usize, sync: std::time::Duration);
}

/// An open log.
pub struct Log {
    shared: Arc<Shared>,
    fs: Arc<dyn Fs>,
    writer: Option<JoinHandle<()>>,
}

impl Log {
    fn start(
        fs: Arc<dyn Fs>,
        config: LogConfig,
        report: OpenReport,
        next_lsn: Lsn,
        last_segment: Option<(PathBuf, u64)>,
    ) -> Result<(Log, OpenReport), LogError> {
        let dir = config.dir.clone();
        let (file, path, len) = match last_segment {
            Some((path, len)) => (
                fs.open_append(&path, false)
                    .map_err(|e| io_err("open", &path, e))?,
                path,
                len,
            ),
            None => {
                let path = dir.join(segment_name(next_lsn));
                (new_segment(&*fs, &path)?, path, 0)
            }
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                stopped: None,
                closing: false,
                writer_idle: false,
                space_wakers: Vec::new(),
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            waiters: Arc::new(Waiters {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }),
            commits: AtomicU64::new(0),
            config,
            observer: std::sync::OnceLock::new(),
        });
        let writer = Writer {
            shared: shared.clone(),
            fs: fs.clone(),
            file,
            path,
            segment_len: len,
            next_lsn,
        };
        let handle = std::thread::Builder::new()
            .name("hunt-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| io_err("spawn writer for", &dir, e))?;
        Ok((
            Log {
                shared,
                fs,
                writer: Some(handle),
            },
            report,
        ))
    }

    /// Appends one record and waits until it is durable; returns its LSN.
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<Lsn, LogError> {
        Ok(self.submit(vec![(kind, payload.to_vec())])?.wait()?.last)
    }

    /// Queues records to be written together, with consecutive LSNs, waiting (blocking)
    /// while the queue is full. The ticket resolves to where the records are.
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>) -> Result<Ticket, LogError> {
        let bytes = check(&records)?;
        let mut q = self.shared.queue.lock();
        loop {
            refuse(&q)?;
            if has_room(&q, bytes, &self.shared.config) {
                return Ok(self.enqueue(&mut q, records, bytes));
            }
            self.shared.space.wait(&mut q);
        }
    }

    /// As [`Log::submit`], for async tasks: waits for room without blocking the thread.
    pub async fn submit_async(&self, records: Vec<(u8, Vec<u8>)>) -> Result<Ticket, LogError> {
        let bytes = check(&records)?;
        let mut records = Some(records);
        std::future::poll_fn(|cx| {
            let mut q = self.shared.queue.lock();
            if let Err(e) = refuse(&q) {
                return Poll::Ready(Err(e));
            }
            if has_room(&q, bytes, &self.shared.config) {
                let r = records.take().expect("polled again after completion");
                return Poll::Ready(Ok(self.enqueue(&mut q, r, bytes)));
            }
            q.space_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn enqueue(&self, q: &mut Queue, records: Vec<(u8, Vec<u8>)>, bytes: usize) -> Ticket {
        let ticket = Ticket::new(self.shared.waiters.clone());
        q.items.push_back(Pending {
            records,
            bytes,
            ticket: ticket.clone(),
        });
        q.bytes += bytes;
        if q.writer_idle {
            self.shared.work.notify_one();
        }
        ticket
    }

    /// The last LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Reads durable records from `from` on (up to the durable LSN at the time of the
    /// call), in order. A record that fails its checksum is an error, never returned.
    pub fn read_from(&self, from: Lsn) -> Result<Reader, LogError> {
        Reader::new(
            self.fs.clone(),
            self.shared.config.dir.clone(),
            from,
            self.durable_lsn(),
        )
    }

    /// Retention: deletes whole segments all of whose records are below `lsn` (for
    /// example, older than the oldest snapshot kept). The segment being written is never
    /// deleted. Nothing calls this by default: the log keeps every event unless an
    /// operator configures retention. Returns how many segments were deleted.
    pub fn prune_segments_before(&self, lsn: Lsn) -> Result<usize, LogError> {
        let dir = &self.shared.config.dir;
        let segments = list_segments(&*self.fs, dir)?;
        let mut deleted = 0;
        // A segment can go when the next one starts at or below `lsn`.
        for pair in segments.windows(2) {
            let (next_first, name) = (pair[1].0, &pair[0].1);
            if next_first > lsn {
                break;
            }
            let path = dir.join(name);
            self.fs
                .remove(&path)
                .map_err(|e| io_err("remove", &path, e))?;
            deleted += 1;
        }
        if deleted > 0 {
            self.fs
                .sync_dir(dir)
                .map_err(|e| io_err("sync directory", dir, e))?;
        }
        Ok(deleted)
    }

    /// Sets who is told of each group commit (once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.shared.observer.set(observer);
    }

    /// Group commits made so far.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Why the log stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.shared.queue.lock().stopped.clone()
    }

    /// Writes what is queued, then stops the writer.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let mut q = self.shared.queue.lock();
            q.closing = true;
            self.shared.work.notify_all();
        }
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}
