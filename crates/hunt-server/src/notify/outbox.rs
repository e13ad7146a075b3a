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

use std::collections::BTreeMap;
use std::sync::Arc;

use hunt_core::time::Timestamp;
use hunt_store::Lsn;
use serde::{Deserialize, Serialize};

use super::cloudevent::Delivery;

/// Record kind: a delivery's state change.
pub const KIND_DELIVERY: u8 = 3;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub at: Timestamp,
    pub error: String,
}

/// A delivery and its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub key: String,
    pub sink: Arc<str>,
    pub hunt: Arc<str>,
    #[serde(skip)]
    pub body: Arc<[u8]>,
    pub queued_at: Timestamp,
    /// Every failed attempt, oldest first (kept through retries from the DLQ).
    pub history: Vec<Attempt>,
    /// Set while in the dead-letter queue.
    pub dead_at: Option<Timestamp>,
}

/// Orders entries by the event's LSN, then the outcome, then the sink.
type Order = (Lsn, u32, Arc<str>);

/// Pending deliveries and the dead-letter queue.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: BTreeMap<Order, Entry>,
    dead: BTreeMap<Order, Entry>,
    /// Where each key is.
    index: std::collections::HashMap<String, Order>,
    /// Records about keys this outbox does not hold (ignored, counted).
    pub unknown: u64,
}

impl Outbox {
    /// A delivery owed, from an event record at `queued_at`.
    pub fn queue(&mut self, d: Delivery, queued_at: Timestamp) {
        let order: Order = (d.lsn, d.outcome, d.sink_id.clone());
        if self.index.contains_key(&d.key) {
            return;
        }
        self.index.insert(d.key.clone(), order.clone());
        self.pending.insert(
            order,
            Entry {
                key: d.key,
                sink: d.sink_id,
                hunt: d.hunt,
                body: d.body.into(),
                queued_at,
                history: Vec::new(),
                dead_at: None,
            },
        );
    }

    /// Applies a recorded change. A change that does not fit the entry's state (say,
    /// `Retried` for an entry not in the DLQ) is refused with the reason.
    pub fn apply(&mut self, r: &DeliveryRecord) -> Result<(), String> {
        let Some(order) = self.index.get(&r.key).cloned() else {
            self.unknown += 1;
            return Ok(());
        };
        let at = Timestamp(r.at);
        let misfit = |state: &str| format!("delivery {}: `{:?}` while {state}", r.key, r.change);
        match &r.change {
            Change::Failed { error } => {
                let e = self
                    .pending
                    .get_mut(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                e.history.push(Attempt {
                    at,
                    error: error.clone(),
                });
            }
            Change::Delivered => {
                self.pending
                    .remove(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                self.index.remove(&r.key);
            }
            Change::DeadLettered { error } => {
                let mut e = self
                    .pending
                    .remove(&order)
                    .ok_or_else(|| misfit("dead-lettered"))?;
                e.history.push(Attempt {
                    at,
                    error: error.clone(),
                });
                e.dead_at = Some(at);
                self.dead.insert(order, e);
            }
            Change::Retried => {
                let mut e = self.dead.remove(&order).ok_or_else(|| misfit("pending"))?;
                e.dead_at = None;
                self.pending.insert(order, e);
            }
            Change::Dropped => {
                self.dead.remove(&order).ok_or_else(|| misfit("pending"))?;
                self.index.remove(&r.key);
            }
        }
        Ok(())
    }

    /// Pending deliveries, oldest event first.
    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.pending.values()
    }

    /// The dead-letter queue, oldest event first.
    pub fn dead_letters(&self) -> impl Iterator<Item = &Entry> {
        self.dead.values()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        let order = self.index.get(key)?;
        self.pending.get(order).or_else(|| self.dead.get(order))
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
        let dead = o.dead_letters().next().unwrap();
        assert_eq!(dead.dead_at, Some(Timestamp(9)));
        assert_eq!(dead.history.len(), 2);
        assert_eq!(dead.history[0].error, "timeout after 3s");

        // Retried: pending again, history kept, same key.
        o.apply(&rec("10.0.crm", 20, Change::Retried)).unwrap();
        assert_eq!(o.dead_letters().count(), 0);
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
        assert_eq!((o.pending().count(), o.dead_letters().count()), (0, 0));
        // A record about a key it never held is counted, not an error.
        o.apply(&rec("1.0.crm", 25, Change::Delivered)).unwrap();
        assert_eq!(o.unknown, 1);
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
