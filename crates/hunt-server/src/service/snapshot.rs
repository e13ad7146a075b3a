//! Snapshots without stopping the world: each partition in turn shares its state
//! between two of its rounds and goes straight on, at a position of the log of its own;
//! the outbox is taken at its own; all are written in the background
//! (docs/adr/0010-snapshots-per-partition-without-stopping.md).

use super::*;

use crate::partition::Copied;
use crate::snapshot::Cover;

impl Service {
    pub(super) fn snapshot_in_background(&self) {
        // The service is held in an Arc by every caller; the snapshot runs on its own.
        let me = self.self_arc();
        if let Some(me) = me {
            tokio::spawn(async move {
                if let Err(e) = me.snapshot().await {
                    tracing::warn!(error = %e, "snapshot failed");
                }
            });
        }
    }

    /// Takes a snapshot of every projection; returns the position the next start reads
    /// the log after.
    pub async fn snapshot(&self) -> Result<u64, String> {
        // A node sharing the partitions with others: each of its own, on its own.
        let owned = self.owned.read().clone();
        if let Some(owned) = owned {
            let store = self
                .config
                .provided_log
                .as_ref()
                .and_then(|p| p.part_snapshots.clone())
                .ok_or("a node sharing the partitions keeps its partitions' own snapshots, and none is set")?;
            self.accepted_since_snapshot.store(0, Ordering::Relaxed);
            let mut least = u64::MAX;
            for n in owned {
                match self.snapshot_partition(n, store.clone()).await {
                    Ok(from) => least = least.min(from),
                    // Given away since the list was read: its new owner's to take.
                    Err(_) if !self.owns(n as usize) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(if least == u64::MAX { 0 } else { least });
        }
        // One version in force throughout: a switch waits for the snapshot's copies.
        let _one = self.coordinator.lock().await;
        let started = std::time::Instant::now();
        let version = self.version();
        // Rounds handed to the dispatcher before now (some may be from before the last
        // version switch) are queued first, so that what the outbox reaches is after it.
        self.notifier.barrier().await;
        let mut copies = Vec::with_capacity(self.partitions.len());
        let (mut paused_max_us, mut asked_max_us) = (0, 0);
        for h in &self.partitions {
            between_parts().await;
            let (reply, rx) = oneshot::channel();
            let asked = std::time::Instant::now();
            h.tx.send(Msg::Snapshot { reply })
                .await
                .map_err(|_| Stopped::Partitions.to_string())?;
            let copied: Copied = rx.await.map_err(|_| Stopped::Partition.to_string())?;
            asked_max_us = asked_max_us.max(asked.elapsed().as_micros() as u64);
            paused_max_us = paused_max_us.max(copied.took.as_micros() as u64);
            self.metrics
                .snapshot_pause_seconds
                .observe(copied.took.as_secs_f64());
            copies.push(copied);
        }
        between_parts().await;
        let (outbox, deliveries, changes) =
            self.notifier.copy_for_snapshot(self.partitions.len()).await;
        // Everything a copy holds must be durable before the snapshot claims it.
        // A snapshot holds one version: while a switch by markers has not reached
        // every partition, it waits for the next turn.
        if let Some(c) = copies.iter().find(|c| c.version != version.record.version) {
            return Err(format!(
                "a partition applies version {} while version {} is being put in force; the snapshot waits until every partition has",
                c.version, version.record.version
            ));
        }
        let mut parts = Vec::with_capacity(copies.len());
        let mut states = Vec::with_capacity(copies.len());
        for c in copies {
            let last = match c.ticket {
                Some(t) => t.await.map_err(|e| e.to_string())?.last,
                None => 0,
            };
            parts.push(last.max(c.durable));
            states.push(c.state);
        }
        let cover = Cover {
            parts,
            deliveries,
            changes,
        };
        let copied_ms = started.elapsed().as_millis() as u64;
        self.accepted_since_snapshot.store(0, Ordering::Relaxed);
        let snaps = self.snapshots.clone();
        let record = version.record.clone();
        let from = cover.least();
        let bytes = at_lowest_priority(move || {
            let payload = crate::snapshot::encode(&record, &states, &outbox, &cover);
            // Dropped here, off the runtime's threads: the last holder of a shared
            // customer or chunk frees it.
            drop(states);
            snaps.save(from, &payload).map(|()| payload.len())
        })
        .await?
        .map_err(|e| e.to_string())?;
        tracing::info!(
            lsn = from,
            bytes,
            partition_paused_max_us = paused_max_us,
            partition_answered_max_us = asked_max_us,
            copied_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        Ok(from)
    }
}

impl Service {
    /// Takes a snapshot of partition `n` alone, with its deliveries, into `store`
    /// (ADR 0015: what a node that takes the partition over starts from); returns the
    /// position the rebuild reads the partition's records after.
    pub async fn snapshot_partition(
        &self,
        n: u32,
        store: Arc<dyn hunt_store::PartSnapshots>,
    ) -> Result<u64, String> {
        let _one = self.coordinator.lock().await;
        // Only its owner writes a partition's snapshot, and it cannot give the
        // partition away meanwhile (`leave` waits for this lock): a node that gave it
        // away would save its stale state after the next owner's snapshot.
        if !self.owns(n as usize) {
            return Err(format!(
                "partition {n} is not this node's: no snapshot of it"
            ));
        }
        let version = self.version();
        let h = self
            .partitions
            .get(n as usize)
            .ok_or_else(|| format!("no partition {n}"))?;
        self.notifier.barrier().await;
        let (reply, rx) = oneshot::channel();
        h.tx.send(Msg::Snapshot { reply })
            .await
            .map_err(|_| Stopped::Partitions.to_string())?;
        let copied: Copied = rx.await.map_err(|_| Stopped::Partition.to_string())?;
        if copied.version != version.record.version {
            return Err(format!(
                "partition {n} applies version {} while version {} is being put in force; its snapshot waits",
                copied.version, version.record.version
            ));
        }
        // Another node may have recorded a newer version this node has not read yet:
        // its record would lie inside this snapshot's span, where a rebuild from the
        // snapshot would not find it for the partition's next marker.
        let log = self.log.clone();
        let newest = tokio::task::spawn_blocking(move || super::config::newest_version(&*log, 1))
            .await
            .map_err(|e| e.to_string())??
            .0
            .map_or(0, |r| r.version);
        if newest != copied.version {
            return Err(format!(
                "partition {n} applies version {} while the log holds version {newest}; its snapshot waits",
                copied.version
            ));
        }
        let (outbox, deliveries, changes) =
            self.notifier.copy_for_snapshot(self.partitions.len()).await;
        let last = match copied.ticket {
            Some(t) => t.await.map_err(|e| e.to_string())?.last,
            None => 0,
        };
        let cover = Cover {
            parts: vec![last.max(copied.durable)],
            deliveries: vec![deliveries.get(n as usize).copied().unwrap_or(0)],
            changes,
        };
        let outbox: Vec<_> = outbox.into_iter().filter(|e| e.partition == n).collect();
        let record = version.record.clone();
        let from = cover.least();
        at_lowest_priority(move || {
            let payload = crate::snapshot::encode(&record, &[copied.state], &outbox, &cover);
            store.save_part(n, from, &payload)
        })
        .await?
        .map_err(|e| e.to_string())?;
        tracing::info!(partition = n, lsn = from, "partition snapshot saved");
        Ok(from)
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority, and waits for it.
/// Encoding and writing a snapshot takes a core for seconds; the partitions and the
/// HTTP server, which answer requests, come first, and the snapshot has what they leave.
async fn at_lowest_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("hunt-snapshot".into())
        .spawn(move || {
            lowest_priority();
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start the snapshot's thread: {e}"))?;
    rx.await
        .map_err(|_| "the snapshot's thread panicked".to_string())
}

/// This thread only (Linux schedules threads one by one): nice 19.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with this thread's own id changes nothing but its scheduling
    // weight; a failure (it cannot happen for lowering) leaves it as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// A pause between the parts of a snapshot, for the test that takes them at positions of
/// their own (failpoint `snapshot::between_parts`, `return(MS)`).
async fn between_parts() {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = fail::eval("snapshot::between_parts", |a| {
        a.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0)
    }) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
