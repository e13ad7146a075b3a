//! Which live node should own each partition: rendezvous hashing (highest random
//! weight). Every node computes the same assignment from the same set of live nodes,
//! with no coordination; a node that joins or leaves moves only the partitions it
//! wins or held, about P/N of them.
//!
//! The weights must be the same on every node and in every version of the engine, so
//! they come from a hash written out here (FNV-1a, then a 64-bit finaliser), not from
//! the standard library's randomly keyed one.

/// FNV-1a over `bytes`, from `seed`.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The finaliser of SplitMix64: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `node` for `partition`.
pub fn weight(node: &str, partition: u32) -> u64 {
    mix(fnv1a(0xcbf2_9ce4_8422_2325, node.as_bytes()) ^ mix(u64::from(partition) + 1))
}

/// The node that should own `partition` among `nodes` (`None`: no node). Ties (the
/// same weight) go to the smaller id, so the answer never depends on the order given.
pub fn owner<'a>(partition: u32, nodes: &[&'a str]) -> Option<&'a str> {
    nodes.iter().copied().max_by(|a, b| {
        weight(a, partition)
            .cmp(&weight(b, partition))
            .then_with(|| b.cmp(a))
    })
}

/// The owner of every partition `0..partitions`.
pub fn assignment<'a>(partitions: u32, nodes: &[&'a str]) -> Vec<Option<&'a str>> {
    (0..partitions).map(|p| owner(p, nodes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn the_weights_do_not_change_between_builds() {
        // Pinned: a change here would move partitions between nodes of different
        // versions during a rolling upgrade.
        assert_eq!(weight("a", 0), weight("a", 0));
        assert_ne!(weight("a", 0), weight("a", 1));
        assert_ne!(weight("a", 0), weight("b", 0));
        let nodes = ["a", "b", "c"];
        let owners: String = assignment(12, &nodes)
            .into_iter()
            .map(|o| o.expect("a node"))
            .collect();
        assert_eq!(owners, "caaaccbaabbc");
    }

    #[test]
    fn no_node_owns_nothing() {
        assert_eq!(owner(3, &[]), None);
    }

    #[test]
    fn partitions_spread_evenly_over_nodes() {
        let names = ids(4);
        let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = assignment(1024, &nodes);
        for n in &nodes {
            let mine = a.iter().filter(|o| **o == Some(*n)).count();
            // 256 expected; a fair hash stays well within a fifth of it.
            assert!((205..=307).contains(&mine), "{n} owns {mine} of 1024");
        }
    }

    proptest! {
        /// The same answer whatever the order of the nodes; a joining node takes
        /// partitions only for itself, and a leaving node's partitions are the only
        /// ones that move.
        #[test]
        fn a_join_or_leave_moves_only_its_own_partitions(
            n in 1usize..8,
            partitions in 1u32..200,
            rotate in 0usize..8,
        ) {
            let names = ids(n + 1);
            let nodes: Vec<&str> = names[..n].iter().map(String::as_str).collect();
            let mut shuffled = nodes.clone();
            shuffled.rotate_left(rotate % n);
            let before = assignment(partitions, &nodes);
            prop_assert_eq!(&before, &assignment(partitions, &shuffled));
            // Join.
            let mut more = nodes.clone();
            more.push(&names[n]);
            let after = assignment(partitions, &more);
            for (b, a) in before.iter().zip(&after) {
                prop_assert!(a == b || *a == Some(names[n].as_str()));
            }
            // Leave: the first node goes.
            let fewer: Vec<&str> = nodes[1..].to_vec();
            let after = assignment(partitions, &fewer);
            for (b, a) in before.iter().zip(&after) {
                prop_assert!(a == b || *b == Some(nodes[0]));
            }
        }
    }
}
