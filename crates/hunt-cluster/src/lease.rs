//! Partition leases in the owners bucket, changed only by compare-and-set.
//!
//! A lease says who *should* own a partition; the log's fence (ADR 0011) makes a wrong
//! belief harmless. The key `p<n>` holds `{node, epoch, renewed_at_ms}`:
//! - a node **takes** a free partition by creating the key (absent) or by replacing a
//!   released or lapsed value at the revision it saw, with the epoch one higher;
//! - the owner **renews** by replacing its value at the revision it wrote last; a
//!   refused renewal means another node took the partition: the lease is lost;
//! - the owner **releases** by writing a value with no node, so that another node
//!   need not wait for the lease to lapse;
//! - every node writes its own key `node.<id>` at each look ([`Leases::beat`]).
//!
//! **Lapsed is judged by the watcher's own clock,** not by the time in the value: a
//! lease lapses when a watcher has seen the same revision for longer than the lease
//! (`Lapses`), and only over time in which it could write to the bucket: a bucket
//! that cannot take writes (no leader for a moment) stops every owner's renewals too,
//! and is not the owner's fault. Clocks of different machines are never compared.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError};

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owning node's id; empty when released.
    pub node: String,
    /// Raised by one at every take: tells owners of the same partition apart.
    pub epoch: u64,
    /// The owner's wall clock at the last renewal, for people reading the bucket.
    pub renewed_at_ms: u64,
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub partition: u32,
    pub epoch: u64,
    /// The key's revision this node wrote last.
    pub revision: u64,
}

/// A lease key as last read: its owner and revision (`None`: never taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub owner: Option<Owner>,
    pub revision: u64,
}

/// The owners bucket, seen by one node.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    node: String,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("node", &self.node).finish()
    }
}

fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// Whether a write reached no stream, so nothing of it was stored: the bucket was just
/// created and this server does not route its subject yet, or no server answered
/// ("no stream found for given subject", "no responders"). Asking again is safe.
pub(crate) fn not_stored(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("no stream found for given subject") || text.contains("no responders") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether JetStream refused a write because another write to the same key was being
/// proposed (code 10164): the other write goes first, this one is not stored.
pub(crate) fn another_write_in_flight(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(js) = err.downcast_ref::<async_nats::jetstream::Error>()
            && js.error_code()
                == async_nats::jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        {
            return true;
        }
        // Some layers keep only the words of the error beneath them.
        if err.to_string().contains("error code 10164") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

/// A node's own key: its id, with what a key cannot hold replaced.
fn node_key(node: &str) -> String {
    let id: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("node.{id}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Leases {
    /// The cluster's owners bucket (created with the stream's replicas if absent), as
    /// node `node` uses it.
    pub async fn open(
        cluster: &Cluster,
        node: impl Into<String>,
        replicas: usize,
    ) -> Result<Leases, ClusterError> {
        let bucket = format!("hunt_{}_owners", cluster.name());
        let kv = cluster.kv_bucket(&bucket, replicas).await?;
        Ok(Leases {
            kv,
            node: node.into(),
        })
    }

    /// The cluster's owners bucket if it exists (`None`: no node has joined), read as
    /// `node`, for readers that must create nothing.
    pub async fn existing(
        cluster: &Cluster,
        node: impl Into<String>,
    ) -> Result<Option<Leases>, ClusterError> {
        let bucket = format!("hunt_{}_owners", cluster.name());
        Ok(cluster.existing_kv(&bucket).await?.map(|kv| Leases {
            kv,
            node: node.into(),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease of `partition` as the bucket has it now.
    pub async fn read(&self, partition: u32) -> Result<Seen, ClusterError> {
        match self.kv.entry(key(partition)).await.map_err(nats)? {
            Some(e) if e.operation == kv::Operation::Put => Ok(Seen {
                owner: serde_json::from_slice(&e.value).ok(),
                revision: e.revision,
            }),
            Some(e) => Ok(Seen {
                owner: None,
                revision: e.revision,
            }),
            None => Ok(Seen {
                owner: None,
                revision: 0,
            }),
        }
    }

    fn value(&self, node: &str, epoch: u64) -> Bytes {
        let v = Owner {
            node: node.to_string(),
            epoch,
            renewed_at_ms: now_ms(),
        };
        Bytes::from(serde_json::to_vec(&v).expect("an owner encodes"))
    }

    /// Takes `partition` if the key is still as `seen` (absent, released, or lapsed by
    /// the caller's judgement). `None`: another node changed it first.
    pub async fn take(&self, partition: u32, seen: &Seen) -> Result<Option<Held>, ClusterError> {
        let epoch = seen.owner.as_ref().map_or(0, |o| o.epoch) + 1;
        let value = self.value(&self.node, epoch);
        let written = if seen.revision == 0 {
            match self.kv.create(key(partition), value).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) if another_write_in_flight(&e) => None,
                Err(e) => return Err(nats(e)),
            }
        } else {
            match self.kv.update(key(partition), value, seen.revision).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(e) if another_write_in_flight(&e) => None,
                Err(e) => return Err(nats(e)),
            }
        };
        Ok(written.map(|revision| Held {
            partition,
            epoch,
            revision,
        }))
    }

    /// Renews a held lease. `Ok(false)`: it was taken by another node (lost).
    ///
    /// A renewal whose answer was lost (a time-out while the bucket elected a leader)
    /// may still have been stored: the next one then meets a revision it did not see.
    /// If the key still holds this node and epoch, nobody took it (a take raises the
    /// epoch), so the renewal is made again on that revision.
    pub async fn renew(&self, held: &mut Held) -> Result<bool, ClusterError> {
        for _ in 0..2 {
            let value = self.value(&self.node, held.epoch);
            match self
                .kv
                .update(key(held.partition), value, held.revision)
                .await
            {
                Ok(r) => {
                    held.revision = r;
                    return Ok(true);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let now = self.read(held.partition).await?;
                    match now.owner {
                        Some(o) if o.node == self.node && o.epoch == held.epoch => {
                            held.revision = now.revision;
                        }
                        _ => return Ok(false),
                    }
                }
                Err(e) => return Err(nats(e)),
            }
        }
        Ok(false)
    }

    /// Writes this node's own key (`node.<id>`): proof that the bucket takes writes
    /// now. A standby judges a lease lapsed only over time it could write, so that a
    /// bucket without a leader for a while (a server lost, an election) does not count
    /// as the owner's silence: the owner could not renew then either.
    pub async fn beat(&self) -> Result<(), ClusterError> {
        let value = self.value(&self.node, 0);
        self.kv
            .put(node_key(&self.node), value)
            .await
            .map(|_| ())
            .map_err(nats)
    }

    /// Gives a held lease up at once (another node may take it without waiting).
    /// `Ok(false)`: it was no longer held.
    pub async fn release(&self, held: &Held) -> Result<bool, ClusterError> {
        let value = self.value("", held.epoch);
        match self
            .kv
            .update(key(held.partition), value, held.revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(nats(e)),
        }
    }
}

/// When leases lapse, judged by this node's clock: a lease whose revision has not
/// changed for longer than the lease time has lapsed.
#[derive(Debug)]
pub struct Lapses {
    lease: Duration,
    seen: HashMap<u32, (u64, Instant)>,
}

impl Lapses {
    pub fn new(lease: Duration) -> Lapses {
        Lapses {
            lease,
            seen: HashMap::new(),
        }
    }

    /// Forgets every revision seen: after a read or a write of the bucket failed, the
    /// time until a lapse starts again from the next read.
    pub fn forget(&mut self) {
        self.seen.clear();
    }

    /// Notes what was read of `partition`'s lease at `now`; whether it may be taken:
    /// never taken, released, or unchanged for longer than the lease.
    pub fn free(&mut self, partition: u32, seen: &Seen, now: Instant) -> bool {
        let since = match self.seen.get(&partition) {
            Some((rev, at)) if *rev == seen.revision => *at,
            _ => {
                self.seen.insert(partition, (seen.revision, now));
                now
            }
        };
        match &seen.owner {
            None => true,
            Some(o) if o.node.is_empty() => true,
            Some(_) => now.duration_since(since) > self.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(node: &str, revision: u64) -> Seen {
        Seen {
            owner: Some(Owner {
                node: node.into(),
                epoch: 1,
                renewed_at_ms: 0,
            }),
            revision,
        }
    }

    #[test]
    fn a_lease_lapses_only_when_its_revision_stands_still_longer_than_the_lease() {
        let mut l = Lapses::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(!l.free(0, &seen("a", 5), t0));
        assert!(!l.free(0, &seen("a", 5), t0 + Duration::from_millis(1900)));
        // Renewed: the clock starts again.
        assert!(!l.free(0, &seen("a", 6), t0 + Duration::from_millis(2100)));
        assert!(!l.free(0, &seen("a", 6), t0 + Duration::from_millis(4000)));
        assert!(l.free(0, &seen("a", 6), t0 + Duration::from_millis(4200)));
        // A failed read or write: the clock starts again.
        l.forget();
        assert!(!l.free(0, &seen("a", 6), t0 + Duration::from_millis(4300)));
        assert!(!l.free(0, &seen("a", 6), t0 + Duration::from_millis(6200)));
        assert!(l.free(0, &seen("a", 6), t0 + Duration::from_millis(6400)));
        // Released or never taken: free at once.
        assert!(l.free(1, &seen("", 3), t0));
        assert!(l.free(
            2,
            &Seen {
                owner: None,
                revision: 0
            },
            t0
        ));
    }
}
