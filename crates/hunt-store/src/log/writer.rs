//! The writer thread: everything queued, one write, one sync, then the tickets.

use super::*;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) fs: Arc<dyn Fs>,
    pub(super) file: Box<dyn FsFile>,
    pub(super) path: PathBuf,
    pub(super) segment_len: u64,
    pub(super) next_lsn: Lsn,
}

impl Writer {
    pub(super) fn run(mut self) {
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
            let mut q = self.shared.queue.lock();
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
    pub(super) fn take(&self) -> Option<Vec<Pending>> {
        let mut q = self.shared.queue.lock();
        while q.items.is_empty() {
            if q.closing {
                return None;
            }
            q.writer_idle = true;
            self.shared.work.wait(&mut q);
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

    /// Writes and syncs one group; returns where each request's records are.
    pub(super) fn commit(
        &mut self,
        batch: &[Pending],
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Span>, LogError> {
        let shared = self.shared.clone();
        let config = &shared.config;
        buf.clear();
        let mut lsns = Vec::with_capacity(batch.len());
        let first = self.next_lsn;
        for p in batch {
            let n = p.records.len();
            let start = self.next_lsn;
            for (i, (kind, payload)) in p.records.iter().enumerate() {
                let flags = if i + 1 < n { FLAG_BATCH_CONTINUES } else { 0 };
                record::encode(buf, self.next_lsn, *kind, flags, payload);
                self.next_lsn += 1;
            }
            lsns.push(Span {
                first: start,
                last: self.next_lsn - 1,
            });
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
    pub(super) fn roll(&mut self, first: Lsn) -> Result<(), LogError> {
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
pub(super) fn resolve_now(
    batch: &[Pending],
    outcome: Result<Vec<Span>, LogError>,
    waiters: &Waiters,
) {
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
