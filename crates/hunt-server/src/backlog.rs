//! The backlog: events admitted and not yet answered, counted in one place. It bounds
//! what a burst can make the server hold: a request that would take it over its limit
//! is refused whole (`503` with `Retry-After`) before anything is queued.
//!
//! Two counts, both kept here: the total (from admission until the partitions have
//! answered the request) and, per partition, the events in its queue not yet applied.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Over the limit: how many were queued, and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the backlog holds {queued} events, over its limit of {limit}; retry later")]
pub struct Full {
    pub queued: usize,
    pub limit: usize,
}

pub struct Backlog {
    limit: usize,
    total: AtomicUsize,
    partitions: Box<[AtomicUsize]>,
    /// Events each partition has applied since the start: the dashboard's drain rate
    /// per partition. Only the partition's own worker adds to its count.
    applied: Box<[AtomicU64]>,
}

impl Backlog {
    pub fn new(partitions: usize, limit: usize) -> Backlog {
        Backlog {
            limit,
            total: AtomicUsize::new(0),
            partitions: (0..partitions).map(|_| AtomicUsize::new(0)).collect(),
            applied: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Admits `n` events, or refuses them all. The admission gives them back when it
    /// is dropped: when the request no longer waits for the partitions, also when it is
    /// dropped mid-way because its client went away.
    pub fn admit(&self, n: usize) -> Result<Admitted<'_>, Full> {
        let queued = self.total.fetch_add(n, Ordering::AcqRel);
        let admitted = Admitted { backlog: self, n };
        if queued + n > self.limit {
            return Err(Full {
                queued,
                limit: self.limit,
            });
        }
        Ok(admitted)
    }

    /// `k` events handed to partition `p`'s queue.
    pub fn queued(&self, p: usize, k: usize) {
        self.partitions[p].fetch_add(k, Ordering::AcqRel);
    }

    /// `k` events of partition `p`'s queue applied (or never delivered to it).
    pub fn applied(&self, p: usize, k: usize) {
        self.partitions[p].fetch_sub(k, Ordering::AcqRel);
        self.applied[p].fetch_add(k as u64, Ordering::Relaxed);
    }

    /// Events each partition has taken from its queue since the start.
    pub fn applied_per_partition(&self) -> Vec<u64> {
        self.applied
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Events admitted and not yet answered, over all partitions.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Events queued per partition, not yet applied.
    pub fn per_partition(&self) -> Vec<usize> {
        self.partitions
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

/// Events counted in the backlog until this is dropped.
pub struct Admitted<'a> {
    backlog: &'a Backlog,
    n: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.backlog.total.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_over_the_limit_is_refused_whole_and_counts_nothing() {
        let b = Backlog::new(2, 10);
        let first = b.admit(6).unwrap();
        assert_eq!(b.total(), 6);
        assert_eq!(
            b.admit(5).err(),
            Some(Full {
                queued: 6,
                limit: 10
            })
        );
        assert_eq!(b.total(), 6, "a refused request leaves no trace");
        let second = b.admit(4).unwrap();
        assert_eq!(b.total(), 10);
        drop(first);
        drop(second);
        assert_eq!(b.total(), 0, "admissions give their events back");
    }

    #[test]
    fn partitions_count_their_queues() {
        let b = Backlog::new(2, 10);
        b.queued(1, 3);
        b.queued(0, 1);
        b.applied(1, 2);
        assert_eq!(b.per_partition(), vec![1, 1]);
    }
}
