//! The members bucket `hunt_<cluster>_nodes`: each node's heartbeat under its own id,
//! with its HTTP address, the partitions it owns and whether it is draining.
//!
//! **Live is judged by the reader's own clock,** as leases are (`lease.rs`): a member
//! is live while its key's revision changes at least once per lease time, as this
//! node sees it. Clocks of different machines are never compared. A member that
//! leaves deletes its key and is gone at once.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError};

/// What a node writes at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Where its HTTP API listens, for people and tools.
    pub http: String,
    /// The partitions it owns now.
    #[serde(default)]
    pub owned: Vec<u32>,
    /// For each partition it owns, the last sequence on its subject that it holds:
    /// the subject's end less this is the partition's lag.
    #[serde(default)]
    pub positions: std::collections::BTreeMap<u32, u64>,
    /// It is giving its partitions away (`hunt cluster drain`): assign it none.
    #[serde(default)]
    pub draining: bool,
    /// Its wall clock at the heartbeat, for people reading the bucket.
    pub beat_at_ms: u64,
}

/// A member as last read, and its key's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMember {
    pub member: Member,
    pub revision: u64,
}

/// The members bucket.
#[derive(Clone)]
pub struct Members {
    kv: kv::Store,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members").finish()
    }
}

fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// A node id as a key: what a key cannot hold replaced.
fn key(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where drain requests are kept: node ids never hold a dot, so these never collide
/// with a heartbeat's key.
const DRAIN: &str = "drain.";

fn drain_key(node: &str) -> String {
    format!("{DRAIN}{}", key(node))
}

impl Members {
    /// The cluster's members bucket (created with `replicas` if absent).
    pub async fn open(cluster: &Cluster, replicas: usize) -> Result<Members, ClusterError> {
        let bucket = format!("hunt_{}_nodes", cluster.name());
        let kv = cluster.kv_bucket(&bucket, replicas).await?;
        Ok(Members { kv })
    }

    /// The cluster's members bucket if it exists (`None`: no node has joined), for
    /// readers that must create nothing.
    pub async fn existing(cluster: &Cluster) -> Result<Option<Members>, ClusterError> {
        let bucket = format!("hunt_{}_nodes", cluster.name());
        Ok(cluster.existing_kv(&bucket).await?.map(|kv| Members { kv }))
    }

    /// Writes `member`'s heartbeat (its wall clock stamped now).
    pub async fn beat(&self, member: &Member) -> Result<(), ClusterError> {
        let mut m = member.clone();
        m.beat_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let value = Bytes::from(serde_json::to_vec(&m).expect("a member encodes"));
        // A bucket just created may not be routed by every server yet: a write that
        // reached no stream stored nothing, and is sent again for a few seconds.
        let until = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_millis(50);
        loop {
            match self.kv.put(key(&m.node), value.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if crate::lease::not_stored(&e) && Instant::now() + pause < until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(800));
                }
                Err(e) => return Err(nats(e)),
            }
        }
    }

    /// Leaves: deletes `node`'s key, so that the others count it gone at once.
    pub async fn leave(&self, node: &str) -> Result<(), ClusterError> {
        self.kv.delete(key(node)).await.map_err(nats)
    }

    /// Asks `node` to give its partitions away (`hunt cluster drain`): a key of its
    /// own beside its heartbeat, which it reads at each beat. It stays until cleared,
    /// or until the node starts again.
    pub async fn request_drain(&self, node: &str) -> Result<(), ClusterError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let value = Bytes::from(format!("{{\"at_ms\":{at}}}"));
        self.kv.put(drain_key(node), value).await.map_err(nats)?;
        Ok(())
    }

    /// Whether `node` has been asked to drain.
    pub async fn drain_requested(&self, node: &str) -> Result<bool, ClusterError> {
        Ok(self
            .kv
            .entry(drain_key(node))
            .await
            .map_err(nats)?
            .is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Withdraws a drain request (`hunt cluster drain --undo`, or the node starting
    /// again after its maintenance).
    pub async fn clear_drain(&self, node: &str) -> Result<(), ClusterError> {
        self.kv.delete(drain_key(node)).await.map_err(nats)
    }

    /// Every member with a key now, by id.
    pub async fn read(&self) -> Result<Vec<SeenMember>, ClusterError> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(nats)?
            .try_collect()
            .await
            .map_err(nats)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys.into_iter().filter(|k| !k.starts_with(DRAIN)) {
            if let Some(e) = self.kv.entry(&k).await.map_err(nats)?
                && e.operation == kv::Operation::Put
                && let Ok(member) = serde_json::from_slice::<Member>(&e.value)
            {
                out.push(SeenMember {
                    member,
                    revision: e.revision,
                });
            }
        }
        out.sort_by(|a, b| a.member.node.cmp(&b.member.node));
        Ok(out)
    }
}

/// Which members are live, judged by this node's clock: a member whose revision has
/// not changed for longer than the lease is gone.
#[derive(Debug)]
pub struct Liveness {
    lease: Duration,
    seen: HashMap<String, (u64, Instant)>,
}

impl Liveness {
    pub fn new(lease: Duration) -> Liveness {
        Liveness {
            lease,
            seen: HashMap::new(),
        }
    }

    /// Notes what was read at `now`; the ids of the members live, sorted.
    pub fn live(&mut self, members: &[SeenMember], now: Instant) -> Vec<String> {
        self.seen
            .retain(|node, _| members.iter().any(|m| &m.member.node == node));
        let mut live = Vec::new();
        for m in members {
            let since = match self.seen.get(&m.member.node) {
                Some((rev, at)) if *rev == m.revision => *at,
                _ => {
                    self.seen.insert(m.member.node.clone(), (m.revision, now));
                    now
                }
            };
            if now.duration_since(since) <= self.lease {
                live.push(m.member.node.clone());
            }
        }
        live.sort();
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(node: &str, revision: u64) -> SeenMember {
        SeenMember {
            member: Member {
                node: node.into(),
                http: String::new(),
                owned: Vec::new(),
                positions: Default::default(),
                draining: false,
                beat_at_ms: 0,
            },
            revision,
        }
    }

    #[test]
    fn a_member_is_gone_once_its_heartbeat_stands_still_past_the_lease() {
        let mut l = Liveness::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(l.live(&[seen("a", 1), seen("b", 2)], t0), vec!["a", "b"]);
        assert_eq!(
            l.live(&[seen("a", 3), seen("b", 2)], at(1500)),
            vec!["a", "b"]
        );
        assert_eq!(l.live(&[seen("a", 4), seen("b", 2)], at(2100)), vec!["a"]);
        // b beats again: live again.
        assert_eq!(
            l.live(&[seen("a", 5), seen("b", 6)], at(2200)),
            vec!["a", "b"]
        );
        // b left (key deleted): gone at once.
        assert_eq!(l.live(&[seen("a", 7)], at(2300)), vec!["a"]);
    }
}
