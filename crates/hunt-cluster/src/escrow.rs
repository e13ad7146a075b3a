//! Escrow of a limited count across partitions — a pool's codes, or a hunt's winner
//! slots — in the pools bucket `hunt_<cluster>_pools` (ADR 0012).
//!
//! One key is one **account**: indexes `0..size`, a cursor below which every index
//! has been handed to some partition, the indexes partitions gave back, and what each
//! partition holds. Every change is a compare-and-set on the key's revision, so two
//! nodes never hand out the same index.
//!
//! - **Blocks belong to partitions, not nodes.** A partition's holding is recorded
//!   under its number, so the next owner of the partition inherits it: a crash loses
//!   no index.
//! - **Fenced by the owner's epoch.** A holding carries the epoch of the lease of the
//!   owner that wrote it last; a write with an older epoch is refused. A new owner
//!   [`Escrow::claim`]s the holding before it answers, so a deposed owner can neither
//!   give back nor drop indexes the new one may be using.
//! - **Blocks shrink as the account runs low** ([`Policy::block`]), down to one index.
//! - **Remainders come back near the end.** A partition that asks and finds nothing
//!   left is put in `wanted`; owners that see it give back what they hold unused, and
//!   the first partition to ask again gets it.
//! - **Used indexes leave the holding** only once their grants are durable in the
//!   partition's log ([`Used`]): an index dropped too early would be lost, never
//!   granted twice.
//!
//! Every read and write of the bucket is counted ([`Escrow::ops`]), for the KV
//! operations per grant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError};

/// How long a read of an account that failed for a moment is asked again.
const READ_RETRY_FOR: Duration = Duration::from_secs(5);

/// Indexes `start..end`.
pub type Span = (u64, u64);

/// Indexes in all of `spans`.
pub fn count(spans: &[Span]) -> u64 {
    spans.iter().map(|(s, e)| e - s).sum()
}

/// Adds `span` to sorted, disjoint `spans`, merging neighbours. Overlap is a caller's
/// bug and is merged too.
fn insert(spans: &mut Vec<Span>, span: Span) {
    if span.0 >= span.1 {
        return;
    }
    let at = spans.partition_point(|s| s.1 < span.0);
    let mut merged = span;
    let mut end = at;
    while end < spans.len() && spans[end].0 <= merged.1 {
        merged.0 = merged.0.min(spans[end].0);
        merged.1 = merged.1.max(spans[end].1);
        end += 1;
    }
    spans.splice(at..end, [merged]);
}

/// Removes whatever of `span` `spans` holds; how many indexes were removed.
fn remove(spans: &mut Vec<Span>, span: Span) -> u64 {
    let mut out = Vec::with_capacity(spans.len() + 1);
    let mut removed = 0;
    for &(s, e) in spans.iter() {
        let (a, b) = (s.max(span.0), e.min(span.1));
        if a >= b {
            out.push((s, e));
            continue;
        }
        removed += b - a;
        if s < a {
            out.push((s, a));
        }
        if b < e {
            out.push((b, e));
        }
    }
    *spans = out;
    removed
}

/// Removes the sorted, distinct `points` from sorted `spans` in one pass; how many
/// were there.
fn remove_points(spans: &mut Vec<Span>, points: &[u64]) -> u64 {
    if points.is_empty() {
        return 0;
    }
    let mut out = Vec::with_capacity(spans.len() + points.len());
    let mut removed = 0;
    let mut at = 0;
    for &(s, e) in spans.iter() {
        let mut start = s;
        while at < points.len() && points[at] < s {
            at += 1;
        }
        while at < points.len() && points[at] < e {
            let p = points[at];
            if start < p {
                out.push((start, p));
            }
            start = p + 1;
            removed += 1;
            at += 1;
        }
        if start < e {
            out.push((start, e));
        }
    }
    *spans = out;
    removed
}

/// Adds `span` after every span of `spans` (merged with the last if they touch).
fn insert_last(spans: &mut Vec<Span>, span: Span) {
    if span.0 >= span.1 {
        return;
    }
    match spans.last_mut() {
        Some(last) if last.1 >= span.0 => last.1 = last.1.max(span.1),
        _ => spans.push(span),
    }
}

/// Takes up to `n` of the lowest indexes out of `spans`.
fn take_lowest(spans: &mut Vec<Span>, n: u64) -> Vec<Span> {
    let mut got = Vec::new();
    let mut left = n;
    while left > 0 && !spans.is_empty() {
        let (s, e) = spans[0];
        let k = (e - s).min(left);
        got.push((s, s + k));
        left -= k;
        if s + k == e {
            spans.remove(0);
        } else {
            spans[0].0 = s + k;
        }
    }
    got
}

/// What one partition holds of an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The epoch of the lease of the owner that wrote this holding last.
    pub epoch: u64,
    /// Indexes handed to the partition and not dropped as used or given back.
    #[serde(default)]
    pub spans: Vec<Span>,
    /// How many indexes the partition has dropped as used, all its owners together.
    /// Winner slots are told apart by this count alone (a win records no slot).
    #[serde(default)]
    pub used: u64,
}

/// One key of the pools bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The pool's or hunt's id, for people reading the bucket.
    pub id: String,
    /// Indexes `0..size` exist.
    pub size: u64,
    /// Every index below it has been handed to a partition.
    pub cursor: u64,
    /// Indexes given back, handed out again (lowest first) before the cursor moves.
    #[serde(default)]
    pub returned: Vec<Span>,
    /// What each partition holds.
    #[serde(default)]
    pub held: BTreeMap<u32, Holding>,
    /// Partitions that asked and found nothing: owners seeing them give back.
    #[serde(default)]
    pub wanted: BTreeSet<u32>,
    /// A version put in force partition by partition waits for every partition's
    /// seed (ADR 0015): meanwhile only indexes below `below` are handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeding: Option<Seeding>,
}

/// What an account waits for before it hands out more than it did: each partition
/// seeds at its marker what its customers hold (ADR 0012's addendum, ADR 0015).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeding {
    /// The version that asked (its tag, as in the accounts' keys): asking again
    /// for it changes nothing.
    pub tag: String,
    /// Its number: a partition's seed at its marker of this version or a later one
    /// counts (a partition seeds what its customers hold against the version it
    /// leaves, whatever versions came between).
    pub version: u64,
    /// Partitions that have not seeded yet.
    pub awaiting: BTreeSet<u32>,
    /// Until every one has, no index at or past this is handed out.
    pub below: u64,
}

/// How big a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The cluster's partition count.
    pub partitions: u32,
    /// The largest block handed out at once.
    pub max_block: u64,
}

impl Policy {
    /// A block: what is left split so that every partition could take two, at most
    /// `max_block` and at least one.
    pub fn block(&self, left: u64) -> u64 {
        (left / (2 * u64::from(self.partitions.max(1)))).clamp(1, self.max_block.max(1))
    }
}

/// Indexes a partition has used, their grants durable in its log: they leave its
/// holding for good.
#[derive(Debug, Clone, Copy)]
pub enum Used<'a> {
    /// These indexes (a pool's codes).
    Indexes(&'a [u64]),
    /// This many, the lowest held (a hunt's winner slots: any will do).
    Count(u64),
}

/// Why an account could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error(
        "partition {partition}'s holding of {key} was written by epoch {holder}, newer than this owner's {epoch}: this node no longer owns the partition"
    )]
    Fenced {
        key: String,
        partition: u32,
        epoch: u64,
        holder: u64,
    },
    #[error("the account {key} cannot be read: {detail}")]
    Unreadable { key: String, detail: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What a refill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    /// Indexes newly handed to the partition (empty: nothing left).
    pub got: Vec<Span>,
    /// Everything the partition holds now, `got` included.
    pub holding: Vec<Span>,
    /// Indexes left for any partition: neither held nor used.
    pub left: u64,
    /// Partitions waiting for indexes (this one included when it got none).
    pub wanted: BTreeSet<u32>,
    /// The account waits for partitions' seeds: indexes it holds back may come once
    /// they are in (ask again soon; it is not spent).
    pub seeding: bool,
    /// Unused indexes other partitions hold: what could still come back. With none
    /// left and none held elsewhere, the account is spent for good (until it grows).
    pub held_elsewhere: u64,
}

impl Account {
    pub fn new(id: impl Into<String>, size: u64) -> Account {
        Account {
            id: id.into(),
            size,
            ..Account::default()
        }
    }

    /// Indexes no partition holds and none has used.
    pub fn left(&self) -> u64 {
        self.size - self.cursor + count(&self.returned)
    }

    fn holding(
        &mut self,
        key: &str,
        partition: u32,
        epoch: u64,
    ) -> Result<&mut Holding, EscrowError> {
        let h = self.held.entry(partition).or_default();
        if h.epoch > epoch {
            return Err(EscrowError::Fenced {
                key: key.to_string(),
                partition,
                epoch,
                holder: h.epoch,
            });
        }
        h.epoch = epoch;
        Ok(h)
    }

    /// The owner of `partition` at `epoch` takes its holding over (no older epoch may
    /// write it after this); what it holds.
    pub fn claim(&mut self, key: &str, partition: u32, epoch: u64) -> Result<Holding, EscrowError> {
        Ok(self.holding(key, partition, epoch)?.clone())
    }

    /// Drops `used` from the partition's holding and hands it a block of up to `want`
    /// (shrunk by `policy` as the account runs low): given-back indexes first, then
    /// from the cursor.
    pub fn refill(
        &mut self,
        key: &str,
        partition: u32,
        epoch: u64,
        used: Used<'_>,
        want: u64,
        policy: Policy,
    ) -> Result<Refill, EscrowError> {
        let size = self.size;
        self.refill_below(size, key, partition, epoch, used, want, policy)
    }

    /// [`refill`](Self::refill) handing out only indexes below `limit`: a partition
    /// still on a version whose pool was smaller (the account grew since) must not
    /// get codes its version does not have.
    #[allow(clippy::too_many_arguments)]
    pub fn refill_below(
        &mut self,
        limit: u64,
        key: &str,
        partition: u32,
        epoch: u64,
        used: Used<'_>,
        want: u64,
        policy: Policy,
    ) -> Result<Refill, EscrowError> {
        self.holding(key, partition, epoch)?;
        self.drop_used(partition, used);
        // Waiting for seeds holds back only what lies past `below`: a partition whose
        // own limit is at or under it (still on the version before) waits for nothing.
        let held_back = self.seeding.as_ref().is_some_and(|s| limit > s.below);
        let limit = match &self.seeding {
            Some(s) => limit.min(s.below),
            None => limit,
        };
        let n = want.min(policy.block(self.left()));
        // Given-back indexes at or past the limit stay for others.
        let keep = self.returned.partition_point(|s| s.1 <= limit);
        let mut above = self.returned.split_off(keep);
        if let Some(&(s, e)) = above.first()
            && s < limit
        {
            above[0] = (limit, e);
            self.returned.push((s, limit));
        }
        let mut got = take_lowest(&mut self.returned, n);
        self.returned.extend(above);
        let from_returned = count(&got);
        let fresh = (n - from_returned).min(limit.min(self.size).saturating_sub(self.cursor));
        if fresh > 0 {
            got.push((self.cursor, self.cursor + fresh));
            self.cursor += fresh;
        }
        let h = self.held.get_mut(&partition).expect("claimed above");
        for &s in &got {
            insert(&mut h.spans, s);
        }
        if want > 0 && got.is_empty() {
            self.wanted.insert(partition);
        } else {
            self.wanted.remove(&partition);
        }
        let holding = h.spans.clone();
        let held_elsewhere = self
            .held
            .iter()
            .filter(|(p, _)| **p != partition)
            .map(|(_, h)| count(&h.spans))
            .sum();
        Ok(Refill {
            got,
            holding,
            left: self.left(),
            wanted: self.wanted.clone(),
            held_elsewhere,
            seeding: held_back,
        })
    }

    /// Drops `used` from the partition's holding and gives `unused` back for any
    /// partition; what the partition holds after.
    pub fn give_back(
        &mut self,
        key: &str,
        partition: u32,
        epoch: u64,
        used: Used<'_>,
        unused: &[Span],
    ) -> Result<Vec<Span>, EscrowError> {
        self.holding(key, partition, epoch)?;
        self.drop_used(partition, used);
        let h = self.held.get_mut(&partition).expect("claimed above");
        let mut back = Vec::new();
        for &s in unused {
            let before = h.spans.clone();
            if remove(&mut h.spans, s) > 0 {
                // Only what it held goes back: the part of `s` it held.
                let mut part = before;
                for &rest in &h.spans {
                    remove(&mut part, rest);
                }
                back.extend(part);
            }
        }
        let holding = h.spans.clone();
        for s in back {
            insert(&mut self.returned, s);
        }
        Ok(holding)
    }

    /// Records what `partition`'s customers already hold of a new account (a lineage
    /// started by a hunts-file version, ADR 0012's addendum): those indexes are never
    /// handed out. A merge, so seeding again with more is safe; seeding must come
    /// before any index of the account is handed out.
    pub fn seed(&mut self, partition: u32, used: Used<'_>) {
        let newly = match used {
            // Slots are told apart by count alone: the next fresh ones.
            Used::Count(n) => {
                let more = n
                    .saturating_sub(self.held.get(&partition).map_or(0, |h| h.used))
                    .min(self.size - self.cursor);
                self.cursor += more;
                more
            }
            Used::Indexes(ix) => {
                // One pass over the sorted indexes and the sorted spans: a campaign's
                // worth of granted codes is seeded in linear time.
                let mut ix: Vec<u64> = ix.iter().copied().filter(|&i| i < self.size).collect();
                ix.sort_unstable();
                ix.dedup();
                let split = ix.partition_point(|&i| i < self.cursor);
                let (below, above) = ix.split_at(split);
                let mut newly = remove_points(&mut self.returned, below);
                for &i in above {
                    insert_last(&mut self.returned, (self.cursor, i));
                    self.cursor = i + 1;
                    newly += 1;
                }
                newly
            }
        };
        self.held.entry(partition).or_default().used += newly;
    }

    /// A version `tag` put in force by markers needs this account seeded by each of
    /// `partitions` partitions; until then only indexes below `below` (what the
    /// versions before could hand out) go out. Asking again for the same version
    /// changes nothing; a later version waits for its own seeds, below the least.
    pub fn await_seeds(&mut self, tag: &str, version: u64, partitions: u32, below: u64) {
        if self.seeding.as_ref().is_some_and(|s| s.tag == tag) {
            return;
        }
        let below = self
            .seeding
            .as_ref()
            .map_or(below, |s| s.below.min(below))
            .min(self.size);
        self.seeding = Some(Seeding {
            tag: tag.to_string(),
            version,
            awaiting: (0..partitions).collect(),
            below,
        });
    }

    /// `partition` seeds before its marker of `version` ([`seed`](Self::seed)); it
    /// still counts as awaited until [`marked`](Self::marked): a switch that fails
    /// after this seeds again, with what it granted meanwhile.
    pub fn seed_at_marker(&mut self, _version: u64, partition: u32, used: Used<'_>) {
        self.seed(partition, used);
    }

    /// `partition`'s marker of `version` is durable: it grants from this version's
    /// accounts now, and no longer waits to be counted. Once every partition is, the
    /// account hands out all it has. Whether this changed anything.
    pub fn marked(&mut self, version: u64, partition: u32) -> bool {
        let Some(s) = &mut self.seeding else {
            return false;
        };
        if s.version > version || !s.awaiting.remove(&partition) {
            return false;
        }
        if s.awaiting.is_empty() {
            self.seeding = None;
        }
        true
    }

    fn drop_used(&mut self, partition: u32, used: Used<'_>) {
        let h = self.held.get_mut(&partition).expect("claimed before");
        match used {
            Used::Indexes(ix) => {
                for &i in ix {
                    h.used += remove(&mut h.spans, (i, i + 1));
                }
            }
            Used::Count(n) => {
                h.used += count(&take_lowest(&mut h.spans, n));
            }
        }
    }

    /// Checks that no index is in two places and none is past the cursor: `Err` names
    /// the first that is.
    pub fn check(&self) -> Result<(), String> {
        if self.cursor > self.size {
            return Err(format!("cursor {} past size {}", self.cursor, self.size));
        }
        let mut all: Vec<(Span, String)> = self
            .returned
            .iter()
            .map(|s| (*s, "returned".to_string()))
            .collect();
        for (p, h) in &self.held {
            all.extend(h.spans.iter().map(|s| (*s, format!("partition {p}"))));
        }
        all.sort();
        for w in all.windows(2) {
            if w[0].0.1 > w[1].0.0 {
                return Err(format!(
                    "{:?} in {} overlaps {:?} in {}",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ));
            }
        }
        if let Some(((_, e), at)) = all.last()
            && *e > self.cursor
        {
            return Err(format!("{at} holds {e} past the cursor {}", self.cursor));
        }
        Ok(())
    }
}

/// The pools bucket, as one node uses it.
#[derive(Clone)]
pub struct Escrow {
    kv: kv::Store,
    policy: Policy,
    ops: Arc<AtomicU64>,
}

impl std::fmt::Debug for Escrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escrow")
            .field("policy", &self.policy)
            .finish()
    }
}

fn nats(e: impl std::fmt::Display) -> EscrowError {
    EscrowError::Cluster(ClusterError::Nats(e.to_string()))
}

impl Escrow {
    /// The cluster's pools bucket (created with `replicas` if absent).
    pub async fn open(
        cluster: &Cluster,
        replicas: usize,
        max_block: u64,
    ) -> Result<Escrow, EscrowError> {
        let bucket = format!("hunt_{}_pools", cluster.name());
        let kv = cluster.kv_bucket(&bucket, replicas).await?;
        Ok(Escrow {
            kv,
            policy: Policy {
                partitions: cluster.partitions(),
                max_block,
            },
            ops: cluster.metrics().escrow_ops.clone(),
        })
    }

    /// Reads and writes of the bucket so far (this handle and its clones).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// The account at `key` and its revision (`None`: never written).
    pub async fn read(&self, key: &str) -> Result<Option<(Account, u64)>, EscrowError> {
        // A read changes nothing, so one that failed for a moment (no responders while
        // the bucket's leader is elected, a time-out) is asked again, for a few seconds.
        let until = std::time::Instant::now() + READ_RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        let entry = loop {
            self.ops.fetch_add(1, Ordering::Relaxed);
            match self.kv.entry(key).await {
                Ok(e) => break e,
                Err(e)
                    if e.kind() != kv::EntryErrorKind::InvalidKey
                        && std::time::Instant::now() + pause < until =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(800));
                }
                Err(e) => return Err(nats(e)),
            }
        };
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let a =
                    serde_json::from_slice(&e.value).map_err(|err| EscrowError::Unreadable {
                        key: key.to_string(),
                        detail: err.to_string(),
                    })?;
                Ok(Some((a, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Reads `key` (creating an account of `id` and `size` if absent), applies `f`, and
    /// writes it back at the revision read; again from the read if another write came
    /// first.
    async fn change<T>(
        &self,
        key: &str,
        id: &str,
        size: u64,
        mut f: impl FnMut(&mut Account) -> Result<T, EscrowError>,
    ) -> Result<T, EscrowError> {
        // A write that reached no stream stored nothing: asked again, from the read,
        // for a few seconds (a bucket just created, a leader being elected).
        let until = std::time::Instant::now() + READ_RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        let mut unstored = |e: &(dyn std::error::Error + 'static)| {
            let retry = crate::lease::not_stored(e) && std::time::Instant::now() + pause < until;
            let wait = pause;
            pause = (pause * 2).min(Duration::from_millis(800));
            retry.then_some(wait)
        };
        loop {
            let (mut account, revision) = match self.read(key).await? {
                Some((a, r)) => (a, r),
                None => (Account::new(id, size), 0),
            };
            // A pool whose codes only grew keeps its account (ADR 0012's addendum):
            // the first to ask with the larger size raises it; never lowered. One
            // asking with a smaller size (a partition still on the version before) is
            // handed only indexes below it.
            if account.size < size && revision != 0 {
                account.size = size;
            }
            let out = f(&mut account)?;
            let value = Bytes::from(serde_json::to_vec(&account).expect("an account encodes"));
            self.ops.fetch_add(1, Ordering::Relaxed);
            let written = if revision == 0 {
                match self.kv.create(key, value).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(e) if crate::lease::another_write_in_flight(&e) => false,
                    Err(e) => match unstored(&e) {
                        Some(wait) => {
                            tokio::time::sleep(wait).await;
                            false
                        }
                        None => return Err(nats(e)),
                    },
                }
            } else {
                match self.kv.update(key, value, revision).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                    Err(e) if crate::lease::another_write_in_flight(&e) => false,
                    Err(e) => match unstored(&e) {
                        Some(wait) => {
                            tokio::time::sleep(wait).await;
                            false
                        }
                        None => return Err(nats(e)),
                    },
                }
            };
            if written {
                return Ok(out);
            }
        }
    }

    /// The owner of `partition` at `epoch` takes its holding of `key` over (an account
    /// of `id` with `size` indexes): from now on no older epoch may change it.
    pub async fn claim(
        &self,
        key: &str,
        id: &str,
        size: u64,
        partition: u32,
        epoch: u64,
    ) -> Result<Holding, EscrowError> {
        self.change(key, id, size, |a| a.claim(key, partition, epoch))
            .await
    }

    /// Drops `used` from the partition's holding and asks for a block of up to `want`
    /// ([`Account::refill`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn refill(
        &self,
        key: &str,
        id: &str,
        size: u64,
        partition: u32,
        epoch: u64,
        used: Used<'_>,
        want: u64,
    ) -> Result<Refill, EscrowError> {
        let policy = self.policy;
        self.change(key, id, size, |a| {
            a.refill_below(size, key, partition, epoch, used, want, policy)
        })
        .await
    }

    /// Drops `used` and gives `unused` back ([`Account::give_back`]); what the
    /// partition holds after.
    #[allow(clippy::too_many_arguments)]
    pub async fn give_back(
        &self,
        key: &str,
        id: &str,
        size: u64,
        partition: u32,
        epoch: u64,
        used: Used<'_>,
        unused: &[Span],
    ) -> Result<Vec<Span>, EscrowError> {
        self.change(key, id, size, |a| {
            a.give_back(key, partition, epoch, used, unused)
        })
        .await
    }

    /// Seeds a new account with what partitions' customers already hold
    /// ([`Account::seed`]), all in one write: `(partition, used)`.
    pub async fn seed(
        &self,
        key: &str,
        id: &str,
        size: u64,
        seeds: &[(u32, Used<'_>)],
    ) -> Result<(), EscrowError> {
        self.change(key, id, size, |a| {
            for (p, used) in seeds {
                a.seed(*p, *used);
            }
            Ok(())
        })
        .await
    }

    /// Makes the account wait for every partition's seed of version `tag`
    /// ([`Account::await_seeds`]); creates it if absent.
    pub async fn await_seeds(
        &self,
        key: &str,
        id: &str,
        size: u64,
        tag: &str,
        version: u64,
        below: u64,
    ) -> Result<(), EscrowError> {
        let partitions = self.policy.partitions;
        self.change(key, id, size, |a| {
            a.await_seeds(tag, version, partitions, below);
            Ok(())
        })
        .await
    }

    /// One partition's seed at its marker ([`Account::seed_at_marker`]).
    pub async fn seed_at_marker(
        &self,
        key: &str,
        id: &str,
        size: u64,
        version: u64,
        partition: u32,
        used: Used<'_>,
    ) -> Result<(), EscrowError> {
        self.change(key, id, size, |a| {
            a.seed_at_marker(version, partition, used);
            Ok(())
        })
        .await
    }

    /// `partition`'s marker of `version` is durable ([`Account::marked`]): one read,
    /// and a write only if the account waited for it.
    pub async fn marked(
        &self,
        key: &str,
        id: &str,
        size: u64,
        version: u64,
        partition: u32,
    ) -> Result<(), EscrowError> {
        let waits = match self.read(key).await? {
            Some((a, _)) => a
                .seeding
                .is_some_and(|s| s.version <= version && s.awaiting.contains(&partition)),
            None => false,
        };
        if waits {
            self.change(key, id, size, |a| Ok(a.marked(version, partition)))
                .await?;
        }
        Ok(())
    }

    /// A JSON value kept beside the accounts (which account each pool uses in a
    /// hunts-file version), `None` if never written.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, EscrowError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        match self.kv.get(key).await.map_err(nats)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| EscrowError::Unreadable {
                    key: key.to_string(),
                    detail: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Writes a JSON value beside the accounts.
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), EscrowError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let bytes = Bytes::from(serde_json::to_vec(value).expect("a value encodes"));
        self.kv.put(key, bytes).await.map_err(nats)?;
        Ok(())
    }

    /// Waits until the account at `key` has indexes left for any partition (given
    /// back, or never handed out), or `limit` passes; whether it has. A partition that
    /// found nothing left waits here for others to give back.
    pub async fn wait_left(&self, key: &str, limit: Duration) -> Result<bool, EscrowError> {
        let deadline = tokio::time::Instant::now() + limit;
        let revision = match self.read(key).await? {
            Some((a, _)) if a.left() > 0 => return Ok(true),
            Some((_, r)) => r,
            None => 0,
        };
        let mut watch = self
            .kv
            .watch_from_revision(key, revision + 1)
            .await
            .map_err(nats)?;
        loop {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(Ok(e))) => {
                    self.ops.fetch_add(1, Ordering::Relaxed);
                    if e.operation == kv::Operation::Put
                        && serde_json::from_slice::<Account>(&e.value).is_ok_and(|a| a.left() > 0)
                    {
                        return Ok(true);
                    }
                }
                Ok(Some(Err(e))) => return Err(nats(e)),
                Ok(None) | Err(_) => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        partitions: 4,
        max_block: 10,
    };

    #[test]
    fn spans_merge_split_and_give_their_lowest() {
        let mut s = Vec::new();
        insert(&mut s, (5, 7));
        insert(&mut s, (0, 2));
        insert(&mut s, (2, 5));
        assert_eq!(s, vec![(0, 7)]);
        assert_eq!(remove(&mut s, (3, 4)), 1);
        assert_eq!(s, vec![(0, 3), (4, 7)]);
        assert_eq!(remove(&mut s, (6, 20)), 1);
        assert_eq!(take_lowest(&mut s, 4), vec![(0, 3), (4, 5)]);
        assert_eq!(s, vec![(5, 6)]);
        assert_eq!(count(&s), 1);
    }

    #[test]
    fn blocks_shrink_as_the_account_runs_low_down_to_one() {
        assert_eq!(POLICY.block(1000), 10);
        assert_eq!(POLICY.block(40), 5);
        assert_eq!(POLICY.block(7), 1);
        assert_eq!(POLICY.block(0), 1);
    }

    #[test]
    fn a_refill_hands_given_back_indexes_first_and_an_empty_one_is_wanted() {
        let mut a = Account::new("gold", 7);
        let r = a.refill("k", 0, 1, Used::Count(0), 5, POLICY).unwrap();
        assert_eq!(
            r.got,
            vec![(0, 1)],
            "7 left over 4 partitions: blocks of one"
        );
        for p in 1..4 {
            a.refill("k", p, 1, Used::Count(0), 5, POLICY).unwrap();
        }
        // Partition 0 used its code; it gets the next.
        let r = a.refill("k", 0, 1, Used::Indexes(&[0]), 5, POLICY).unwrap();
        assert_eq!(r.got, vec![(4, 5)]);
        assert_eq!(a.held[&0].used, 1);
        a.refill("k", 1, 1, Used::Count(0), 5, POLICY).unwrap();
        a.refill("k", 2, 1, Used::Count(0), 5, POLICY).unwrap();
        assert_eq!(a.left(), 0);
        let r = a.refill("k", 3, 1, Used::Count(0), 5, POLICY).unwrap();
        assert!(r.got.is_empty());
        assert_eq!(r.wanted, BTreeSet::from([3]));
        // Partition 1 gives back one of its two unused codes; partition 3 gets it.
        let kept = a.give_back("k", 1, 1, Used::Count(0), &[(5, 6)]).unwrap();
        assert_eq!(kept, vec![(1, 2)]);
        let r = a.refill("k", 3, 1, Used::Count(0), 5, POLICY).unwrap();
        assert_eq!(r.got, vec![(5, 6)]);
        assert!(r.wanted.is_empty());
        a.check().unwrap();
        // A give-back of what it does not hold gives nothing back.
        a.give_back("k", 0, 1, Used::Count(0), &[(1, 2)]).unwrap();
        assert_eq!(a.returned, vec![]);
        a.check().unwrap();
    }

    #[test]
    fn an_older_epoch_cannot_change_a_claimed_holding() {
        let mut a = Account::new("gold", 100);
        a.refill("k", 2, 1, Used::Count(0), 5, POLICY).unwrap();
        let h = a.claim("k", 2, 2).unwrap();
        assert_eq!(h.spans, vec![(0, 5)], "the new owner inherits the block");
        assert!(matches!(
            a.give_back("k", 2, 1, Used::Count(0), &[(0, 5)]),
            Err(EscrowError::Fenced {
                holder: 2,
                epoch: 1,
                ..
            })
        ));
        assert!(matches!(
            a.refill("k", 2, 1, Used::Indexes(&[0]), 5, POLICY),
            Err(EscrowError::Fenced { .. })
        ));
        assert_eq!(a.held[&2].spans, vec![(0, 5)]);
        // Winner slots: the lowest held go as used.
        a.refill("k", 2, 2, Used::Count(3), 0, POLICY).unwrap();
        assert_eq!(a.held[&2].spans, vec![(3, 5)]);
        assert_eq!(a.held[&2].used, 3);
    }

    #[test]
    fn seeding_keeps_held_codes_out_and_seeding_again_counts_nothing_twice() {
        let mut a = Account::new("gold", 10);
        a.seed(0, Used::Indexes(&[2, 5]));
        a.seed(1, Used::Indexes(&[3]));
        a.seed(1, Used::Indexes(&[3, 12]));
        assert_eq!(a.cursor, 6);
        assert_eq!(a.returned, vec![(0, 2), (4, 5)]);
        assert_eq!((a.held[&0].used, a.held[&1].used), (2, 1));
        assert_eq!(a.left(), 7, "10 less the three held");
        let mut out = Vec::new();
        for p in 0..4 {
            loop {
                let r = a.refill("k", p, 1, Used::Count(0), 10, POLICY).unwrap();
                if r.got.is_empty() {
                    break;
                }
                out.extend(r.got.iter().flat_map(|&(s, e)| s..e));
            }
        }
        out.sort_unstable();
        assert_eq!(out, vec![0, 1, 4, 6, 7, 8, 9]);
        a.check().unwrap();
        // Winner slots by count: seeding 3 wins, then 3 again, takes 3.
        let mut c = Account::new("cap", 5);
        c.seed(2, Used::Count(3));
        c.seed(2, Used::Count(3));
        assert_eq!(c.left(), 2);
    }

    #[test]
    fn an_account_waiting_for_seeds_hands_out_only_below_its_limit_until_every_partition_seeded() {
        // A pool of 10 grew to 14 (version 3): until the three partitions seed, only
        // indexes below 10 go out, and an empty answer says to ask again.
        let policy = Policy {
            partitions: 3,
            max_block: 64,
        };
        let mut a = Account::new("gold", 10);
        a.size = 14;
        a.await_seeds("v3-x", 3, 3, 10);
        a.await_seeds("v3-x", 3, 3, 12);
        assert_eq!(
            a.seeding.as_ref().unwrap().below,
            10,
            "asked again: unchanged"
        );
        let mut out = Vec::new();
        loop {
            let r = a.refill("k", 0, 1, Used::Count(0), 64, policy).unwrap();
            if r.got.is_empty() {
                assert!(r.seeding, "not spent: waiting for seeds");
                break;
            }
            out.extend(r.got.iter().flat_map(|&(s, e)| s..e));
        }
        assert_eq!(out, (0..10).collect::<Vec<u64>>());
        // A partition still on the version before (its limit the old size) waits for
        // nothing: told so, it asks the others to give back, or denies.
        let r = a
            .refill_below(10, "k", 1, 1, Used::Count(0), 64, policy)
            .unwrap();
        assert!(r.got.is_empty());
        assert!(!r.seeding, "an old-version partition is not held back");
        // A marker of an older version does not count for version 3's wait.
        assert!(!a.marked(2, 1));
        assert_eq!(a.seeding.as_ref().unwrap().awaiting.len(), 3);
        // Partition 1's customers hold index 12 (moved from another pool). A seed
        // alone does not count: its marker may yet fail, and it seeds again.
        a.seed_at_marker(3, 1, Used::Indexes(&[12]));
        assert_eq!(a.seeding.as_ref().unwrap().awaiting.len(), 3);
        assert!(a.marked(3, 1));
        assert!(!a.marked(3, 1), "once");
        a.seed_at_marker(3, 2, Used::Indexes(&[]));
        assert!(a.marked(3, 2));
        assert!(a.seeding.is_some(), "partition 0 has not marked");
        a.seed_at_marker(4, 0, Used::Indexes(&[]));
        assert!(a.marked(4, 0));
        assert!(a.seeding.is_none(), "a later version's marker counts");
        let mut rest = Vec::new();
        loop {
            let r = a.refill("k", 0, 1, Used::Count(0), 64, policy).unwrap();
            if r.got.is_empty() {
                assert!(!r.seeding);
                break;
            }
            rest.extend(r.got.iter().flat_map(|&(s, e)| s..e));
        }
        rest.sort_unstable();
        assert_eq!(rest, vec![10, 11, 13], "12 is held by a customer");
        a.check().unwrap();
    }

    #[test]
    fn a_large_scattered_seed_is_merged_in_one_pass() {
        let mut a = Account::new("big", 200_000);
        // Every third code held, over three partitions, out of order.
        for p in 0..3u32 {
            let ix: Vec<u64> = (0..200_000u64)
                .rev()
                .filter(|i| i % 3 == 0 && i % 2 == u64::from(p % 2))
                .collect();
            a.seed(p, Used::Indexes(&ix));
        }
        let held: u64 = a.held.values().map(|h| h.used).sum();
        assert_eq!(held, 200_000 / 3 + 1);
        assert_eq!(a.left(), 200_000 - held);
        a.check().unwrap();
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Refill {
                p: u32,
                epoch: u64,
                use_some: u8,
                want: u64,
            },
            GiveBack {
                p: u32,
                epoch: u64,
                use_some: u8,
            },
            Claim {
                p: u32,
                epoch: u64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..4u32, 1..4u64, any::<u8>(), 0..6u64).prop_map(|(p, epoch, use_some, want)| {
                    Op::Refill {
                        p,
                        epoch,
                        use_some,
                        want,
                    }
                }),
                (0..4u32, 1..4u64, any::<u8>()).prop_map(|(p, epoch, use_some)| Op::GiveBack {
                    p,
                    epoch,
                    use_some
                }),
                (0..4u32, 1..4u64).prop_map(|(p, epoch)| Op::Claim { p, epoch }),
            ]
        }

        proptest! {
            /// Whatever the order of refills, give-backs and claims by owners old and
            /// new: no index is ever handed to two partitions, none used is handed out
            /// again, and nothing is lost (used + held + left = size).
            #[test]
            fn no_index_is_handed_out_twice_and_none_is_lost(
                size in 0..60u64,
                ops in proptest::collection::vec(op(), 1..80),
            ) {
                let mut a = Account::new("pool", size);
                // Indexes each partition holds unused, and every index used.
                let mut holds: BTreeMap<u32, Vec<Span>> = BTreeMap::new();
                let mut used: BTreeSet<u64> = BTreeSet::new();
                for op in ops {
                    let (p, epoch, use_some) = match op {
                        Op::Refill { p, epoch, use_some, .. } | Op::GiveBack { p, epoch, use_some } => (p, epoch, use_some),
                        Op::Claim { p, epoch } => (p, epoch, 0),
                    };
                    // The partition uses some of what it holds, if its epoch still may.
                    let mine: Vec<u64> = holds.get(&p).map(|s| s.iter().flat_map(|&(a, b)| a..b).collect()).unwrap_or_default();
                    let now_used: Vec<u64> = mine.iter().copied().filter(|i| (i + u64::from(use_some)) % 3 == 0).collect();
                    let result = match op {
                        Op::Refill { want, .. } => a.refill("k", p, epoch, Used::Indexes(&now_used), want, POLICY).map(|r| r.holding),
                        Op::GiveBack { .. } => {
                            let unused: Vec<Span> = mine.iter().filter(|i| !now_used.contains(i)).map(|&i| (i, i + 1)).collect();
                            a.give_back("k", p, epoch, Used::Indexes(&now_used), &unused)
                        }
                        Op::Claim { .. } => a.claim("k", p, epoch).map(|h| h.spans),
                    };
                    match result {
                        Ok(holding) => {
                            if !matches!(op, Op::Claim { .. }) {
                                for i in &now_used {
                                    prop_assert!(used.insert(*i), "index {} used twice", i);
                                }
                            }
                            holds.insert(p, holding);
                        }
                        Err(EscrowError::Fenced { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                    a.check().map_err(TestCaseError::fail)?;
                    for (q, spans) in &holds {
                        for &(s, e) in spans {
                            for i in s..e {
                                prop_assert!(!used.contains(&i), "partition {} holds used {}", q, i);
                            }
                        }
                    }
                    let held: u64 = a.held.values().map(|h| count(&h.spans)).sum();
                    let used_n: u64 = a.held.values().map(|h| h.used).sum();
                    prop_assert_eq!(used_n, used.len() as u64);
                    prop_assert_eq!(used_n + held + a.left(), size);
                }
            }
        }
    }
}
