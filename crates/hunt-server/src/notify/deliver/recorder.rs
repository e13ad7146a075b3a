//! The recorder: every change of a delivery written to the log before the outbox changes.

use super::*;

impl Notifier {
    /// Writes the changes senders hand over, many to one submission, and applies them
    /// once durable. A sender waits only for room in the queue: its slot is free as
    /// soon as the receiver answered, and the delivery stays taken until its change is
    /// applied.
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

    /// Appends records and waits until they are durable. Each goes in the rounds of
    /// its delivery's partition (on a cluster, that partition's subject, so that the
    /// deliveries move with it, ADR 0015); one whose delivery is not held goes to the
    /// node's own records. Says for each record whether it is durable: one
    /// partition's failure (its lease lost) does not undo the others'.
    async fn write_each(&self, records: &[DeliveryRecord]) -> Vec<Result<(), String>> {
        let mut by_partition: std::collections::BTreeMap<u32, Vec<usize>> =
            std::collections::BTreeMap::new();
        {
            let o = self.outbox.lock();
            for (i, r) in records.iter().enumerate() {
                let p = o.get(&r.key).map_or(NODE, |e| e.partition);
                by_partition.entry(p).or_default().push(i);
            }
        }
        let mut out: Vec<Result<(), String>> = vec![Ok(()); records.len()];
        let mut tickets = Vec::with_capacity(by_partition.len());
        for (p, indexes) in by_partition {
            let payloads = indexes
                .iter()
                .map(|&i| (KIND_DELIVERY, encode(&records[i])))
                .collect();
            match self.log.submit(p, payloads).await {
                Ok(t) => tickets.push((indexes, t)),
                Err(e) => {
                    for i in indexes {
                        out[i] = Err(e.to_string());
                    }
                }
            }
        }
        for (indexes, t) in tickets {
            if let Err(e) = t.await {
                for i in indexes {
                    out[i] = Err(e.to_string());
                }
            }
        }
        out
    }

    /// Records changes (now), then applies them and schedules failed attempts again.
    pub(super) async fn record(&self, changes: Vec<PendingChange>) -> Result<(), String> {
        let at = (self.clock)().0;
        self.record_at(changes.into_iter().map(|(k, c, a)| (k, c, a, at)).collect())
            .await
    }

    /// Writes the changes, applies them once durable, and wakes their sinks. A sink's
    /// dead-letter queue over its bound lets its oldest go, recorded in the same way
    /// before this returns.
    pub(super) async fn record_at(
        &self,
        mut changes: Vec<(String, Change, Option<Instant>, i64)>,
    ) -> Result<(), String> {
        let _g = self.gate.read().await;
        // A partition that went to another node: its owner records these now.
        {
            let released = self.released.lock();
            if !released.is_empty() {
                changes.retain(|(key, ..)| !released.contains(key));
            }
        }
        let mut woken: Vec<Arc<str>> = Vec::new();
        // Two passes at most: the changes, then the evictions they call for (an eviction
        // that did not fit is not tried again here).
        let mut evicting = false;
        while !changes.is_empty() {
            let records: Vec<DeliveryRecord> = changes
                .iter()
                .map(|(key, change, _, at)| DeliveryRecord {
                    key: key.clone(),
                    at: *at,
                    change: change.clone(),
                })
                .collect();
            // What could not be written is not applied: its partition is gone from
            // this node (its new owner rebuilds its deliveries), or the log failed.
            let written = self.write_each(&records).await;
            let mut failed = None;
            let (mut kept_records, mut kept_changes) = (Vec::new(), Vec::new());
            for ((r, c), w) in records
                .into_iter()
                .zip(std::mem::take(&mut changes))
                .zip(written)
            {
                match w {
                    Ok(()) => {
                        kept_records.push(r);
                        kept_changes.push(c);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if kept_records.is_empty()
                && let Some(e) = failed
            {
                return Err(e);
            }
            if let Some(e) = failed {
                tracing::warn!(error = %e, "some delivery changes were not recorded");
            }
            let touched = self.apply_recorded(&kept_records, &kept_changes);
            changes = if evicting {
                Vec::new()
            } else {
                self.evictions(&touched)
            };
            evicting = true;
            for s in touched {
                if !woken.contains(&s) {
                    woken.push(s);
                }
            }
        }
        let sinks = self.sinks.read();
        for s in woken {
            if let Some(rt) = sinks.get(&s) {
                rt.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Applies durable changes to the outbox, in short spans of its lock, and counts
    /// them; returns the sinks they touched.
    fn apply_recorded(
        &self,
        records: &[DeliveryRecord],
        changes: &[(String, Change, Option<Instant>, i64)],
    ) -> Vec<Arc<str>> {
        let mut touched: Vec<Arc<str>> = Vec::new();
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
                    if !touched.contains(&s) {
                        touched.push(s);
                    }
                }
            }
        }
        touched
    }

    /// A full dead-letter queue lets its oldest go (recorded, with the reason): a sink
    /// dead for long must not take the process's memory with it.
    fn evictions(&self, sinks: &[Arc<str>]) -> Vec<(String, Change, Option<Instant>, i64)> {
        let o = self.outbox.lock();
        let at = (self.clock)().0;
        let mut evict = Vec::new();
        for s in sinks {
            let dead = o.dead_count(s);
            if dead <= self.dlq_max {
                continue;
            }
            let keys = o.oldest_dead(s, dead - self.dlq_max);
            tracing::warn!(
                sink = %s,
                evicted = keys.len(),
                bound = self.dlq_max,
                "the sink's dead-letter queue is full: evicting the oldest"
            );
            let reason = format!(
                "evicted: the dead-letter queue of its sink held more than {} entries",
                self.dlq_max
            );
            evict.extend(keys.into_iter().map(|k| {
                let change = Change::Evicted {
                    reason: reason.clone(),
                };
                (k, change, None, at)
            }));
        }
        evict
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hunt_store::fs::RealFs;
    use hunt_store::partition_log::{Records, Submitting};
    use hunt_store::{Log, LogConfig, LogError, Lsn, PartitionLog, Partitions};

    use super::*;
    use crate::notify::cloudevent::Delivery;
    use crate::notify::outbox::{Change, DeliveryRecord, Outbox, decode};
    use crate::records::ConfigRecord;
    use crate::state::Version;

    /// A log that says which partition each record was submitted to.
    struct Spy {
        log: Log,
        seen: parking_lot::Mutex<Vec<(u32, u8, Vec<u8>)>>,
    }

    impl PartitionLog for Spy {
        fn submit(&self, partition: u32, records: Vec<(u8, Vec<u8>)>) -> Submitting<'_> {
            self.seen
                .lock()
                .extend(records.iter().map(|(k, p)| (partition, *k, p.clone())));
            PartitionLog::submit(&self.log, partition, records)
        }
        fn read(&self, partitions: Partitions, from: Lsn) -> Result<Records, LogError> {
            PartitionLog::read(&self.log, partitions, from)
        }
        fn durable(&self) -> Lsn {
            PartitionLog::durable(&self.log)
        }
        fn stopped(&self) -> Option<LogError> {
            PartitionLog::stopped(&self.log)
        }
    }

    fn delivery(lsn: Lsn, partition: u32) -> Delivery {
        Delivery {
            sink: 0,
            sink_id: "crm".into(),
            hunt: "claim".into(),
            lsn,
            outcome: 0,
            partition,
            key: format!("{lsn}.0.crm"),
            body: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_changes_of_a_delivery_go_to_its_partitions_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(Arc::new(RealFs), LogConfig::new(dir.path())).unwrap();
        let spy = Arc::new(Spy {
            log,
            seen: parking_lot::Mutex::default(),
        });
        let text = r#"
version: 1
pools:
  - id: p
    generate: { prefix: "C-", count: 10 }
sinks:
  - id: crm
    url: "http://127.0.0.1:9/"
hunts:
  - id: claim
    steps: [{ id: s, on: claim }]
    reward: { pool: p }
    notify: [crm]
"#;
        let version = Version::compile(ConfigRecord {
            version: 1,
            name: "h.yaml".into(),
            text: text.into(),
            at: 0,
        })
        .unwrap();
        // Dead letters: held, so no sender changes them meanwhile.
        let mut outbox = Outbox::default();
        outbox.queue_held(delivery(7, 3), hunt_core::time::Timestamp(0));
        outbox.queue_held(delivery(9, 5), hunt_core::time::Timestamp(0));
        let n =
            Notifier::start(spy.clone(), outbox, &version, crate::service::now, 10, 10).unwrap();
        let changes: Vec<DeliveryRecord> = ["7.0.crm", "9.0.crm", "11.0.crm"]
            .iter()
            .map(|k| DeliveryRecord {
                key: k.to_string(),
                at: 1,
                change: Change::Dropped,
            })
            .collect();
        assert!(n.write_each(&changes).await.iter().all(Result::is_ok));
        let mut went: Vec<(String, u32)> = spy
            .seen
            .lock()
            .iter()
            .filter(|(_, k, _)| *k == KIND_DELIVERY)
            .map(|(p, _, payload)| (decode(payload).unwrap().key, *p))
            .collect();
        went.sort();
        assert_eq!(
            went,
            [
                ("11.0.crm".to_string(), NODE),
                ("7.0.crm".to_string(), 3),
                ("9.0.crm".to_string(), 5)
            ],
            "a delivery not held goes to the node's records"
        );
        n.abort();
    }
}
