//! The recorder: every change of a delivery written to the log before the outbox changes.

use super::*;

impl Notifier {
    /// Writes the changes senders hand over, many to one submission, and applies them
    /// once durable. A sender does not wait for this: its slot is free as soon as the
    /// receiver answered, and the delivery stays taken until its change is applied.
    pub(super) async fn recorder(self: Arc<Notifier>, mut rx: mpsc::Receiver<Recorded>) {
        let mut buf = Vec::new();
        loop {
            if rx.recv_many(&mut buf, 4096).await == 0 {
                return;
            }
            let mut changes = Vec::with_capacity(buf.len());
            let mut flushed = Vec::new();
            for r in buf.drain(..) {
                match r {
                    Recorded::Change(key, change, again, at) => {
                        changes.push((key, change, again, at))
                    }
                    Recorded::Flush(tx) => flushed.push(tx),
                }
            }
            if !changes.is_empty()
                && let Err(e) = self.record_at(changes).await
            {
                tracing::error!(error = %e, "cannot record the outcome of deliveries");
            }
            for tx in flushed {
                let _ = tx.send(());
            }
        }
    }

    /// Appends records and waits until they are durable.
    pub(super) async fn write(&self, records: &[DeliveryRecord]) -> Result<(), String> {
        let payloads = records.iter().map(|r| (KIND_DELIVERY, encode(r))).collect();
        let ticket = self
            .log
            .submit(NODE, payloads)
            .await
            .map_err(|e| e.to_string())?;
        ticket.await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Records changes (now), then applies them and schedules failed attempts again.
    pub(super) async fn record(&self, changes: Vec<PendingChange>) -> Result<(), String> {
        let at = (self.clock)().0;
        self.record_at(changes.into_iter().map(|(k, c, a)| (k, c, a, at)).collect())
            .await
    }

    pub(super) async fn record_at(
        &self,
        changes: Vec<(String, Change, Option<Instant>, i64)>,
    ) -> Result<(), String> {
        let _g = self.gate.read().await;
        let records: Vec<DeliveryRecord> = changes
            .iter()
            .map(|(key, change, _, at)| DeliveryRecord {
                key: key.clone(),
                at: *at,
                change: change.clone(),
            })
            .collect();
        self.write(&records).await?;
        let mut woken: Vec<Arc<str>> = Vec::new();
        // Applied in short spans of the outbox's lock.
        for (records, changes) in records.chunks(512).zip(changes.chunks(512)) {
            let mut o = self.outbox.lock();
            for (r, (key, _, again, _)) in records.iter().zip(changes) {
                let sink = o.get(key).map(|e| e.sink.clone());
                if let Err(e) = o.apply(r) {
                    tracing::warn!(error = %e, "a delivery change did not fit");
                    continue;
                }
                if matches!(r.change, Change::Failed { .. }) {
                    o.put_back(key, *again);
                }
                if let Some(s) = sink {
                    if !woken.contains(&s) {
                        woken.push(s.clone());
                    }
                    if let Some(rt) = self.sinks.read().get(&s) {
                        let m = &rt.metrics;
                        match r.change {
                            Change::Delivered => m.delivered.fetch_add(1, Ordering::Relaxed),
                            Change::Failed { .. } => m.failed.fetch_add(1, Ordering::Relaxed),
                            Change::DeadLettered { .. } => {
                                m.dead_lettered.fetch_add(1, Ordering::Relaxed)
                            }
                            Change::Evicted { .. } => m.evicted.fetch_add(1, Ordering::Relaxed),
                            Change::Retried | Change::Dropped => 0,
                        };
                    }
                }
            }
        }
        // A full dead-letter queue lets its oldest go (recorded, with the reason): a sink
        // dead for long must not take the process's memory with it.
        let mut evict = Vec::new();
        {
            let o = self.outbox.lock();
            for s in &woken {
                let dead = o.dead_count(s);
                if dead > self.dlq_max {
                    let keys = o.oldest_dead(s, dead - self.dlq_max);
                    tracing::warn!(
                        sink = %s,
                        evicted = keys.len(),
                        bound = self.dlq_max,
                        "the sink's dead-letter queue is full: evicting the oldest"
                    );
                    evict.extend(keys);
                }
            }
        }
        let at = (self.clock)().0;
        for key in evict {
            let reason = format!(
                "evicted: the dead-letter queue of its sink held more than {} entries",
                self.dlq_max
            );
            // Not awaited: this may run on the recorder's own task. A change that does
            // not fit now is made again the next time the queue is over its bound.
            let _ =
                self.recorder
                    .try_send(Recorded::Change(key, Change::Evicted { reason }, None, at));
        }
        let sinks = self.sinks.read();
        for s in woken {
            if let Some(rt) = sinks.get(&s) {
                rt.wake.notify_one();
            }
        }
        Ok(())
    }
}
