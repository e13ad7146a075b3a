//! The codes already granted against a new version: a pool may not shrink below them
//! or lose one of them.

use std::collections::{BTreeMap, HashMap};

use crate::catalog::Catalog;

use super::Refusal;

/// Why the codes already granted do not fit `new`: per pool of the new file, the granted
/// codes it no longer holds.
pub fn refusals<'a>(
    new: &Catalog,
    grants: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Vec<Refusal> {
    // Per pool of the new file: codes granted, and those it lacks (with one example).
    let mut per_pool: HashMap<&str, (u64, u64, Option<&'a str>)> = HashMap::new();
    for (_, pool, code) in grants {
        let Some(p) = new.pools.iter().find(|p| &*p.id == pool) else {
            continue;
        };
        let e = per_pool.entry(&p.id).or_default();
        e.0 += 1;
        if p.index_of(code).is_none() {
            e.1 += 1;
            e.2.get_or_insert(code);
        }
    }
    let mut out: BTreeMap<&str, Refusal> = BTreeMap::new();
    for p in &new.pools {
        let Some((granted, missing, example)) = per_pool.get(&*p.id) else {
            continue;
        };
        let reason = if *granted > p.size() {
            format!(
                "pool {} would hold {} codes, but {} are already granted",
                p.id,
                p.size(),
                granted
            )
        } else if *missing > 0 {
            format!(
                "pool {} no longer holds {} code(s) already granted (for example {}); \
                 customers keep their codes, so a pool must keep every code it granted",
                p.id,
                missing,
                example.unwrap_or_default()
            )
        } else {
            continue;
        };
        out.insert(
            &p.id,
            Refusal {
                pool: Some(p.id.clone()),
                reason,
            },
        );
    }
    out.into_values().collect()
}
