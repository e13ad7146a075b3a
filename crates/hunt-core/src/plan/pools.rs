//! What changed in the reward pools.

use crate::catalog::{Catalog, Codes, Pool};

use super::{Change, ChangeKind};

fn codes_text(p: &Pool) -> String {
    match &p.codes {
        Codes::Listed(c) => format!("{} listed codes", c.len()),
        Codes::Generated {
            prefix,
            digits,
            start,
            count,
        } => format!(
            "{count} codes {prefix}{:0digits$}…",
            start,
            digits = *digits
        ),
    }
}

fn same_codes(a: &Pool, b: &Pool) -> bool {
    match (&a.codes, &b.codes) {
        (Codes::Listed(x), Codes::Listed(y)) => x == y,
        (
            Codes::Generated {
                prefix: p1,
                digits: d1,
                start: s1,
                count: c1,
            },
            Codes::Generated {
                prefix: p2,
                digits: d2,
                start: s2,
                count: c2,
            },
        ) => (p1, d1, s1, c1) == (p2, d2, s2, c2),
        _ => false,
    }
}

pub(super) fn pools(old: &Catalog, new: &Catalog, out: &mut Vec<Change>) {
    for p in &new.pools {
        match old.pools.iter().find(|o| o.id == p.id) {
            None => out.push(
                Change::new(
                    ChangeKind::PoolAdded,
                    format!("pool {} added ({})", p.id, codes_text(p)),
                    "codes already granted from a pool of this id count as taken",
                )
                .pool(&p.id),
            ),
            Some(o) if !same_codes(o, p) => out.push(
                Change::new(
                    ChangeKind::PoolChanged,
                    format!("pool {}: {} → {}", p.id, codes_text(o), codes_text(p)),
                    "codes granted are kept and count as taken; the others are free",
                )
                .pool(&p.id),
            ),
            Some(_) => {}
        }
    }
    for o in &old.pools {
        if !new.pools.iter().any(|p| p.id == o.id) {
            out.push(
                Change::new(
                    ChangeKind::PoolRemoved,
                    format!("pool {} removed", o.id),
                    "customers keep the codes they were granted",
                )
                .pool(&o.id),
            );
        }
    }
}
