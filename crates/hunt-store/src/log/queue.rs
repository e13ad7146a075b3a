//! The queue between producers and the writer, with its bounds and its stop.

use super::*;

pub(super) struct Pending {
    /// (kind, payload) of each record, appended contiguously.
    pub(super) records: Vec<(u8, Vec<u8>)>,
    pub(super) bytes: usize,
    pub(super) ticket: Ticket,
}

pub(super) struct Queue {
    pub(super) items: VecDeque<Pending>,
    pub(super) bytes: usize,
    /// Set when a write or sync failed: every later append is refused with it.
    pub(super) stopped: Option<String>,
    pub(super) closing: bool,
    /// The writer is waiting for work: only then does a producer need to wake it (a
    /// wake-up is a system call; while the writer syncs, producers skip it).
    pub(super) writer_idle: bool,
    /// Async producers waiting for room.
    pub(super) space_wakers: Vec<Waker>,
}

pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    /// The writer waits here for work.
    pub(super) work: Condvar,
    /// Producers wait here for room.
    pub(super) space: Condvar,
    pub(super) durable_lsn: AtomicU64,
    pub(super) waiters: Arc<Waiters>,
    /// Group commits made (one write and one sync each), for benchmarks and metrics.
    pub(super) commits: AtomicU64,
    pub(super) config: LogConfig,
    /// Told of every group commit, for metrics.
    pub(super) observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

pub(super) fn check(records: &[(u8, Vec<u8>)]) -> Result<usize, LogError> {
    let mut bytes = 0;
    for (_, p) in records {
        if p.len() > PAYLOAD_BYTES_MAX {
            return Err(LogError::TooLarge(p.len()));
        }
        bytes += p.len() + record::HEADER_BYTES;
    }
    Ok(bytes)
}

pub(super) fn refuse(q: &Queue) -> Result<(), LogError> {
    if let Some(why) = &q.stopped {
        return Err(LogError::Stopped(why.clone()));
    }
    if q.closing {
        return Err(LogError::Closed);
    }
    Ok(())
}

/// Room for `bytes` more: always for a lone request, so one big batch cannot wait forever.
pub(super) fn has_room(q: &Queue, bytes: usize, config: &LogConfig) -> bool {
    q.items.is_empty() || q.bytes + bytes <= config.queue_bytes_max
}
