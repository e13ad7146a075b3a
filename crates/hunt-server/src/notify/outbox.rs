//! The outbox: every delivery owed to a sink, and what became of it.
//!
//! A delivery is born with its event's record (its body follows from the record and
//! the hunts-file version in force), so queueing costs no record of its own. What
//! happens to it afterwards is a [`DeliveryRecord`] in the log: an attempt failed (with
//! the error), delivered, dead-lettered, retried from the dead-letter queue, dropped.
//! Replaying the log through [`Outbox::queue`] and [`Outbox::apply`] therefore rebuilds
//! every pending delivery and the dead-letter queue with each entry's error history.
//! Delivery is at-least-once: a delivery whose `Delivered` record was lost in a crash
//! is sent again, with the same idempotency key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use hunt_core::time::Timestamp;
use hunt_store::Lsn;
use serde::{Deserialize, Serialize};

use super::cloudevent::Delivery;

/// Record kind: a delivery's state change.
pub use crate::records::KIND_DELIVERY;

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// An attempt failed; it will be tried again.
    Failed {
        error: String,
    },
    Delivered,
    /// The last attempt failed (or the delivery was too old): into the dead-letter queue.
    DeadLettered {
        error: String,
    },
    /// An operator sent it back from the dead-letter queue to be tried again.
    Retried,
    /// An operator removed it from the dead-letter queue.
    Dropped,
    /// Removed from a full dead-letter queue, oldest first, to keep memory bounded.
    Evicted {
        reason: String,
    },
}

/// A state change as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub key: String,
    /// When it happened (ms since the epoch).
    pub at: i64,
    pub change: Change,
}

pub fn encode(r: &DeliveryRecord) -> Vec<u8> {
    postcard::to_allocvec(r).expect("serializing to memory cannot fail")
}

pub fn decode(payload: &[u8]) -> Result<DeliveryRecord, String> {
    postcard::from_bytes(payload).map_err(|e| format!("not a delivery record: {e}"))
}

/// One failed attempt, or how an entry got where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    pub at: Timestamp,
    pub error: Arc<str>,
}

/// A delivery and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub sink: Arc<str>,
    /// The partition of its event: the changes of its state are written in that
    /// partition's rounds (ADR 0015), and it moves with the partition.
    pub partition: u32,
    pub hunt: Arc<str>,
    /// The event record's LSN and the outcome's index in it.
    pub lsn: Lsn,
    pub outcome: u32,
    /// The CloudEvent sent, byte for byte the same on every attempt. Dead letters let
    /// it go (it follows from the event's record, which the log keeps), so a long
    /// outage costs little memory; it is read back for a retry.
    pub body: Option<Arc<[u8]>>,
    pub queued_at: Timestamp,
    /// Where its attempt budget started: queued, or last sent back from the DLQ.
    pub since: Timestamp,
    /// Failed attempts since `since`.
    pub attempts: u32,
    /// Every failed attempt, oldest first (kept through retries from the DLQ).
    pub history: Vec<Attempt>,
    /// Set while in the dead-letter queue.
    pub dead_at: Option<Timestamp>,
}

/// An entry's place within its sink: the event's LSN, then the outcome.
type Order = (Lsn, u32);

/// One sink's deliveries. A pending entry is in exactly one of `ready`, `waiting` or
/// in flight (taken by a sender, in neither).
#[derive(Debug, Default)]
struct SinkBox {
    pending: BTreeMap<Order, Entry>,
    ready: BTreeSet<Order>,
    waiting: BTreeSet<(Instant, Order)>,
    dead: BTreeMap<Order, Entry>,
}

/// What a sender needs for one attempt.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: String,
    pub lsn: Lsn,
    pub outcome: u32,
    /// `None` only if it could not be read back from the log.
    pub body: Option<Arc<[u8]>>,
    pub attempts: u32,
    pub since: Timestamp,
}

/// Which dead letters an operator means.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub key: Option<String>,
    pub sink: Option<String>,
    pub hunt: Option<String>,
    /// Dead-lettered at or after / before (ms since the epoch).
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let dead = e.dead_at.unwrap_or(e.queued_at);
        self.key.as_deref().is_none_or(|k| k == e.key)
            && self.sink.as_deref().is_none_or(|s| s == &*e.sink)
            && self.hunt.as_deref().is_none_or(|h| h == &*e.hunt)
            && self.since.is_none_or(|t| dead >= t)
            && self.until.is_none_or(|t| dead < t)
    }
}

/// Pending deliveries and the dead-letter queue, per sink.
#[derive(Debug, Default)]
pub struct Outbox {
    sinks: HashMap<Arc<str>, SinkBox>,
    /// The last error text recorded, shared by the entries that repeat it (a dead
    /// sink fails every delivery the same way).
    last_error: Option<Arc<str>>,
    /// Records about keys this outbox does not hold (ignored, counted).
    pub unknown: u64,
}

impl Outbox {
    /// A delivery owed, from an event record at `queued_at`; ready to send. False if
    /// the key is already held.
    pub fn queue(&mut self, d: Delivery, queued_at: Timestamp) -> bool {
        let order: Order = (d.lsn, d.outcome);
        let b = self.sinks.entry(d.sink_id.clone()).or_default();
        if b.pending.contains_key(&order) || b.dead.contains_key(&order) {
            return false;
        }
        b.ready.insert(order);
        b.pending.insert(
            order,
            Entry {
                key: d.key,
                sink: d.sink_id,
                partition: d.partition,
                hunt: d.hunt,
                lsn: d.lsn,
                outcome: d.outcome,
                // An empty body is one not built yet (see `missing_bodies`).
                body: (!d.body.is_empty()).then(|| d.body.into()),
                queued_at,
                since: queued_at,
                attempts: 0,
                history: Vec::new(),
                dead_at: None,
            },
        );
        true
    }

    /// A delivery owed that is not to be sent (taken at once, as if in flight): its
    /// dead-lettering is being recorded.
    pub fn queue_held(&mut self, d: Delivery, queued_at: Timestamp) {
        let (sink, order) = (d.sink_id.clone(), (d.lsn, d.outcome));
        if self.queue(d, queued_at)
            && let Some(b) = self.sinks.get_mut(&sink)
        {
            b.ready.remove(&order);
            if let Some(e) = b.pending.get_mut(&order) {
                e.body = None;
            }
        }
    }

    /// Puts back an entry as a snapshot held it (pending ones ready to send).
    pub fn restore(&mut self, e: Entry) {
        let order: Order = (e.lsn, e.outcome);
        let b = self.sinks.entry(e.sink.clone()).or_default();
        if e.dead_at.is_some() {
            b.dead.insert(order, e);
        } else {
            b.ready.insert(order);
            b.pending.insert(order, e);
        }
    }

    /// Takes every delivery and dead letter of `partition` out (the partition goes to
    /// another node, which rebuilds them from the log): what was taken.
    pub fn take_partition(&mut self, partition: u32) -> Vec<Entry> {
        let mut out = Vec::new();
        for b in self.sinks.values_mut() {
            let orders: Vec<Order> = b
                .pending
                .iter()
                .filter(|(_, e)| e.partition == partition)
                .map(|(o, _)| *o)
                .collect();
            for o in orders {
                b.ready.remove(&o);
                if let Some(e) = b.pending.remove(&o) {
                    out.push(e);
                }
            }
            b.waiting.retain(|(_, o)| b.pending.contains_key(o));
            let dead: Vec<Order> = b
                .dead
                .iter()
                .filter(|(_, e)| e.partition == partition)
                .map(|(o, _)| *o)
                .collect();
            for o in dead {
                if let Some(e) = b.dead.remove(&o) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Applies a recorded change. A change that does not fit the entry's state (say,
    /// `Retried` for an entry not in the DLQ) is refused with the reason. A failed
    /// attempt leaves the entry where it is: the sender schedules it again.
    pub fn apply(&mut self, r: &DeliveryRecord) -> Result<(), String> {
        let held = |(sink, order): &(Arc<str>, Order)| {
            self.sinks
                .get(sink)
                .is_some_and(|b| b.pending.contains_key(order) || b.dead.contains_key(order))
        };
        let Some((sink, order)) = self.locate(&r.key).filter(held) else {
            self.unknown += 1;
            return Ok(());
        };
        let error = |o: &mut Outbox, e: &str| -> Arc<str> {
            match &o.last_error {
                Some(last) if &**last == e => last.clone(),
                _ => {
                    let a: Arc<str> = Arc::from(e);
                    o.last_error = Some(a.clone());
                    a
                }
            }
        };
        let shared = match &r.change {
            Change::Failed { error: e } | Change::DeadLettered { error: e } => Some(error(self, e)),
            _ => None,
        };
        let b = self.sinks.entry(sink).or_default();
        let at = Timestamp(r.at);
        let misfit = |state: &str| format!("delivery {}: `{:?}` while {state}", r.key, r.change);
        let unschedule = |b: &mut SinkBox| {
            b.ready.remove(&order);
            b.waiting.retain(|(_, o)| *o != order);
        };
        match &r.change {
            Change::Failed { error } => {
                let e = b
                    .pending
                    .get_mut(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                e.attempts += 1;
                e.history.push(Attempt {
                    at,
                    error: shared.clone().unwrap_or_else(|| Arc::from(error.as_str())),
                });
            }
            Change::Delivered => {
                b.pending
                    .remove(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                unschedule(b);
            }
            Change::DeadLettered { error } => {
                let mut e = b
                    .pending
                    .remove(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                unschedule(b);
                e.attempts += 1;
                e.history.push(Attempt {
                    at,
                    error: shared.clone().unwrap_or_else(|| Arc::from(error.as_str())),
                });
                e.dead_at = Some(at);
                e.body = None;
                b.dead.insert(order, e);
            }
            Change::Retried => {
                let mut e = b.dead.remove(&order).ok_or_else(|| misfit("pending"))?;
                e.dead_at = None;
                e.attempts = 0;
                e.since = at;
                b.ready.insert(order);
                b.pending.insert(order, e);
            }
            Change::Dropped | Change::Evicted { .. } => {
                b.dead.remove(&order).ok_or_else(|| misfit("pending"))?;
            }
        }
        Ok(())
    }

    /// The oldest ready delivery of `sink`, taken for an attempt (first moving those
    /// whose wait is over to ready).
    pub fn take(&mut self, sink: &str, now: Instant) -> Option<Job> {
        let b = self.sinks.get_mut(sink)?;
        while let Some(&(t, order)) = b.waiting.first() {
            if t > now {
                break;
            }
            b.waiting.pop_first();
            b.ready.insert(order);
        }
        let order = b.ready.pop_first()?;
        let e = &b.pending[&order];
        Some(Job {
            key: e.key.clone(),
            lsn: e.lsn,
            outcome: e.outcome,
            body: e.body.clone(),
            attempts: e.attempts,
            since: e.since,
        })
    }

    /// Schedules a taken delivery again: at once, or not before `at`. Nothing happens
    /// if it is no longer pending.
    pub fn put_back(&mut self, key: &str, at: Option<Instant>) {
        let Some((sink, order)) = self.locate(key) else {
            return;
        };
        let Some(b) = self.sinks.get_mut(&sink) else {
            return;
        };
        if !b.pending.contains_key(&order) {
            return;
        }
        match at {
            Some(t) => {
                b.waiting.insert((t, order));
            }
            None => {
                b.ready.insert(order);
            }
        }
    }

    /// When the next waiting delivery of `sink` is due, if none is ready.
    pub fn next_due(&self, sink: &str) -> Option<Instant> {
        self.sinks.get(sink)?.waiting.first().map(|(t, _)| *t)
    }

    /// Pending deliveries of one sink (in flight included).
    pub fn pending_count(&self, sink: &str) -> usize {
        self.sinks.get(sink).map_or(0, |b| b.pending.len())
    }

    /// Dead letters of one sink.
    pub fn dead_count(&self, sink: &str) -> usize {
        self.sinks.get(sink).map_or(0, |b| b.dead.len())
    }

    /// Sinks this outbox holds anything for.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<str>> {
        self.sinks.keys()
    }

    /// Pending deliveries, per sink, oldest event first.
    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.sinks.values().flat_map(|b| b.pending.values())
    }

    /// The dead-letter queue in the order of its events (the log's order).
    pub fn dead_letters(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.sinks.values().flat_map(|b| b.dead.values()).collect();
        all.sort_by_key(|e| (e.lsn, e.outcome, e.sink.clone()));
        all
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        let (sink, order) = self.locate(key)?;
        let b = self.sinks.get(&*sink)?;
        b.pending.get(&order).or_else(|| b.dead.get(&order))
    }

    /// Where a key's entry would be: keys are `<lsn>.<outcome>.<sink>` (sink ids may
    /// hold dots), so no index of them is kept.
    fn locate(&self, key: &str) -> Option<(Arc<str>, Order)> {
        let (lsn, rest) = key.split_once('.')?;
        let (outcome, sink) = rest.split_once('.')?;
        let order: Order = (lsn.parse().ok()?, outcome.parse().ok()?);
        let (id, _) = self.sinks.get_key_value(sink)?;
        Some((id.clone(), order))
    }

    /// The keys of the oldest `n` dead letters of `sink`.
    pub fn oldest_dead(&self, sink: &str, n: usize) -> Vec<String> {
        self.sinks.get(sink).map_or_else(Vec::new, |b| {
            b.dead.values().take(n).map(|e| e.key.clone()).collect()
        })
    }

    /// Pending deliveries whose body is not in memory: (event LSN, outcome, key).
    pub fn missing_bodies(&self) -> Vec<(Lsn, u32, String)> {
        self.pending()
            .filter(|e| e.body.is_none())
            .map(|e| (e.lsn, e.outcome, e.key.clone()))
            .collect()
    }

    /// Gives a delivery its body back.
    pub fn set_body(&mut self, key: &str, body: Arc<[u8]>) {
        let Some((sink, order)) = self.locate(key) else {
            return;
        };
        if let Some(b) = self.sinks.get_mut(&sink)
            && let Some(e) = b.pending.get_mut(&order).or_else(|| b.dead.get_mut(&order))
        {
            e.body = Some(body);
        }
    }

    /// Every entry, for a snapshot.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.sinks
            .values()
            .flat_map(|b| b.pending.values().chain(b.dead.values()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(lsn: Lsn, i: u32, sink: &str) -> Delivery {
        Delivery {
            sink: 0,
            sink_id: sink.into(),
            hunt: "h".into(),
            lsn,
            outcome: i,
            partition: (lsn % 4) as u32,
            key: format!("{lsn}.{i}.{sink}"),
            body: format!("body {lsn}").into_bytes(),
        }
    }

    fn rec(key: &str, at: i64, change: Change) -> DeliveryRecord {
        DeliveryRecord {
            key: key.into(),
            at,
            change,
        }
    }

    #[test]
    fn a_partitions_deliveries_and_dead_letters_leave_together() {
        // `d` puts lsn % 4 in the partition: 4 and 8 are partition 0, 5 partition 1.
        let mut o = Outbox::default();
        for lsn in [4, 5, 8] {
            o.queue(d(lsn, 0, "crm"), Timestamp(1));
        }
        o.apply(&rec(
            "8.0.crm",
            2,
            Change::DeadLettered {
                error: "down".into(),
            },
        ))
        .unwrap();
        let mut taken: Vec<String> = o.take_partition(0).into_iter().map(|e| e.key).collect();
        taken.sort();
        assert_eq!(taken, ["4.0.crm", "8.0.crm"]);
        let left: Vec<&str> = o.entries().map(|e| e.key.as_str()).collect();
        assert_eq!(left, ["5.0.crm"]);
        assert!(o.dead_letters().is_empty());
        // Only partition 1's is sent now.
        assert_eq!(o.pending_count("crm"), 1);
    }

    #[test]
    fn a_delivery_moves_through_its_states_and_keeps_its_history() {
        let mut o = Outbox::default();
        o.queue(d(10, 0, "crm"), Timestamp(1));
        o.queue(d(9, 1, "crm"), Timestamp(1));
        o.queue(d(9, 1, "crm"), Timestamp(2)); // the same key again: once
        let keys: Vec<_> = o.pending().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["9.1.crm", "10.0.crm"], "oldest event first");

        o.apply(&rec(
            "10.0.crm",
            5,
            Change::Failed {
                error: "timeout after 3s".into(),
            },
        ))
        .unwrap();
        o.apply(&rec(
            "10.0.crm",
            9,
            Change::DeadLettered {
                error: "503 Service Unavailable".into(),
            },
        ))
        .unwrap();
        assert_eq!(o.pending().count(), 1);
        let dead = o.dead_letters()[0];
        assert_eq!(dead.dead_at, Some(Timestamp(9)));
        assert_eq!(dead.attempts, 2);
        assert_eq!(dead.history.len(), 2);
        assert_eq!(&*dead.history[0].error, "timeout after 3s");

        // Retried: pending again, history kept, same key.
        o.apply(&rec("10.0.crm", 20, Change::Retried)).unwrap();
        assert_eq!(o.dead_letters().len(), 0);
        let e = o.get("10.0.crm").unwrap();
        assert_eq!((e.attempts, e.since), (0, Timestamp(20)), "a fresh budget");
        assert_eq!(o.get("10.0.crm").unwrap().history.len(), 2);
        o.apply(&rec("10.0.crm", 21, Change::Delivered)).unwrap();
        assert!(o.get("10.0.crm").is_none());

        // A change that does not fit is refused, and changes nothing.
        let e = o.apply(&rec("9.1.crm", 22, Change::Retried)).unwrap_err();
        assert!(e.contains("9.1.crm") && e.contains("pending"), "{e}");
        assert_eq!(o.pending().count(), 1);
        // Dropped from the DLQ: gone.
        o.apply(&rec(
            "9.1.crm",
            23,
            Change::DeadLettered {
                error: "gone".into(),
            },
        ))
        .unwrap();
        o.apply(&rec("9.1.crm", 24, Change::Dropped)).unwrap();
        assert_eq!((o.pending().count(), o.dead_letters().len()), (0, 0));
        // A record about a key it never held is counted, not an error.
        o.apply(&rec("1.0.crm", 25, Change::Delivered)).unwrap();
        assert_eq!(o.unknown, 1);
    }

    #[test]
    fn a_sender_takes_the_oldest_ready_and_waits_out_a_backoff() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
        let mut o = Outbox::default();
        for lsn in [5, 3, 4] {
            o.queue(d(lsn, 0, "crm"), Timestamp(1));
        }
        o.queue(d(1, 0, "audit"), Timestamp(1));
        let j = o.take("crm", ms(0)).unwrap();
        assert_eq!(j.key, "3.0.crm", "oldest first, this sink only");
        // In flight: not taken twice.
        assert_eq!(o.take("crm", ms(0)).unwrap().key, "4.0.crm");
        o.apply(&rec(
            "3.0.crm",
            2,
            Change::Failed {
                error: "503".into(),
            },
        ))
        .unwrap();
        o.put_back("3.0.crm", Some(ms(100)));
        assert_eq!(o.next_due("crm"), Some(ms(100)));
        assert_eq!(o.take("crm", ms(50)).unwrap().key, "5.0.crm");
        assert!(
            o.take("crm", ms(50)).is_none(),
            "3 waits, 4 and 5 in flight"
        );
        let j = o.take("crm", ms(100)).unwrap();
        assert_eq!((j.key.as_str(), j.attempts), ("3.0.crm", 1));
        // Delivered while in flight: gone, and putting it back does nothing.
        o.apply(&rec("4.0.crm", 3, Change::Delivered)).unwrap();
        o.put_back("4.0.crm", None);
        assert!(o.take("crm", ms(200)).is_none());
        assert_eq!((o.pending_count("crm"), o.pending_count("audit")), (2, 1));
        // Keys are parsed, not indexed: a sink id with dots, and keys that are not keys.
        o.queue(d(7, 2, "crm.eu"), Timestamp(1));
        assert_eq!(o.get("7.2.crm.eu").unwrap().sink.as_ref(), "crm.eu");
        for bad in [
            "7.2.crm.e",
            "7.2",
            "x.2.crm.eu",
            "7.x.crm.eu",
            "",
            "..",
            "7.2.crm.eu.",
        ] {
            assert!(o.get(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        for change in [
            Change::Failed {
                error: "connection refused".into(),
            },
            Change::Delivered,
            Change::DeadLettered { error: "x".into() },
            Change::Retried,
            Change::Dropped,
            Change::Evicted {
                reason: "the dead-letter queue holds 5".into(),
            },
        ] {
            let r = rec("3.0.crm", 7, change);
            assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
        let bytes = encode(&rec("3.0.crm", 7, Change::Delivered));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
