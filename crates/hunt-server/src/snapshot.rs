//! The snapshot payload: the version in force, then one line of JSON per partition
//! (customers, dedupe window, figures, winners). Each partition writes its own line,
//! so the work is spread over the partitions while they are paused. Loading re-routes
//! every customer by hash, so the partition count may change between runs.
//!
//! JSON, not postcard: customers' traits and events' data are self-describing values.

use std::collections::HashMap;
use std::sync::Arc;

use hunt_core::engine::{Outcome, UserState};
use hunt_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::records::ConfigRecord;
use crate::state::{DedupeConfig, HuntCounters, PartitionState, Winner, partition_of};

/// The payload format this code writes.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    version: ConfigRecord,
}

#[derive(Serialize)]
struct PartRef<'a> {
    users: &'a HashMap<String, UserState, foldhash::fast::RandomState>,
    dedupe: Vec<(i64, &'a str, &'a str, &'a [Outcome])>,
    stats: &'a HashMap<Arc<str>, HuntCounters>,
    winners: &'a [Winner],
}

#[derive(Deserialize)]
struct PartOwned {
    users: HashMap<String, UserState>,
    dedupe: Vec<(i64, String, String, Vec<Outcome>)>,
    stats: HashMap<Arc<str>, HuntCounters>,
    winners: Vec<Winner>,
}

/// One partition's line.
pub fn encode_partition(p: &PartitionState) -> Vec<u8> {
    let part = PartRef {
        users: &p.users,
        dedupe: p
            .dedupe
            .entries()
            .map(|(at, u, i, v)| (at.0, u, i, &v[..]))
            .collect(),
        stats: &p.stats,
        winners: &p.winners,
    };
    serde_json::to_vec(&part).expect("serializing to memory cannot fail")
}

/// The whole payload from the version and the partitions' lines.
pub fn encode(version: &ConfigRecord, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = serde_json::to_vec(&Header {
        format: FORMAT,
        version: version.clone(),
    })
    .expect("serializing to memory cannot fail");
    for p in parts {
        out.push(b'\n');
        out.extend_from_slice(p);
    }
    out
}

/// Reads a payload into `partitions` fresh partition states and the version in force.
pub fn decode(
    payload: &[u8],
    partitions: usize,
    dedupe: DedupeConfig,
) -> Result<(ConfigRecord, Vec<PartitionState>), String> {
    let mut lines = payload.split(|b| *b == b'\n');
    let header: Header = serde_json::from_slice(lines.next().unwrap_or_default())
        .map_err(|e| format!("snapshot header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "snapshot format {} is not one this build reads ({FORMAT})",
            header.format
        ));
    }
    let mut states: Vec<PartitionState> = (0..partitions)
        .map(|_| PartitionState::new(dedupe))
        .collect();
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        let part: PartOwned =
            serde_json::from_slice(line).map_err(|e| format!("snapshot partition {i}: {e}"))?;
        for (user, state) in part.users {
            states[partition_of(&user, partitions)]
                .users
                .insert(user, state);
        }
        entries.extend(part.dedupe);
        // Figures are sums: any partition may hold them.
        let s = &mut states[i % partitions];
        for (hunt, c) in part.stats {
            s.stats.entry(hunt).or_default().add(&c);
        }
        for w in part.winners {
            states[partition_of(&w.user, partitions)].winners.push(w);
        }
    }
    // The window expects entries in receipt order.
    entries.sort_by_key(|e| e.0);
    for (at, user, id, outcomes) in entries {
        let p = partition_of(&user, partitions);
        let _ = states[p]
            .dedupe
            .insert(&user, &id, Timestamp(at), outcomes.into());
    }
    for s in &mut states {
        s.winners.sort_by_key(|w| w.at);
    }
    Ok((header.version, states))
}
