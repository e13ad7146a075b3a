//! The log: segments of records, appended through group commit, recovered on open.
//!
//! Producers (threads or async tasks) submit records; one writer thread takes everything
//! pending (up to `batch_bytes_max`), writes it with one write and makes it durable with
//! one `fdatasync`, and only then tells each producer its LSN. A full queue
//! (`queue_bytes_max`) makes producers wait. If a write or a sync fails, the log stops:
//! nothing more is acknowledged and every later append is refused, until the process
//! restarts and recovers from what is on disk.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

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

fn segment_name(first: Lsn) -> String {
    format!("{first:020}.log")
}

fn segment_first(name: &str) -> Option<Lsn> {
    name.strip_suffix(".log")?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Tickets: how a producer learns its LSN.

struct TicketState {
    result: Option<Result<Lsn, LogError>>,
    /// Every task awaiting the ticket or one of its clones (a ticket shared by several
    /// answers is awaited by several tasks; each must be woken).
    wakers: Vec<Waker>,
}

/// Where blocked producers wait: one condition for all of them, so that a commit wakes
/// every waiter with one broadcast instead of one wake-up per producer.
struct Waiters {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Waiters {
    /// Wakes every blocked producer; call after resolving tickets.
    fn wake_all(&self) {
        drop(lock(&self.lock));
        self.cv.notify_all();
    }
}

struct TicketInner {
    state: Mutex<TicketState>,
    waiters: Arc<Waiters>,
}

/// A pending append: wait for it (threads) or await it (tasks). Resolves to the LSN of
/// the last record of the batch once it is durable.
#[derive(Clone)]
pub struct Ticket(Arc<TicketInner>);

impl Ticket {
    fn new(waiters: Arc<Waiters>) -> Ticket {
        Ticket(Arc::new(TicketInner {
            state: Mutex::new(TicketState {
                result: None,
                wakers: Vec::new(),
            }),
            waiters,
        }))
    }

    /// Records the result and wakes an async waiter; blocked threads are woken by the
    /// caller's [`Waiters::wake_all`].
    fn resolve(&self, r: Result<Lsn, LogError>) {
        let mut s = lock(&self.0.state);
        if s.result.is_none() {
            s.result = Some(r);
        }
        for w in s.wakers.drain(..) {
            w.wake();
        }
    }

    fn result(&self) -> Option<Result<Lsn, LogError>> {
        lock(&self.0.state).result.clone()
    }

    /// Blocks until the records are durable (or the log failed).
    pub fn wait(&self) -> Result<Lsn, LogError> {
        // Checked under the waiters' lock: a result set before the broadcast is seen,
        // and a broadcast after the check wakes this wait.
        let n = &self.0.waiters;
        let mut g = lock(&n.lock);
        loop {
            if let Some(r) = self.result() {
                return r;
            }
            g = n.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Future for Ticket {
    type Output = Result<Lsn, LogError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.0.state);
        match &s.result {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// The shared queue.

struct Pending {
    /// (kind, payload) of each record, appended contiguously.
    records: Vec<(u8, Vec<u8>)>,
    bytes: usize,
    ticket: Ticket,
}

struct Queue {
    items: VecDeque<Pending>,
    bytes: usize,
    /// Set when a write or sync failed: every later append is refused with it.
    stopped: Option<String>,
    closing: bool,
    /// The writer is waiting for work: only then does a producer need to wake it (a
    /// wake-up is a system call; while the writer syncs, producers skip it).
    writer_idle: bool,
    /// Async producers waiting for room.
    space_wakers: Vec<Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for work.
    work: Condvar,
    /// Producers wait here for room.
    space: Condvar,
    durable_lsn: AtomicU64,
    waiters: Arc<Waiters>,
    /// Group commits made (one write and one sync each), for benchmarks and metrics.
    commits: AtomicU64,
    config: LogConfig,
    /// Told of every group commit, for metrics.
    observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

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
    /// Opens (or creates) the log in `config.dir`, recovering from a crash: a torn tail
    /// is cut off and reported; damage before it stops the open unless `repair` is set.
    pub fn open(fs: Arc<dyn Fs>, config: LogConfig) -> Result<(Log, OpenReport), LogError> {
        let dir = config.dir.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| io_err("create", &dir, e))?;
        let mut report = OpenReport {
            durability: config.durability.to_string(),
            ..OpenReport::default()
        };
        let segments = list_segments(&*fs, &dir)?;
        // After retention pruned old segments, the log starts at its first segment.
        let mut next_lsn: Lsn = segments.first().map_or(1, |s| s.0.max(1));
        let mut last_segment: Option<(PathBuf, u64)> = None;
        for (i, (first, name)) in segments.iter().enumerate() {
            let path = dir.join(name);
            let bytes = fs.read(&path).map_err(|e| io_err("read", &path, e))?;
            let is_last = i + 1 == segments.len();
            if *first != next_lsn && !(bytes.is_empty() && is_last) {
                return Err(LogError::Corrupt {
                    segment: name.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at lsn {first}, expected {next_lsn} (a segment is missing)"
                    ),
                });
            }
            let scan = scan_segment(&bytes, next_lsn);
            report.records += scan.records;
            next_lsn += scan.records;
            let mut len = bytes.len() as u64;
            if let Some(bad) = scan.bad {
                let torn = is_last && !scan.valid_after_bad;
                if torn {
                    let cut = bytes.len() as u64 - scan.good_end;
                    fs.truncate(&path, scan.good_end)
                        .map_err(|e| io_err("truncate", &path, e))?;
                    report.torn_tail = Some((name.clone(), scan.good_end, cut));
                    len = scan.good_end;
                } else if config.repair {
                    let lost = repair(&*fs, &dir, &segments[i..], scan.good_end, &bytes)?;
                    report.repaired = Some((name.clone(), scan.good_end, lost.0, lost.1));
                    report.segments = i + 1;
                    report.last_lsn = next_lsn - 1;
                    last_segment = Some((path, scan.good_end));
                    return Self::start(fs, config, report, next_lsn, last_segment);
                } else {
                    return Err(LogError::Corrupt {
                        segment: name.clone(),
                        offset: bad.0,
                        reason: bad.1,
                    });
                }
            }
            last_segment = Some((path, len));
        }
        report.segments = segments.len();
        report.last_lsn = next_lsn - 1;
        Self::start(fs, config, report, next_lsn, last_segment)
    }

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
        self.submit(vec![(kind, payload.to_vec())])?.wait()
    }

    /// Queues records to be written together, with consecutive LSNs, waiting (blocking)
    /// while the queue is full. The ticket resolves to the last record's LSN.
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>) -> Result<Ticket, LogError> {
        let bytes = check(&records)?;
        let mut q = lock(&self.shared.queue);
        loop {
            refuse(&q)?;
            if has_room(&q, bytes, &self.shared.config) {
                return Ok(self.enqueue(&mut q, records, bytes));
            }
            q = self.shared.space.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// As [`Log::submit`], for async tasks: waits for room without blocking the thread.
    pub async fn submit_async(&self, records: Vec<(u8, Vec<u8>)>) -> Result<Ticket, LogError> {
        let bytes = check(&records)?;
        let mut records = Some(records);
        std::future::poll_fn(|cx| {
            let mut q = lock(&self.shared.queue);
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
        lock(&self.shared.queue).stopped.clone()
    }

    /// Writes what is queued, then stops the writer.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
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

fn check(records: &[(u8, Vec<u8>)]) -> Result<usize, LogError> {
    let mut bytes = 0;
    for (_, p) in records {
        if p.len() > PAYLOAD_BYTES_MAX {
            return Err(LogError::TooLarge(p.len()));
        }
        bytes += p.len() + record::HEADER_BYTES;
    }
    Ok(bytes)
}

fn refuse(q: &Queue) -> Result<(), LogError> {
    if let Some(why) = &q.stopped {
        return Err(LogError::Stopped(why.clone()));
    }
    if q.closing {
        return Err(LogError::Closed);
    }
    Ok(())
}

/// Room for `bytes` more: always for a lone request, so one big batch cannot wait forever.
fn has_room(q: &Queue, bytes: usize, config: &LogConfig) -> bool {
    q.items.is_empty() || q.bytes + bytes <= config.queue_bytes_max
}

fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(Lsn, String)>, LogError> {
    let mut segs: Vec<(Lsn, String)> = fs
        .list(dir)
        .map_err(|e| io_err("list", dir, e))?
        .into_iter()
        .filter_map(|n| segment_first(&n).map(|f| (f, n)))
        .collect();
    segs.sort();
    Ok(segs)
}

/// A new, empty segment whose file and directory entry are durable.
fn new_segment(fs: &dyn Fs, path: &Path) -> Result<Box<dyn FsFile>, LogError> {
    let mut f = fs
        .open_append(path, true)
        .map_err(|e| io_err("create", path, e))?;
    f.sync_data().map_err(|e| io_err("sync", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| io_err("sync directory", dir, e))?;
    Ok(f)
}

/// What a scan of one segment found.
struct Scan {
    records: u64,
    /// End of the last whole batch that checked out.
    good_end: u64,
    /// The first bad place: offset and reason.
    bad: Option<(u64, String)>,
    /// Whether a valid record with a later LSN follows the bad place (then it is
    /// damage, not a torn tail).
    valid_after_bad: bool,
}

fn scan_segment(bytes: &[u8], first_lsn: Lsn) -> Scan {
    let mut pos = 0usize;
    let mut expected = first_lsn;
    let (mut records, mut good_end, mut batch_records) = (0u64, 0u64, 0u64);
    let mut bad = None;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Ok(d) if d.record.lsn == expected => {
                pos += d.len;
                expected += 1;
                batch_records += 1;
                if d.flags & FLAG_BATCH_CONTINUES == 0 {
                    records += batch_records;
                    batch_records = 0;
                    good_end = pos as u64;
                }
            }
            Ok(d) => {
                bad = Some((
                    pos as u64,
                    format!("record has lsn {}, expected {expected}", d.record.lsn),
                ));
                break;
            }
            Err(e) => {
                let why = match e {
                    DecodeError::Incomplete => "record cut short".to_string(),
                    DecodeError::Checksum => "checksum mismatch".to_string(),
                    DecodeError::Invalid(m) => m,
                };
                bad = Some((pos as u64, why));
                break;
            }
        }
    }
    if bad.is_none() && batch_records > 0 {
        // The last batch never finished: torn by a crash.
        bad = Some((good_end, "batch cut short".to_string()));
    }
    let valid_after_bad = bad.as_ref().is_some_and(|(at, _)| {
        let from = (*at as usize) + 1;
        (from..bytes.len())
            .any(|p| matches!(record::decode(&bytes[p..]), Ok(d) if d.record.lsn >= expected))
    });
    Scan {
        records,
        good_end,
        bad,
        valid_after_bad,
    }
}

/// Moves everything from `offset` in `segments[0]`, and all later segments, into
/// `damaged/`; returns (bytes moved, whole records lost).
fn repair(
    fs: &dyn Fs,
    dir: &Path,
    segments: &[(Lsn, String)],
    offset: u64,
    bytes: &[u8],
) -> Result<(u64, u64), LogError> {
    let aside = dir.join("damaged");
    fs.create_dir_all(&aside)
        .map_err(|e| io_err("create", &aside, e))?;
    let (_, name) = &segments[0];
    let part = aside.join(format!("{name}.from-{offset}"));
    let mut f = fs
        .open_append(&part, true)
        .map_err(|e| io_err("create", &part, e))?;
    f.append(&bytes[offset as usize..])
        .map_err(|e| io_err("write", &part, e))?;
    f.sync_data().map_err(|e| io_err("sync", &part, e))?;
    let mut moved = bytes.len() as u64 - offset;
    let mut lost = count_decodable(&bytes[offset as usize..]);
    for (_, later) in &segments[1..] {
        let from = dir.join(later);
        let b = fs.read(&from).map_err(|e| io_err("read", &from, e))?;
        moved += b.len() as u64;
        lost += count_decodable(&b);
        fs.rename(&from, &aside.join(later))
            .map_err(|e| io_err("move", &from, e))?;
    }
    fs.sync_dir(&aside)
        .map_err(|e| io_err("sync directory", &aside, e))?;
    let path = dir.join(name);
    fs.truncate(&path, offset)
        .map_err(|e| io_err("truncate", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| io_err("sync directory", dir, e))?;
    Ok((moved, lost))
}

/// Records that still check out in damaged bytes (skipping over the damage).
fn count_decodable(bytes: &[u8]) -> u64 {
    let (mut pos, mut n) = (0, 0);
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Ok(d) => {
                n += 1;
                pos += d.len;
            }
            Err(_) => pos += 1,
        }
    }
    n
}

// ---------------------------------------------------------------------------------------
// The writer thread.

struct Writer {
    shared: Arc<Shared>,
    fs: Arc<dyn Fs>,
    file: Box<dyn FsFile>,
    path: PathBuf,
    segment_len: u64,
    next_lsn: Lsn,
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(self.shared.config.batch_bytes_max + (1 << 16));
        let waiters = self.shared.waiters.clone();
        loop {
            let Some(batch) = self.take() else { return };
            // A panic in the write path (a bug, or a failpoint) stops the log like a
            // failed write: producers get an error, never a hang.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit(&batch, &mut buf)
            }))
            .unwrap_or_else(|_| Err(LogError::Stopped("the log writer panicked".into())));
            let freed: usize = batch.iter().map(|p| p.bytes).sum();
            let mut q = lock(&self.shared.queue);
            q.bytes -= freed;
            // The first failure's own words, said once (not wrapped again on every later
            // refusal).
            let why = outcome.as_ref().err().map(|e| match e {
                LogError::Stopped(w) => w.clone(),
                other => other.to_string(),
            });
            let stopped = why.clone().map(LogError::Stopped);
            if let Some(w) = why {
                q.stopped = Some(w);
            }
            // Fail-stop: refuse everything still queued, and all that comes later.
            let refused: Vec<Pending> = if stopped.is_some() {
                q.items.drain(..).collect()
            } else {
                Vec::new()
            };
            if stopped.is_some() {
                q.bytes = 0;
            }
            for w in q.space_wakers.drain(..) {
                w.wake();
            }
            self.shared.space.notify_all();
            drop(q);
            // Waking producers here, between commits, measured better than handing it to
            // a second thread (see the note): batches stay full.
            match stopped {
                None => resolve_now(&batch, outcome, &waiters),
                Some(e) => {
                    resolve_now(&batch, Err(e.clone()), &waiters);
                    resolve_now(&refused, Err(e), &waiters);
                    return;
                }
            }
        }
    }

    /// Everything pending up to the batch limit (at least one request), or `None` when
    /// closing with nothing left.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut q = lock(&self.shared.queue);
        while q.items.is_empty() {
            if q.closing {
                return None;
            }
            q.writer_idle = true;
            q = self.shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            q.writer_idle = false;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(p) = q.items.front() {
            if !batch.is_empty() && bytes + p.bytes > self.shared.config.batch_bytes_max {
                break;
            }
            bytes += p.bytes;
            batch.push(q.items.pop_front().expect("front exists"));
        }
        Some(batch)
    }

    /// Writes and syncs one group; returns each request's last LSN.
    fn commit(&mut self, batch: &[Pending], buf: &mut Vec<u8>) -> Result<Vec<Lsn>, LogError> {
        let shared = self.shared.clone();
        let config = &shared.config;
        buf.clear();
        let mut lsns = Vec::with_capacity(batch.len());
        let first = self.next_lsn;
        for p in batch {
            let n = p.records.len();
            for (i, (kind, payload)) in p.records.iter().enumerate() {
                let flags = if i + 1 < n { FLAG_BATCH_CONTINUES } else { 0 };
                record::encode(buf, self.next_lsn, *kind, flags, payload);
                self.next_lsn += 1;
            }
            lsns.push(self.next_lsn - 1);
        }
        if config.ack_before_sync_for_tests {
            for (p, lsn) in batch.iter().zip(&lsns) {
                p.ticket.resolve(Ok(*lsn));
            }
            shared.waiters.wake_all();
        }
        if self.segment_len > 0 && self.segment_len + buf.len() as u64 > config.segment_bytes {
            self.roll(first)?;
        }
        fail::fail_point!("log::write", |_| Err(LogError::Io {
            op: "write",
            path: self.path.display().to_string(),
            message: "failpoint log::write".into()
        }));
        self.file
            .append(buf)
            .map_err(|e| io_err("write", &self.path, e))?;
        self.segment_len += buf.len() as u64;
        fail::fail_point!("log::before_sync", |_| Err(LogError::Io {
            op: "sync",
            path: self.path.display().to_string(),
            message: "failpoint log::before_sync".into()
        }));
        let sync_start = std::time::Instant::now();
        if config.durability == Durability::Fsync {
            self.file
                .sync_data()
                .map_err(|e| io_err("sync", &self.path, e))?;
        }
        let sync = sync_start.elapsed();
        fail::fail_point!("log::after_sync");
        self.shared
            .durable_lsn
            .store(self.next_lsn - 1, Ordering::Release);
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = self.shared.observer.get() {
            o.committed((self.next_lsn - first) as usize, buf.len(), sync);
        }
        Ok(lsns)
    }

    /// Starts a new segment at `first`, durable (file and directory entry) before use.
    fn roll(&mut self, first: Lsn) -> Result<(), LogError> {
        fail::fail_point!("log::segment_roll", |_| Err(LogError::Io {
            op: "roll",
            path: self.path.display().to_string(),
            message: "failpoint log::segment_roll".into()
        }));
        let path = self.shared.config.dir.join(segment_name(first));
        self.file = new_segment(&*self.fs, &path)?;
        self.path = path;
        self.segment_len = 0;
        Ok(())
    }
}

/// Resolves a batch's tickets on this thread and wakes blocked producers.
fn resolve_now(batch: &[Pending], outcome: Result<Vec<Lsn>, LogError>, waiters: &Waiters) {
    match outcome {
        Ok(lsns) => {
            for (p, lsn) in batch.iter().zip(lsns) {
                p.ticket.resolve(Ok(lsn));
            }
        }
        Err(e) => {
            for p in batch {
                p.ticket.resolve(Err(e.clone()));
            }
        }
    }
    waiters.wake_all();
}

// ---------------------------------------------------------------------------------------
// Reading.

/// Iterates durable records in LSN order, a segment at a time.
pub struct Reader {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segments: Vec<(Lsn, String)>,
    seg: usize,
    bytes: Vec<u8>,
    pos: usize,
    next: Lsn,
    from: Lsn,
    until: Lsn,
    failed: bool,
}

impl Reader {
    fn new(fs: Arc<dyn Fs>, dir: PathBuf, from: Lsn, until: Lsn) -> Result<Reader, LogError> {
        let segments = list_segments(&*fs, &dir)?;
        // Start at the last segment beginning at or before `from`.
        let seg = segments
            .iter()
            .rposition(|(first, _)| *first <= from.max(1))
            .unwrap_or(0);
        let next = segments.get(seg).map_or(1, |s| s.0);
        Ok(Reader {
            fs,
            dir,
            segments,
            seg,
            bytes: Vec::new(),
            pos: 0,
            next,
            from,
            until,
            failed: false,
        })
    }

    fn fail(&mut self, e: LogError) -> Option<Result<Record, LogError>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl Iterator for Reader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.next > self.until {
                return None;
            }
            if self.pos >= self.bytes.len() {
                let (_, name) = self.segments.get(self.seg)?.clone();
                let path = self.dir.join(&name);
                match self.fs.read(&path) {
                    Ok(b) => self.bytes = b,
                    Err(e) => return self.fail(io_err("read", &path, e)),
                }
                self.pos = 0;
                self.seg += 1;
                if self.bytes.is_empty() {
                    continue;
                }
            }
            let name = &self.segments[self.seg - 1].1;
            match record::decode(&self.bytes[self.pos..]) {
                Ok(d) if d.record.lsn == self.next => {
                    self.pos += d.len;
                    self.next += 1;
                    if d.record.lsn >= self.from {
                        return Some(Ok(d.record));
                    }
                }
                Ok(d) => {
                    let e = LogError::Corrupt {
                        segment: name.clone(),
                        offset: self.pos as u64,
                        reason: format!("record has lsn {}, expected {}", d.record.lsn, self.next),
                    };
                    return self.fail(e);
                }
                Err(e) => {
                    let e = LogError::Corrupt {
                        segment: name.clone(),
                        offset: self.pos as u64,
                        reason: format!("{e:?}"),
                    };
                    return self.fail(e);
                }
            }
        }
    }
}
