//! An in-memory escrow that keeps the same accounts as a cluster's pools bucket
//! (`hunt_cluster::Account`), shared by every "node" of a test: the server's pools on
//! a cluster, without NATS.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hunt_cluster::{Account, EscrowError, Policy, Used};
use hunt_server::escrow::{
    AccountRef, BoxFuture, Claimed, EscrowBackend, EscrowFailure, Lineage, Refilled, Seed, Span,
    UsedIdx,
};
use parking_lot::Mutex;

/// The accounts and lineages, as the pools bucket holds them.
#[derive(Default)]
pub struct Bucket {
    pub accounts: Mutex<HashMap<String, Account>>,
    pub lineages: Mutex<HashMap<String, Lineage>>,
    pub ops: AtomicU64,
    /// Refuse to record lineages (a bucket lost half way through a switch).
    pub refuse_lineages: std::sync::atomic::AtomicBool,
    /// Refuse one partition's seeds of the accounts whose key starts with the prefix
    /// (the bucket lost half way through a partition's seeds).
    pub refuse_seed: Mutex<Option<(String, u32)>>,
}

/// One node's view of the bucket: its lease's epoch.
pub struct MemoryEscrow {
    bucket: Arc<Bucket>,
    epoch: u64,
    policy: Policy,
}

impl Bucket {
    /// The one account whose key starts with `prefix` (`code.gold.v1-`: a version's
    /// keys end with a digest of its text), and its key.
    pub fn account(&self, prefix: &str) -> (String, Account) {
        let all = self.accounts.lock();
        let mut found = all.iter().filter(|(k, _)| k.starts_with(prefix));
        let (k, a) = found
            .next()
            .unwrap_or_else(|| panic!("no {prefix}…: {:?}", all.keys()));
        assert!(found.next().is_none(), "two {prefix}…: {:?}", all.keys());
        (k.clone(), a.clone())
    }
}

fn failure(e: EscrowError) -> EscrowFailure {
    match e {
        EscrowError::Fenced { .. } => EscrowFailure::Fenced(e.to_string()),
        _ => EscrowFailure::Unavailable(e.to_string()),
    }
}

fn used(u: UsedIdx<'_>) -> Used<'_> {
    match u {
        UsedIdx::Indexes(ix) => Used::Indexes(ix),
        UsedIdx::Count(n) => Used::Count(n),
    }
}

impl MemoryEscrow {
    pub fn node(bucket: &Arc<Bucket>, epoch: u64, partitions: u32) -> Arc<MemoryEscrow> {
        Arc::new(MemoryEscrow {
            bucket: bucket.clone(),
            epoch,
            policy: Policy {
                partitions,
                max_block: 64,
            },
        })
    }

    /// Changes `a`'s account as the pools bucket does: created if absent, its size
    /// raised if asked larger, refused if asked smaller.
    fn change<T>(
        &self,
        a: &AccountRef,
        f: impl FnOnce(&mut Account) -> Result<T, EscrowError>,
    ) -> Result<T, EscrowFailure> {
        self.bucket.ops.fetch_add(2, Ordering::Relaxed);
        let mut all = self.bucket.accounts.lock();
        let account = all
            .entry(a.key.clone())
            .or_insert_with(|| Account::new(&a.id, a.size));
        if account.size < a.size {
            account.size = a.size;
        }
        let mut changed = account.clone();
        let out = f(&mut changed).map_err(failure)?;
        changed.check().expect("an account stays consistent");
        *account = changed;
        Ok(out)
    }
}

impl EscrowBackend for MemoryEscrow {
    fn claim<'a>(
        &'a self,
        a: &'a AccountRef,
        partition: u32,
    ) -> BoxFuture<'a, Result<Claimed, EscrowFailure>> {
        Box::pin(async move {
            let h = self.change(a, |acc| acc.claim(&a.key, partition, self.epoch))?;
            Ok(Claimed {
                spans: h.spans,
                used: h.used,
            })
        })
    }

    fn refill<'a>(
        &'a self,
        a: &'a AccountRef,
        partition: u32,
        u: UsedIdx<'a>,
    ) -> BoxFuture<'a, Result<Refilled, EscrowFailure>> {
        Box::pin(async move {
            let policy = self.policy;
            let r = self.change(a, |acc| {
                acc.refill_below(a.size, &a.key, partition, self.epoch, used(u), 64, policy)
            })?;
            Ok(Refilled {
                got: r.got,
                held_elsewhere: r.held_elsewhere,
                seeding: r.seeding,
            })
        })
    }

    fn give_back<'a>(
        &'a self,
        a: &'a AccountRef,
        partition: u32,
        u: UsedIdx<'a>,
        unused: &'a [Span],
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        Box::pin(async move {
            self.change(a, |acc| {
                acc.give_back(&a.key, partition, self.epoch, used(u), unused)
            })?;
            Ok(())
        })
    }

    fn wait_left<'a>(
        &'a self,
        a: &'a AccountRef,
        limit: Duration,
    ) -> BoxFuture<'a, Result<bool, EscrowFailure>> {
        Box::pin(async move {
            let until = tokio::time::Instant::now() + limit;
            loop {
                self.bucket.ops.fetch_add(1, Ordering::Relaxed);
                let left = self
                    .bucket
                    .accounts
                    .lock()
                    .get(&a.key)
                    .is_some_and(|acc| acc.left() > 0);
                if left || tokio::time::Instant::now() >= until {
                    return Ok(left);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn seed<'a>(
        &'a self,
        a: &'a AccountRef,
        seeds: Vec<(u32, Seed)>,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        Box::pin(async move {
            self.change(a, |acc| {
                for (p, s) in &seeds {
                    match s {
                        Seed::Indexes(ix) => acc.seed(*p, Used::Indexes(ix)),
                        Seed::Count(n) => acc.seed(*p, Used::Count(*n)),
                    }
                }
                Ok(())
            })
        })
    }

    fn await_seeds<'a>(
        &'a self,
        a: &'a AccountRef,
        tag: &'a str,
        version: u64,
        below: u64,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        let partitions = self.policy.partitions;
        Box::pin(async move {
            self.change(a, |acc| {
                acc.await_seeds(tag, version, partitions, below);
                Ok(())
            })
        })
    }

    fn marked<'a>(
        &'a self,
        a: &'a AccountRef,
        version: u64,
        partition: u32,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        Box::pin(async move {
            self.change(a, |acc| {
                acc.marked(version, partition);
                Ok(())
            })
        })
    }

    fn seed_at_marker<'a>(
        &'a self,
        a: &'a AccountRef,
        version: u64,
        partition: u32,
        seed: Seed,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        Box::pin(async move {
            if let Some((prefix, p)) = &*self.bucket.refuse_seed.lock()
                && a.key.starts_with(prefix.as_str())
                && *p == partition
            {
                return Err(EscrowFailure::Unavailable("the bucket is gone".into()));
            }
            self.change(a, |acc| {
                match &seed {
                    Seed::Indexes(ix) => acc.seed_at_marker(version, partition, Used::Indexes(ix)),
                    Seed::Count(n) => acc.seed_at_marker(version, partition, Used::Count(*n)),
                }
                Ok(())
            })
        })
    }

    fn lineage<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Lineage>, EscrowFailure>> {
        Box::pin(async move { Ok(self.bucket.lineages.lock().get(key).cloned()) })
    }

    fn set_lineage<'a>(
        &'a self,
        key: &'a str,
        lineage: &'a Lineage,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>> {
        Box::pin(async move {
            if self.bucket.refuse_lineages.load(Ordering::Relaxed) {
                return Err(EscrowFailure::Unavailable("the bucket is gone".into()));
            }
            self.bucket
                .lineages
                .lock()
                .insert(key.to_string(), lineage.clone());
            Ok(())
        })
    }

    fn ops(&self) -> u64 {
        self.bucket.ops.load(Ordering::Relaxed)
    }
}
