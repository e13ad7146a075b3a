//! Reward pools shared by every partition: codes handed out without a lock on the hot
//! path, never more than a pool holds, never beyond a hunt's winner cap.
//!
//! Each pool hands out codes by index with an atomic counter; each hunt counts its
//! winners with an atomic compare-and-swap against `max_winners`. A code is only
//! *granted* once the grant is recorded in the log: until then it is an allocation. One
//! that is dropped uncommitted (a panic while applying its event) gives its code back
//! at once; one committed whose record never reached the log (the append failed and the
//! process stopped, or it crashed) is forgotten — on restart,
//! [`SharedPools::from_grants`] rebuilds the counters from the grants the log holds, and
//! every index below the highest one that the log does not hold is free again.
//! Returned codes go to a small free list (a lock taken only when it is not empty).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::catalog::Catalog;
use crate::engine::{Allocator, DenyReason};

/// One pool's allocation state.
#[derive(Debug)]
struct PoolState {
    /// The next never-used index.
    next: AtomicU64,
    size: u64,
    /// Indexes given back (rollbacks) or never recorded (recovery), smallest last.
    free: Mutex<Vec<u64>>,
    /// `free.len()`, readable without the lock.
    free_len: AtomicUsize,
}

/// The reward state shared by all partitions of one catalog.
#[derive(Debug)]
pub struct SharedPools {
    pools: Vec<PoolState>,
    /// Winners per hunt (customers granted its reward).
    winners: Vec<AtomicU64>,
    caps: Vec<Option<u64>>,
}

impl SharedPools {
    /// Fresh state: every code free, no winners.
    pub fn new(catalog: &Catalog) -> SharedPools {
        SharedPools::restore(catalog, std::iter::empty()).expect("no grants to check")
    }

    /// State rebuilt from the grants recorded in the log: `(hunt index, pool index, code
    /// index)`. Indexes below the highest recorded one that are not recorded are free.
    /// Errors name a grant the catalog cannot hold (an index past the pool's size).
    pub fn restore(
        catalog: &Catalog,
        grants: impl IntoIterator<Item = (usize, usize, u64)>,
    ) -> Result<SharedPools, String> {
        let mut codes = Vec::new();
        let mut winners = vec![0u64; catalog.hunts.len()];
        for (h, p, i) in grants {
            codes.push((p, i));
            if let Some(w) = winners.get_mut(h) {
                *w += 1;
            }
        }
        SharedPools::restore_parts(catalog, codes, winners)
    }

    /// State rebuilt from the grants customers hold, by id: `(hunt, pool, code)`. A hunt
    /// counts every winner it had, whatever pool their code came from; a code counts as
    /// taken in the pool of the same id that holds it. A code from a pool the catalog no
    /// longer has counts as taken in every pool that holds it, so a pool renamed in a new
    /// version never hands a granted code out again. A grant whose code its own pool no
    /// longer holds is not taken from it (see [`crate::plan::refusals`], which refuses
    /// such a version before it is put in force).
    pub fn from_grants<'a>(
        catalog: &Catalog,
        grants: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<SharedPools, String> {
        let mut codes = Vec::new();
        let mut winners = vec![0u64; catalog.hunts.len()];
        for (hunt, pool, code) in grants {
            if let Some(h) = catalog.hunt_index(hunt) {
                winners[h] += 1;
            }
            match catalog.pools.iter().position(|p| &*p.id == pool) {
                Some(p) => {
                    if let Some(i) = catalog.pools[p].index_of(code) {
                        codes.push((p, i));
                    }
                }
                None => {
                    for (p, other) in catalog.pools.iter().enumerate() {
                        if let Some(i) = other.index_of(code) {
                            codes.push((p, i));
                        }
                    }
                }
            }
        }
        SharedPools::restore_parts(catalog, codes, winners)
    }

    fn restore_parts(
        catalog: &Catalog,
        codes: Vec<(usize, u64)>,
        winners: Vec<u64>,
    ) -> Result<SharedPools, String> {
        let mut used: Vec<Vec<u64>> = vec![Vec::new(); catalog.pools.len()];
        for (p, i) in codes {
            let pool = catalog
                .pools
                .get(p)
                .ok_or_else(|| format!("grant for unknown pool #{p}"))?;
            if i >= pool.size() {
                return Err(format!(
                    "grant of code #{i} but pool `{}` holds {}",
                    pool.id,
                    pool.size()
                ));
            }
            used[p].push(i);
        }
        let pools = catalog
            .pools
            .iter()
            .zip(used)
            .map(|(pool, mut used)| {
                used.sort_unstable();
                used.dedup();
                let next = used.last().map_or(0, |m| m + 1);
                let mut free: Vec<u64> = (0..next)
                    .filter(|i| used.binary_search(i).is_err())
                    .collect();
                free.reverse();
                PoolState {
                    next: AtomicU64::new(next),
                    size: pool.size(),
                    free_len: AtomicUsize::new(free.len()),
                    free: Mutex::new(free),
                }
            })
            .collect();
        Ok(SharedPools {
            pools,
            winners: winners.into_iter().map(AtomicU64::new).collect(),
            caps: catalog.hunts.iter().map(|h| h.max_winners).collect(),
        })
    }

    /// Takes a winner slot of `hunt` and a code index of `pool`, or says why not.
    pub fn allocate(&self, hunt: usize, pool: usize) -> Result<u64, DenyReason> {
        let winners = &self.winners[hunt];
        if let Some(cap) = self.caps[hunt] {
            let mut n = winners.load(Ordering::Relaxed);
            loop {
                if n >= cap {
                    return Err(DenyReason::WinnersCap);
                }
                match winners.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => n = now,
                }
            }
        } else {
            winners.fetch_add(1, Ordering::AcqRel);
        }
        match self.take_code(pool) {
            Some(i) => Ok(i),
            None => {
                // No code: the winner slot goes back.
                winners.fetch_sub(1, Ordering::AcqRel);
                Err(DenyReason::PoolEmpty)
            }
        }
    }

    fn take_code(&self, pool: usize) -> Option<u64> {
        let p = &self.pools[pool];
        if p.free_len.load(Ordering::Acquire) > 0 {
            let mut free = p.free.lock();
            if let Some(i) = free.pop() {
                p.free_len.store(free.len(), Ordering::Release);
                return Some(i);
            }
        }
        // The hot path: one atomic add; past the size it only counts misses.
        let i = p.next.fetch_add(1, Ordering::AcqRel);
        if i < p.size {
            return Some(i);
        }
        p.next.fetch_sub(1, Ordering::AcqRel);
        // A rollback may have freed one meanwhile.
        let mut free = p.free.lock();
        let got = free.pop();
        p.free_len.store(free.len(), Ordering::Release);
        got
    }

    /// Gives back an allocation that was never recorded (its append failed).
    pub fn release(&self, hunt: usize, pool: usize, index: u64) {
        self.winners[hunt].fetch_sub(1, Ordering::AcqRel);
        let p = &self.pools[pool];
        let mut free = p.free.lock();
        // Smallest last, so the lowest code goes out first.
        let at = free.partition_point(|x| *x > index);
        free.insert(at, index);
        p.free_len.store(free.len(), Ordering::Release);
    }

    /// Codes of `pool` currently handed out (allocated and not released).
    pub fn taken(&self, pool: usize) -> u64 {
        let p = &self.pools[pool];
        let next = p.next.load(Ordering::Acquire).min(p.size);
        next - p.free_len.load(Ordering::Acquire) as u64
    }

    /// Winners of `hunt` so far.
    pub fn winners(&self, hunt: usize) -> u64 {
        self.winners[hunt].load(Ordering::Acquire)
    }
}

/// An allocator for one process (`hunt test`, `hunt simulate`): the shared pools, each
/// allocation kept at once, as nothing is recorded that could fail.
#[derive(Debug)]
pub struct LocalAllocator {
    pools: SharedPools,
}

impl LocalAllocator {
    pub fn new(catalog: &Catalog) -> LocalAllocator {
        LocalAllocator {
            pools: SharedPools::new(catalog),
        }
    }

    /// An allocator over pools already restored (a new version in force).
    pub fn from_pools(pools: SharedPools) -> LocalAllocator {
        LocalAllocator { pools }
    }

    /// Codes taken from `pool` so far.
    pub fn used(&self, pool: usize) -> u64 {
        self.pools.taken(pool)
    }
}

impl Allocator for LocalAllocator {
    fn allocate(
        &mut self,
        catalog: &Catalog,
        hunt: usize,
        pool: usize,
    ) -> Result<String, DenyReason> {
        let i = self.pools.allocate(hunt, pool)?;
        catalog.pools[pool].code(i).ok_or(DenyReason::PoolEmpty)
    }
}

/// The allocations made while applying one event: the engine's [`Allocator`] over the
/// shared pools. Commit to keep them; dropping it uncommitted (a rollback, or a panic
/// while applying) gives the codes and winner slots back. The server commits as soon as
/// the event is applied, before its record is durable: a failed append stops the
/// process, and the pools rebuilt from the log on restart hold only recorded grants.
pub struct Allocation<'a> {
    pools: &'a SharedPools,
    taken: Vec<(usize, usize, u64)>,
}

impl<'a> Allocation<'a> {
    pub fn new(pools: &'a SharedPools) -> Allocation<'a> {
        Allocation {
            pools,
            taken: Vec::new(),
        }
    }

    /// The allocations made: (hunt, pool, code index).
    pub fn taken(&self) -> &[(usize, usize, u64)] {
        &self.taken
    }

    /// Keeps the grants: the event was applied (see the type for when the server calls it).
    pub fn commit(mut self) {
        self.taken.clear();
    }

    /// The grants were not recorded: give the codes and winner slots back (what
    /// dropping an uncommitted allocation does).
    pub fn rollback(self) {}
}

impl Drop for Allocation<'_> {
    /// Not committed (rolled back, or a panic on the way): give back, as nothing was
    /// recorded.
    fn drop(&mut self) {
        for (h, p, i) in self.taken.drain(..) {
            self.pools.release(h, p, i);
        }
    }
}

impl Allocator for Allocation<'_> {
    fn allocate(
        &mut self,
        catalog: &Catalog,
        hunt: usize,
        pool: usize,
    ) -> Result<String, DenyReason> {
        let i = self.pools.allocate(hunt, pool)?;
        self.taken.push((hunt, pool, i));
        catalog.pools[pool].code(i).ok_or(DenyReason::PoolEmpty)
    }
}
