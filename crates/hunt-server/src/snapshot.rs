//! The snapshot payload: a format number (4 bytes, little-endian), then postcard of the
//! version in force and each partition's customers, dedupe window, figures and
//! winners. Customers' traits are JSON text inside it, because postcard cannot carry
//! self-describing values. Loading re-routes every customer by hash, so the partition
//! count may change between runs.
//!
//! Format 3 adds the outbox: every pending delivery and dead letter with its history.
//! Format 4 keeps dedupe entries by identity (the user's route hash and a keyed hash of
//! the pair, with the window's secret) instead of the user and id.
//! Format 5 lays each customer's progress out by step id: a table of the step-id layouts
//! in use, and each progress record names its hunt and its layout by index.
//! Format 6 moves the hunt's id into the layout (a hunt's id and its step ids): a
//! progress record names only its layout.
//! Format 7 takes each partition at a position of the log of its own, and the outbox at
//! its own (docs/adr/0010-snapshots-per-partition-without-stopping.md): the payload
//! says, per partition, up to which record its state and its deliveries reach, and up
//! to which record the delivery changes do. A rebuild reads the log from the least of
//! them and applies each record only to what does not hold it yet ([`Cover`]).
//! Format 8 encodes each partition on its own, as bytes inside the payload, so that
//! a start decodes and builds the partitions on every core.
//! Format 9 gives each delivery its event's partition: the changes of its state are
//! written in that partition's rounds (ADR 0015).
//! Format 1 (JSON) was slow to write and read (2.8 s to load 104 k customers and 1.1 M
//! dedupe entries); a payload in a format this build does not read is refused, and the
//! server then rebuilds from the whole log instead.

use std::sync::Arc;

use std::collections::HashMap;

use hunt_core::engine::{Grant, HuntProgress, Layout, UserState};
use hunt_core::time::Timestamp;
use hunt_store::Lsn;
use serde::{Deserialize, Serialize};

use crate::notify::outbox::Entry;
use crate::records::{ConfigRecord, OutcomeOwned, OutcomeRef, outcome_owned, outcome_ref};
use crate::state::{
    DedupeConfig, HuntCounters, PartitionCopy, PartitionState, Winner, answer_from, partition_of,
    partition_of_hash,
};

/// The payload format this code writes and reads.
pub const FORMAT: u32 = 9;

/// How far each part of a snapshot reaches into the log. Partitions are those of the
/// run that took it (a rebuild routes records with its count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cover {
    /// Per partition: its state holds its events up to this position.
    pub parts: Vec<Lsn>,
    /// Per partition: the outbox holds the deliveries of its events up to here.
    pub deliveries: Vec<Lsn>,
    /// The outbox holds every change of a delivery's state up to here.
    pub changes: Lsn,
}

impl Cover {
    /// The last position every part holds: a rebuild reads the log after it.
    pub fn least(&self) -> Lsn {
        self.parts
            .iter()
            .chain(&self.deliveries)
            .copied()
            .fold(self.changes, Lsn::min)
    }

    /// The partition (of the snapshot's run) an event of `user` was in.
    pub fn partition_of(&self, user: &str) -> usize {
        partition_of(user, self.parts.len())
    }

    /// A partition's snapshot's cover (one part) as partition `n` of `partitions`: the
    /// others hold nothing of this snapshot and are passed over.
    pub fn widen(self, n: usize, partitions: usize) -> Cover {
        let mut parts = vec![Lsn::MAX; partitions];
        let mut deliveries = vec![Lsn::MAX; partitions];
        parts[n] = self.parts.first().copied().unwrap_or(0);
        deliveries[n] = self.deliveries.first().copied().unwrap_or(0);
        Cover {
            parts,
            deliveries,
            changes: self.changes,
        }
    }
}

/// A customer's progress in one hunt; `layout` indexes the snapshot's layouts.
#[derive(Serialize, Deserialize)]
struct ProgressRecord<C> {
    layout: u32,
    counts: C,
    found: u64,
    found_count: u32,
    last_found_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
}

#[derive(Serialize)]
struct UserRef<'a> {
    id: &'a str,
    traits: String,
    hunts: Vec<ProgressRecord<&'a [u32]>>,
    rewards: &'a [Grant],
}

#[derive(Deserialize)]
struct UserOwned {
    id: String,
    traits: String,
    hunts: Vec<ProgressRecord<Vec<u32>>>,
    rewards: Vec<Grant>,
}

/// The layouts progress records use, each once: (hunt, step ids).
#[derive(Default)]
struct Layouts<'a> {
    list: Vec<(&'a str, &'a [Arc<str>])>,
    index: HashMap<*const Layout, u32>,
}

impl<'a> Layouts<'a> {
    fn of(&mut self, layout: &'a Arc<Layout>) -> u32 {
        let list = &mut self.list;
        *self.index.entry(Arc::as_ptr(layout)).or_insert_with(|| {
            list.push((&layout.hunt, &layout.steps));
            list.len() as u32 - 1
        })
    }
}

#[derive(Serialize)]
struct PartRef<'a> {
    users: Vec<UserRef<'a>>,
    dedupe: Vec<(i64, u64, u64, Vec<OutcomeRef<'a>>)>,
    stats: Vec<(&'a Arc<str>, &'a HuntCounters)>,
    winners: Vec<&'a Winner>,
}

#[derive(Deserialize)]
struct PartOwned {
    users: Vec<UserOwned>,
    dedupe: Vec<(i64, u64, u64, Vec<OutcomeOwned>)>,
    stats: Vec<(Arc<str>, HuntCounters)>,
    winners: Vec<Winner>,
}

/// Bytes written as bytes (serde writes a slice as a sequence); postcard lays both out
/// alike, and reads them back borrowed.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: &'a ConfigRecord,
    dedupe_secret: [u64; 2],
    layouts: Vec<(&'a str, &'a [Arc<str>])>,
    /// Each partition's `PartRef`, encoded on its own.
    parts: Vec<Bytes<'a>>,
    outbox: &'a [Entry],
    cover: &'a Cover,
}

#[derive(Deserialize)]
struct SnapshotOwned<'a> {
    version: ConfigRecord,
    dedupe_secret: [u64; 2],
    layouts: Vec<(Arc<str>, Vec<Arc<str>>)>,
    #[serde(borrow)]
    parts: Vec<&'a [u8]>,
    outbox: Vec<Entry>,
    cover: Cover,
}

/// What a snapshot holds.
pub struct Decoded {
    pub version: ConfigRecord,
    pub states: Vec<PartitionState>,
    pub outbox: Vec<Entry>,
    pub cover: Cover,
}

fn part<'a>(p: &'a PartitionCopy, layouts: &mut Layouts<'a>) -> PartRef<'a> {
    PartRef {
        users: p
            .users
            .iter()
            .map(|(id, u)| UserRef {
                id,
                traits: if u.traits.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&u.traits).expect("a JSON map serializes")
                },
                hunts: u
                    .hunts()
                    .iter()
                    .map(|h| ProgressRecord {
                        layout: layouts.of(h.layout()),
                        counts: &h.counts[..],
                        found: h.found,
                        found_count: h.found_count,
                        last_found_at: h.last_found_at,
                        completed_at: h.completed_at,
                    })
                    .collect(),
                rewards: &u.rewards,
            })
            .collect(),
        dedupe: p
            .dedupe
            .entries()
            .map(|(at, k, v)| (at.0, k.0, k.1, v.iter().map(outcome_ref).collect()))
            .collect(),
        stats: p.stats.iter().collect(),
        winners: p.winners.values().collect(),
    }
}

/// The whole payload from the version in force, every partition's state, the outbox,
/// and how far each reaches into the log (`cover.parts` beside `parts`).
pub fn encode(
    version: &ConfigRecord,
    parts: &[PartitionCopy],
    outbox: &[Entry],
    cover: &Cover,
) -> Vec<u8> {
    debug_assert_eq!(parts.len(), cover.parts.len());
    let dedupe_secret = parts.first().map_or([0, 0], |p| p.dedupe.secret());
    let mut layouts = Layouts::default();
    // Each partition encoded as soon as it is laid out: one partition's references at
    // a time, not every customer's.
    let parts: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            postcard::to_allocvec(&part(p, &mut layouts))
                .expect("serializing to memory cannot fail")
        })
        .collect();
    let snap = SnapshotRef {
        version,
        dedupe_secret,
        layouts: layouts.list,
        parts: parts.iter().map(|p| Bytes(p)).collect(),
        outbox,
        cover,
    };
    let size = 4 + parts.iter().map(Vec::len).sum::<usize>() + 4096;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    // Straight after the format number, not copied there.
    postcard::to_extend(&snap, out).expect("serializing to memory cannot fail")
}

/// A partition's part of a payload, built into `state`: its customers, its dedupe
/// window (its entries are in receipt order), its figures and its winners.
fn build(
    part: PartOwned,
    layouts: &[Arc<Layout>],
    mut state: PartitionState,
) -> Result<PartitionState, String> {
    for u in part.users {
        let traits = if u.traits.is_empty() {
            hunt_core::engine::Traits::default()
        } else {
            serde_json::from_str(&u.traits).map_err(|e| format!("traits of `{}`: {e}", u.id))?
        };
        let hunts = u
            .hunts
            .into_iter()
            .map(|h| {
                let layout = layouts
                    .get(h.layout as usize)
                    .ok_or_else(|| format!("progress of `{}` names layout #{}", u.id, h.layout))?;
                HuntProgress::from_parts(
                    layout.clone(),
                    h.counts,
                    h.found,
                    h.found_count,
                    h.last_found_at,
                    h.completed_at,
                )
                .map_err(|e| format!("customer `{}`: {e}", u.id))
            })
            .collect::<Result<Vec<_>, String>>()?;
        state
            .users
            .insert(&u.id, UserState::from_parts(traits, hunts, u.rewards));
    }
    state.dedupe.reserve(part.dedupe.len());
    for (at, route, pair, outcomes) in part.dedupe {
        let outcomes = outcomes
            .into_iter()
            .map(outcome_owned)
            .collect::<Result<Vec<_>, String>>()?;
        let _ = state
            .dedupe
            .insert_key((route, pair), Timestamp(at), answer_from(outcomes));
    }
    for (hunt, c) in part.stats {
        state.stats.entry(hunt).or_default().add(&c);
    }
    for w in part.winners {
        state.winners.push(w);
    }
    Ok(state)
}

/// Partitions of another count than the snapshot's: every customer, dedupe entry and
/// winner goes to the partition its hash gives now (entries and winners in time order).
fn reroute(
    built: Vec<PartitionState>,
    partitions: usize,
    fresh: impl Fn() -> PartitionState,
) -> Vec<PartitionState> {
    let mut states: Vec<PartitionState> = (0..partitions).map(|_| fresh()).collect();
    let mut entries = Vec::new();
    let mut winners = Vec::new();
    for (i, old) in built.into_iter().enumerate() {
        for (id, u) in old.users.iter() {
            states[partition_of(id, partitions)]
                .users
                .insert(id, u.clone());
        }
        entries.extend(old.dedupe.entries().map(|(at, k, v)| (at, k, v.clone())));
        // Figures are sums: any partition may hold them.
        let s = &mut states[i % partitions];
        for (hunt, c) in &old.stats {
            s.stats.entry(hunt.clone()).or_default().add(c);
        }
        winners.extend(old.winners.values().cloned());
    }
    // The window expects entries in receipt order.
    entries.sort_by_key(|e| e.0);
    for (at, key, answer) in entries {
        let p = partition_of_hash(key.0, partitions);
        let _ = states[p].dedupe.insert_key(key, at, answer);
    }
    winners.sort_by_key(|w| w.at);
    for w in winners {
        states[partition_of(&w.user, partitions)].winners.push(w);
    }
    states
}

/// `f` of every item, on as many threads as there are cores (in the items' order).
fn on_every_core<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Result<Vec<R>, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    let mut queues: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, t) in items.into_iter().enumerate() {
        queues[i % threads].push((i, t));
    }
    let f = &f;
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = queues
            .into_iter()
            .map(|q| scope.spawn(move || q.into_iter().map(|(i, t)| (i, f(t))).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| "decoding a snapshot's partition panicked".to_string())?,
            );
        }
        Ok::<_, String>(out)
    })?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// Reads a payload into `partitions` fresh partition states, the version in force and
/// the outbox.
pub fn decode(payload: &[u8], partitions: usize, dedupe: DedupeConfig) -> Result<Decoded, String> {
    let partitions = partitions.max(1);
    let (format, body) = payload
        .split_first_chunk::<4>()
        .ok_or("shorter than its format number")?;
    let format = u32::from_le_bytes(*format);
    if format != FORMAT {
        return Err(format!(
            "format {format} is not the one this build reads ({FORMAT})"
        ));
    }
    let snap: SnapshotOwned =
        postcard::from_bytes(body).map_err(|e| format!("not a snapshot: {e}"))?;
    let layouts: Vec<Arc<Layout>> = snap
        .layouts
        .into_iter()
        .map(|(hunt, steps)| {
            Arc::new(Layout {
                hunt,
                steps: steps.into(),
            })
        })
        .collect();
    if snap.cover.parts.len() != snap.parts.len() || snap.cover.deliveries.len() != snap.parts.len()
    {
        return Err(format!(
            "{} partitions but positions for {} and {}",
            snap.parts.len(),
            snap.cover.parts.len(),
            snap.cover.deliveries.len()
        ));
    }
    let secret = snap.dedupe_secret;
    let fresh = || PartitionState::new(dedupe, secret);
    // Every partition decoded and built on its own, on every core.
    let built = on_every_core(snap.parts, |bytes| {
        let part: PartOwned =
            postcard::from_bytes(bytes).map_err(|e| format!("not a snapshot's partition: {e}"))?;
        build(part, &layouts, fresh())
    })?;
    let built = built.into_iter().collect::<Result<Vec<_>, String>>()?;
    let states = if built.len() == partitions {
        // The same partition count: each is whole already.
        built
    } else {
        reroute(built, partitions, fresh)
    };
    Ok(Decoded {
        version: snap.version,
        states,
        outbox: snap.outbox,
        cover: snap.cover,
    })
}
