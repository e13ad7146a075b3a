//! Snapshots: every partition paused between rounds, its state copied with the outbox
//! at one position of the log, then written in the background.

use super::*;

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

    /// Takes a snapshot of every projection at one LSN; returns it.
    pub async fn snapshot(&self) -> Result<u64, String> {
        let _one = self.coordinator.lock().await;
        let started = std::time::Instant::now();
        let (paused, resumes) = self.pause_all(true).await.map_err(|e| e.to_string())?;
        let version = self.version();
        // Everything applied so far must be durable before the snapshot claims it.
        let mut wait_err = None;
        for p in &paused {
            if let Some(t) = &p.ticket
                && let Err(e) = t.clone().await
            {
                wait_err = Some(e.to_string());
            }
        }
        // Every delivery owed by the events so far queued, no delivery change half
        // done: the outbox is then exactly what the log holds up to `lsn`.
        self.notifier.barrier().await;
        let (outbox, lsn) = self.notifier.copy_for_snapshot(|| self.log.durable()).await;
        for r in resumes {
            let _ = r.send(version.clone());
        }
        let paused_ms = started.elapsed().as_millis() as u64;
        if let Some(e) = wait_err {
            return Err(e);
        }
        self.accepted_since_snapshot.store(0, Ordering::Relaxed);
        let copies: Vec<_> = paused.into_iter().filter_map(|p| p.snapshot).collect();
        let snaps = self.snapshots.clone();
        let record = version.record.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let payload = crate::snapshot::encode(&record, &copies, &outbox);
            snaps.save(lsn, &payload).map(|()| payload.len())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        tracing::info!(
            lsn,
            bytes,
            paused_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        Ok(lsn)
    }
}
