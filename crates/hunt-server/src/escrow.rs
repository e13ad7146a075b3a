//! A cluster's pools (ADR 0012): each partition grants from its own block of a pool's
//! codes and of a hunt's winner slots, fetched from an escrow shared by every node,
//! instead of from the process's atomics (ADR 0004), which two nodes would not share.
//!
//! Owns: the partition's blocks ([`Holdings`], one per worker, no lock), the
//! allocation that takes from them ([`EscrowAllocation`]), and which account each pool
//! and capped hunt uses in a hunts-file version ([`Lineage`]).
//! Must never: grant an index the escrow did not hand to the partition, or tell the
//! escrow an index was used before the grant's record is durable.
//!
//! The escrow itself (a KV bucket on NATS) is behind [`EscrowBackend`], so that the
//! server knows nothing of NATS; `hunt serve --cluster` gives the real one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Allocator, DenyReason};
use serde::{Deserialize, Serialize};

/// Indexes `start..end`.
pub type Span = (u64, u64);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a partition that found an account empty waits for others to give back.
pub const WAIT_LEFT: Duration = Duration::from_millis(300);
/// How long after that it denies at once, without asking the escrow again.
pub const DRY_FOR: Duration = Duration::from_secs(1);
/// How long a partition waits for an account that waits for other partitions' seeds
/// (a version being put in force partition by partition) before it refuses the event
/// for a retry.
pub const SEEDING_WAIT: Duration = Duration::from_secs(5);

/// One account of the escrow: its key, the pool's or hunt's id, and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRef {
    pub key: String,
    pub id: String,
    pub size: u64,
}

/// Indexes a partition has used, their grants durable.
#[derive(Debug, Clone, Copy)]
pub enum UsedIdx<'a> {
    /// These indexes (a pool's codes).
    Indexes(&'a [u64]),
    /// This many, any (a hunt's winner slots).
    Count(u64),
}

/// What a partition's customers already hold of a new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    Indexes(Vec<u64>),
    Count(u64),
}

/// A partition's holding as its new owner claims it.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub spans: Vec<Span>,
    /// How many it has dropped as used, every owner together.
    pub used: u64,
}

/// What a refill handed over.
#[derive(Debug, Clone, Default)]
pub struct Refilled {
    /// Indexes newly handed to the partition (empty: none left).
    pub got: Vec<Span>,
    /// Unused indexes other partitions hold: what could still be given back.
    pub held_elsewhere: u64,
    /// The account waits for partitions' seeds of a new version: ask again soon.
    pub seeding: bool,
}

/// What a fetch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The partition holds indexes of the account now.
    Some,
    /// None left; others hold some that could come back.
    Wait,
    /// None left and none held anywhere: spent until a version grows it.
    Spent,
    /// None handed out yet: the account waits for other partitions to seed it at
    /// their markers of a new version (ADR 0015); ask again in a moment.
    Seeding,
}

/// Why the escrow could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EscrowFailure {
    /// A newer owner claimed the partition's holding: this node no longer owns it.
    #[error("{0}")]
    Fenced(String),
    /// The escrow could not be reached or changed now; nothing was taken.
    #[error("{0}")]
    Unavailable(String),
}

/// The escrow, as the server uses it: every call is one partition's, with the epoch of
/// this node's lease held by the implementation.
pub trait EscrowBackend: Send + Sync + 'static {
    /// Takes the partition's holding over (no older owner may change it after).
    fn claim<'a>(
        &'a self,
        account: &'a AccountRef,
        partition: u32,
    ) -> BoxFuture<'a, Result<Claimed, EscrowFailure>>;
    /// Drops `used` from the holding and hands a block (empty: nothing left).
    fn refill<'a>(
        &'a self,
        account: &'a AccountRef,
        partition: u32,
        used: UsedIdx<'a>,
    ) -> BoxFuture<'a, Result<Refilled, EscrowFailure>>;
    /// Drops `used` and gives `unused` back for any partition.
    fn give_back<'a>(
        &'a self,
        account: &'a AccountRef,
        partition: u32,
        used: UsedIdx<'a>,
        unused: &'a [Span],
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// Waits until the account has indexes left for any partition, at most `limit`.
    fn wait_left<'a>(
        &'a self,
        account: &'a AccountRef,
        limit: Duration,
    ) -> BoxFuture<'a, Result<bool, EscrowFailure>>;
    /// Seeds a new account with what partitions' customers hold, in one write.
    fn seed<'a>(
        &'a self,
        account: &'a AccountRef,
        seeds: Vec<(u32, Seed)>,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// Makes a new or grown account wait for every partition's seed of version `tag`
    /// (a version put in force by markers): meanwhile it hands out only indexes below
    /// `below`. Asking again for the same version changes nothing.
    fn await_seeds<'a>(
        &'a self,
        account: &'a AccountRef,
        tag: &'a str,
        version: u64,
        below: u64,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// `partition`'s marker of `version` is durable: it no longer holds back the
    /// account's wait asked by this version or an earlier one.
    fn marked<'a>(
        &'a self,
        account: &'a AccountRef,
        version: u64,
        partition: u32,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// One partition's seed before its marker of `version`, in one write (merged:
    /// seeding again with more is safe).
    fn seed_at_marker<'a>(
        &'a self,
        account: &'a AccountRef,
        version: u64,
        partition: u32,
        seed: Seed,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// The accounts of a hunts-file version, as recorded at its switch.
    fn lineage<'a>(&'a self, key: &'a str)
    -> BoxFuture<'a, Result<Option<Lineage>, EscrowFailure>>;
    fn set_lineage<'a>(
        &'a self,
        key: &'a str,
        lineage: &'a Lineage,
    ) -> BoxFuture<'a, Result<(), EscrowFailure>>;
    /// Reads and writes of the escrow so far.
    fn ops(&self) -> u64;
}

/// Which account each pool and each capped hunt of a version uses (ADR 0012's
/// addendum): a pool whose codes only grew keeps its account; any other change
/// starts a new one, seeded with what customers hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Pool id → account key.
    pub pools: BTreeMap<String, String>,
    /// Capped hunt id → account key.
    pub caps: BTreeMap<String, String>,
}

/// A version's name in the escrow's keys: its number and a digest of its text, so
/// that a switch that failed and one retried with another file differ.
pub fn version_tag(version: u64, text: &str) -> String {
    format!("v{version}-{:08x}", crc32c::crc32c(text.as_bytes()))
}

/// The key under which a version's lineage is kept.
pub fn lineage_key(version: u64, text: &str) -> String {
    format!("version.{}", version_tag(version, text))
}

/// An account kept from the previous version whose pool grew, with the size it had:
/// codes appended to it may have been granted from other pools.
pub type Grown = (AccountRef, u64);

impl Lineage {
    /// A version's lineage from the previous one's: what keeps its account, the
    /// accounts to start (to be seeded before use), and the kept accounts that grew.
    /// `tag` names the version ([`version_tag`]).
    pub fn next(
        old: Option<(&Lineage, &Catalog)>,
        new: &Catalog,
        tag: &str,
    ) -> (Lineage, Vec<AccountRef>, Vec<Grown>) {
        let mut lineage = Lineage::default();
        let mut start = Vec::new();
        let mut grown = Vec::new();
        for pool in &new.pools {
            let kept = old.and_then(|(l, c)| {
                let before = c.pools.iter().find(|p| p.id == pool.id)?;
                let key = l.pools.get(&*pool.id)?;
                let grew_only = before.size() <= pool.size()
                    && (0..before.size()).all(|i| before.code(i) == pool.code(i));
                grew_only.then(|| (key.clone(), before.size()))
            });
            if let Some((key, size)) = &kept
                && *size < pool.size()
            {
                let account = AccountRef {
                    key: key.clone(),
                    id: pool.id.to_string(),
                    size: pool.size(),
                };
                grown.push((account, *size));
            }
            let key = kept.map(|(k, _)| k).unwrap_or_else(|| {
                let key = format!("code.{}.{tag}", pool.id);
                start.push(AccountRef {
                    key: key.clone(),
                    id: pool.id.to_string(),
                    size: pool.size(),
                });
                key
            });
            lineage.pools.insert(pool.id.to_string(), key);
        }
        for hunt in &new.hunts {
            let Some(cap) = hunt.max_winners else {
                continue;
            };
            let kept = old.and_then(|(l, c)| {
                let before = c.hunts.iter().find(|h| h.id == hunt.id)?;
                let key = l.caps.get(&*hunt.id)?;
                (before.max_winners? <= cap).then(|| key.clone())
            });
            let key = kept.unwrap_or_else(|| {
                let key = format!("cap.{}.{tag}", hunt.id);
                start.push(AccountRef {
                    key: key.clone(),
                    id: hunt.id.to_string(),
                    size: cap,
                });
                key
            });
            lineage.caps.insert(hunt.id.to_string(), key);
        }
        (lineage, start, grown)
    }

    /// What each partition's customers hold of a new account: `grants` per partition
    /// as (hunt, pool, code).
    pub fn seeds<'a>(
        account: &AccountRef,
        catalog: &Catalog,
        grants: impl Iterator<Item = (u32, Vec<(&'a str, &'a str, &'a str)>)>,
    ) -> Vec<(u32, Seed)> {
        let pool = catalog.pools.iter().find(|p| *p.id == *account.id);
        let is_cap = account.key.starts_with("cap.");
        grants
            .map(|(p, g)| {
                let seed = if is_cap {
                    Seed::Count(g.iter().filter(|(h, _, _)| *h == account.id).count() as u64)
                } else {
                    // A code counts whatever pool granted it: a pool renamed or
                    // reordered never hands a granted code out again.
                    Seed::Indexes(
                        g.iter()
                            .filter_map(|(_, _, c)| pool.and_then(|pool| pool.index_of(c)))
                            .collect(),
                    )
                };
                (p, seed)
            })
            .collect()
    }
}

/// A version's pools on a cluster: the account of each pool and capped hunt.
pub struct EscrowPools {
    pub backend: Arc<dyn EscrowBackend>,
    /// Per pool of the catalog.
    pub codes: Vec<AccountRef>,
    /// Per hunt of the catalog: its winner slots' account, if capped.
    pub caps: Vec<Option<AccountRef>>,
    /// Codes granted per pool, as this node knows them (its partitions' customers').
    granted: Vec<AtomicU64>,
    /// Grants made through the escrow, for the KV operations per grant.
    pub grants: Arc<AtomicU64>,
}

impl std::fmt::Debug for EscrowPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowPools")
            .field("codes", &self.codes)
            .finish()
    }
}

impl EscrowPools {
    pub fn new(
        backend: Arc<dyn EscrowBackend>,
        catalog: &Catalog,
        lineage: &Lineage,
        granted: &[u64],
        grants: Arc<AtomicU64>,
    ) -> Result<EscrowPools, String> {
        let codes = catalog
            .pools
            .iter()
            .map(|p| {
                let key = lineage
                    .pools
                    .get(&*p.id)
                    .ok_or_else(|| format!("no account for pool `{}`", p.id))?;
                Ok(AccountRef {
                    key: key.clone(),
                    id: p.id.to_string(),
                    size: p.size(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let caps = catalog
            .hunts
            .iter()
            .map(|h| {
                let Some(cap) = h.max_winners else {
                    return Ok(None);
                };
                let key = lineage
                    .caps
                    .get(&*h.id)
                    .ok_or_else(|| format!("no account for the winners of `{}`", h.id))?;
                Ok(Some(AccountRef {
                    key: key.clone(),
                    id: h.id.to_string(),
                    size: cap,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(EscrowPools {
            backend,
            codes,
            caps,
            granted: (0..catalog.pools.len())
                .map(|i| AtomicU64::new(granted.get(i).copied().unwrap_or(0)))
                .collect(),
            grants,
        })
    }

    /// Codes of `pool` granted to this node's partitions' customers.
    pub fn taken(&self, pool: usize) -> u64 {
        self.granted[pool].load(Ordering::Relaxed)
    }

    fn account(&self, key: &str) -> Option<&AccountRef> {
        self.codes
            .iter()
            .chain(self.caps.iter().flatten())
            .find(|a| a.key == key)
    }
}

/// One account's block in one partition.
#[derive(Debug, Default)]
struct Local {
    claimed: bool,
    /// Unused indexes, highest first (the lowest goes out first).
    free: Vec<u64>,
    /// Granted, not yet told to the escrow (codes).
    used: Vec<u64>,
    /// Granted, not yet told to the escrow (winner slots).
    used_count: u64,
    /// Found empty: deny at once until then.
    dry_until: Option<Instant>,
    /// Found spent (nothing left, nothing held anywhere): deny at once until the
    /// version changes.
    spent: bool,
}

impl Local {
    /// Holds `index` unused again, the list kept highest first.
    fn give(&mut self, index: u64) {
        let at = self.free.partition_point(|x| *x > index);
        self.free.insert(at, index);
    }
}

enum Take {
    Got(u64),
    Dry,
    Fetch,
}

/// What an allocation found missing: fetch it, then apply the event again.
#[derive(Debug, Clone)]
pub struct Need {
    pub account: AccountRef,
    pub slots: bool,
}

/// One partition's blocks of every account it has used.
#[derive(Debug, Default)]
pub struct Holdings {
    local: HashMap<String, Local>,
}

impl Holdings {
    fn take(&mut self, key: &str) -> Take {
        let Some(l) = self.local.get_mut(key) else {
            return Take::Fetch;
        };
        if l.claimed
            && let Some(i) = l.free.pop()
        {
            return Take::Got(i);
        }
        if l.spent {
            return Take::Dry;
        }
        match l.dry_until {
            Some(t) if t > Instant::now() => Take::Dry,
            _ => Take::Fetch,
        }
    }

    fn put_back(&mut self, key: &str, index: u64) {
        if let Some(l) = self.local.get_mut(key) {
            l.give(index);
        }
    }

    /// Whether the partition holds unused indexes of `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.local.get(key).is_some_and(|l| !l.free.is_empty())
    }

    /// Fetches what `need` names: claims the holding first if this owner has not yet
    /// (less what the partition's customers already hold: `granted` codes, or `wins`
    /// winner slots), then refills, telling the escrow what was used. The caller
    /// makes every grant so far durable first.
    pub async fn fetch(
        &mut self,
        backend: &dyn EscrowBackend,
        partition: u32,
        need: &Need,
        granted: impl FnOnce() -> (Vec<u64>, u64),
    ) -> Result<Fetched, EscrowFailure> {
        let key = &need.account.key;
        let l = self.local.entry(key.clone()).or_default();
        if !l.claimed {
            let claimed = backend.claim(&need.account, partition).await?;
            let (mut codes, wins) = granted();
            codes.sort_unstable();
            let held = claimed.spans.iter().flat_map(|&(s, e)| s..e);
            let mut free: Vec<u64> = Vec::new();
            // Held, but granted already (by an earlier owner, durable in the log):
            // used, and told so at the next refill or give-back.
            let mut used: Vec<u64> = Vec::new();
            for i in held {
                if !need.slots && codes.binary_search(&i).is_ok() {
                    used.push(i);
                } else {
                    free.push(i);
                }
            }
            if need.slots {
                // Wins the escrow was not told of take the lowest held slots.
                let unreported = (wins.saturating_sub(claimed.used) as usize).min(free.len());
                free.drain(..unreported);
                l.used_count += unreported as u64;
            }
            free.reverse();
            l.free = free;
            l.used.extend(used);
            l.claimed = true;
            if !l.free.is_empty() {
                return Ok(Fetched::Some);
            }
        }
        let used = std::mem::take(&mut l.used);
        let used_count = std::mem::take(&mut l.used_count);
        let told = if need.slots {
            UsedIdx::Count(used_count)
        } else {
            UsedIdx::Indexes(&used)
        };
        let r = match backend.refill(&need.account, partition, told).await {
            Ok(r) => r,
            Err(e) => {
                // Not told: still to tell next time.
                l.used = used;
                l.used_count = used_count;
                return Err(e);
            }
        };
        l.dry_until = None;
        if r.got.is_empty() && r.seeding {
            return Ok(Fetched::Seeding);
        }
        if r.got.is_empty() {
            l.spent = r.held_elsewhere == 0;
            return Ok(if l.spent {
                Fetched::Spent
            } else {
                Fetched::Wait
            });
        }
        for (s, e) in r.got {
            for i in s..e {
                l.give(i);
            }
        }
        Ok(Fetched::Some)
    }

    /// After a wait for others to give back found nothing: deny at once for a while.
    pub fn dry(&mut self, key: &str) {
        self.local.entry(key.to_string()).or_default().dry_until = Some(Instant::now() + DRY_FOR);
    }

    /// A new version is in force: accounts it grew may hand out again, so none is
    /// taken as spent or empty any longer.
    pub fn version_changed(&mut self) {
        for l in self.local.values_mut() {
            l.spent = false;
            l.dry_until = None;
        }
    }

    /// Gives every unused index of `key` back (another partition wants them), telling
    /// what was used. The caller makes every grant so far durable first.
    pub async fn give_back(
        &mut self,
        pools: &EscrowPools,
        partition: u32,
        key: &str,
    ) -> Result<(), EscrowFailure> {
        let Some(account) = pools.account(key) else {
            return Ok(());
        };
        let slots = account.key.starts_with("cap.");
        let Some(l) = self.local.get_mut(key).filter(|l| l.claimed) else {
            return Ok(());
        };
        if l.free.is_empty() {
            return Ok(());
        }
        let unused: Vec<Span> = l.free.iter().rev().map(|&i| (i, i + 1)).collect();
        let told = if slots {
            UsedIdx::Count(l.used_count)
        } else {
            UsedIdx::Indexes(&l.used)
        };
        pools
            .backend
            .give_back(account, partition, told, &unused)
            .await?;
        l.free.clear();
        l.used.clear();
        l.used_count = 0;
        Ok(())
    }
}

/// One grant of an event: its winner slot (account and index) if capped, its pool and
/// code index.
type Taken<'a> = (Option<(&'a str, u64)>, usize, u64);

/// The allocations of one event, from one partition's blocks. Commit to keep them;
/// dropped uncommitted they go back to the blocks.
pub struct EscrowAllocation<'a> {
    pools: &'a EscrowPools,
    holdings: &'a mut Holdings,
    /// (slot's account and index, pool, code index).
    taken: Vec<Taken<'a>>,
    need: Option<Need>,
}

impl<'a> EscrowAllocation<'a> {
    pub fn new(pools: &'a EscrowPools, holdings: &'a mut Holdings) -> EscrowAllocation<'a> {
        EscrowAllocation {
            pools,
            holdings,
            taken: Vec::new(),
            need: None,
        }
    }

    /// What must be fetched before the event can be applied again.
    pub fn need(&self) -> Option<&Need> {
        self.need.as_ref()
    }

    /// Keeps the grants: they are told to the escrow as used once durable.
    pub fn commit(mut self) {
        for (slot, pool, i) in std::mem::take(&mut self.taken) {
            if let Some((key, _)) = slot
                && let Some(l) = self.holdings.local.get_mut(key)
            {
                l.used_count += 1;
            }
            if let Some(l) = self.holdings.local.get_mut(&self.pools.codes[pool].key) {
                l.used.push(i);
            }
            self.pools.granted[pool].fetch_add(1, Ordering::Relaxed);
            self.pools.grants.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for EscrowAllocation<'_> {
    fn drop(&mut self) {
        for (slot, pool, i) in std::mem::take(&mut self.taken) {
            if let Some((key, s)) = slot {
                self.holdings.put_back(key, s);
            }
            self.holdings.put_back(&self.pools.codes[pool].key, i);
        }
    }
}

impl Allocator for EscrowAllocation<'_> {
    fn allocate(
        &mut self,
        catalog: &Catalog,
        hunt: usize,
        pool: usize,
    ) -> Result<String, DenyReason> {
        if self.need.is_some() {
            return Err(DenyReason::PoolEmpty);
        }
        let pools = self.pools;
        let slot = match &pools.caps[hunt] {
            Some(a) => match self.holdings.take(&a.key) {
                Take::Got(i) => Some((a.key.as_str(), i)),
                Take::Dry => return Err(DenyReason::WinnersCap),
                Take::Fetch => {
                    self.need = Some(Need {
                        account: a.clone(),
                        slots: true,
                    });
                    return Err(DenyReason::WinnersCap);
                }
            },
            None => None,
        };
        let account = &pools.codes[pool];
        let give_slot_back = |h: &mut Holdings| {
            if let Some((key, s)) = slot {
                h.put_back(key, s);
            }
        };
        match self.holdings.take(&account.key) {
            Take::Got(i) => match catalog.pools[pool].code(i) {
                Some(code) => {
                    self.taken.push((slot, pool, i));
                    Ok(code)
                }
                None => {
                    // An index past this version's pool: not ours to grant.
                    self.holdings.put_back(&account.key, i);
                    give_slot_back(self.holdings);
                    Err(DenyReason::PoolEmpty)
                }
            },
            Take::Dry => {
                give_slot_back(self.holdings);
                Err(DenyReason::PoolEmpty)
            }
            Take::Fetch => {
                give_slot_back(self.holdings);
                self.need = Some(Need {
                    account: account.clone(),
                    slots: false,
                });
                Err(DenyReason::PoolEmpty)
            }
        }
    }

    fn stalled(&self) -> bool {
        self.need.is_some()
    }
}

/// Grants per partition, as (hunt, pool, code).
pub type PartitionGrants<'a> = Vec<(u32, Vec<(&'a str, &'a str, &'a str)>)>;

fn granted_per_pool(catalog: &Catalog, grants: &PartitionGrants<'_>) -> Vec<u64> {
    catalog
        .pools
        .iter()
        .map(|p| {
            grants
                .iter()
                .flat_map(|(_, g)| g)
                .filter(|(_, pool, _)| *pool == &*p.id)
                .count() as u64
        })
        .collect()
}

/// Starts the accounts of `start`, each seeded with what every partition's customers
/// hold, then records the lineage: once it is recorded, every account it names is
/// seeded.
async fn start_accounts(
    backend: &dyn EscrowBackend,
    catalog: &Catalog,
    key: &str,
    lineage: &Lineage,
    start: &[AccountRef],
    grants: &PartitionGrants<'_>,
) -> Result<(), EscrowFailure> {
    for account in start {
        let seeds = Lineage::seeds(account, catalog, grants.iter().cloned());
        backend.seed(account, seeds).await?;
    }
    backend.set_lineage(key, lineage).await
}

/// Puts the escrow behind the version in force at a start or a takeover (this node
/// owns every partition, whose `grants` are given): the version's lineage as recorded
/// at its switch, or, if none was (a cluster's first version), every account started
/// and seeded.
pub async fn attach(
    backend: Arc<dyn EscrowBackend>,
    version: &mut crate::state::Version,
    grants: &PartitionGrants<'_>,
    counter: Arc<AtomicU64>,
) -> Result<(), String> {
    let key = lineage_key(version.record.version, &version.record.text);
    let catalog = version.catalog().clone();
    let lineage = match backend.lineage(&key).await.map_err(|e| e.to_string())? {
        Some(l) => l,
        None => {
            let tag = version_tag(version.record.version, &version.record.text);
            let (lineage, start, _) = Lineage::next(None, &catalog, &tag);
            start_accounts(&*backend, &catalog, &key, &lineage, &start, grants)
                .await
                .map_err(|e| format!("starting the pools' accounts: {e}"))?;
            lineage
        }
    };
    put_behind(backend, version, lineage, grants, counter)
}

/// `version`'s pools from the accounts `lineage` names; `grants` start their figures.
fn put_behind(
    backend: Arc<dyn EscrowBackend>,
    version: &mut crate::state::Version,
    lineage: Lineage,
    grants: &PartitionGrants<'_>,
    counter: Arc<AtomicU64>,
) -> Result<(), String> {
    let catalog = version.catalog().clone();
    let granted = granted_per_pool(&catalog, grants);
    version.escrow = Some(Arc::new(EscrowPools::new(
        backend, &catalog, &lineage, &granted, counter,
    )?));
    version.lineage = Some(lineage);
    Ok(())
}

/// Puts the escrow behind a version another node recorded (it put the version's
/// accounts in the bucket, with their lineage, before its record): refused if the
/// lineage is not there. `grants` (this node's partitions') start the pools' figures.
pub async fn attach_recorded(
    backend: Arc<dyn EscrowBackend>,
    version: &mut crate::state::Version,
    grants: &PartitionGrants<'_>,
    counter: Arc<AtomicU64>,
) -> Result<(), String> {
    let key = lineage_key(version.record.version, &version.record.text);
    let lineage = backend
        .lineage(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "version {}'s pools are not in the bucket",
                version.record.version
            )
        })?;
    put_behind(backend, version, lineage, grants, counter)
}

/// A new version's accounts at its switch (every partition paused, their `grants`
/// given): kept where its pools only grew, started and seeded otherwise, and the
/// lineage recorded before the version is.
pub async fn switch(
    old: &crate::state::Version,
    new: &mut crate::state::Version,
    grants: &PartitionGrants<'_>,
) -> Result<(), String> {
    let (Some(pools), Some(before)) = (&old.escrow, &old.lineage) else {
        return Ok(());
    };
    let catalog = new.catalog().clone();
    let key = lineage_key(new.record.version, &new.record.text);
    let tag = version_tag(new.record.version, &new.record.text);
    let (lineage, start, grown) = Lineage::next(Some((before, old.catalog())), &catalog, &tag);
    // Codes appended to a pool may have been granted from another pool (moved from
    // a pool this version drops, say): the account must hold them as used.
    for (account, size) in &grown {
        let seeds: Vec<(u32, Seed)> = Lineage::seeds(account, &catalog, grants.iter().cloned())
            .into_iter()
            .filter_map(|(p, seed)| match seed {
                Seed::Indexes(ix) => {
                    let ix: Vec<u64> = ix.into_iter().filter(|i| i >= size).collect();
                    (!ix.is_empty()).then_some((p, Seed::Indexes(ix)))
                }
                Seed::Count(_) => None,
            })
            .collect();
        if !seeds.is_empty() {
            pools
                .backend
                .seed(account, seeds)
                .await
                .map_err(|e| format!("seeding the grown pool {}: {e}", account.id))?;
        }
    }
    start_accounts(&*pools.backend, &catalog, &key, &lineage, &start, grants)
        .await
        .map_err(|e| format!("starting the pools' accounts of the new version: {e}"))?;
    let granted = granted_per_pool(&catalog, grants);
    new.escrow = Some(Arc::new(EscrowPools::new(
        pools.backend.clone(),
        &catalog,
        &lineage,
        &granted,
        pools.grants.clone(),
    )?));
    new.lineage = Some(lineage);
    Ok(())
}

/// A new version's accounts for a switch by markers (ADR 0015), before its record:
/// kept where its pools only grew, started otherwise. Every started or grown account
/// waits for each partition's seed at its marker ([`seed_at_marker`]); the lineage is
/// recorded before the version is. `grants` (per partition, as counted for the plan)
/// only start the pools' figures.
pub async fn prepare(
    old: &crate::state::Version,
    new: &mut crate::state::Version,
    grants: &PartitionGrants<'_>,
) -> Result<(), String> {
    let (Some(pools), Some(before)) = (&old.escrow, &old.lineage) else {
        return Ok(());
    };
    let catalog = new.catalog().clone();
    let key = lineage_key(new.record.version, &new.record.text);
    let tag = version_tag(new.record.version, &new.record.text);
    let (lineage, start, grown) = Lineage::next(Some((before, old.catalog())), &catalog, &tag);
    let n = new.record.version;
    for account in &start {
        pools
            .backend
            .await_seeds(account, &tag, n, 0)
            .await
            .map_err(|e| format!("starting the account {}: {e}", account.key))?;
    }
    for (account, size) in &grown {
        pools
            .backend
            .await_seeds(account, &tag, n, *size)
            .await
            .map_err(|e| format!("growing the account {}: {e}", account.key))?;
    }
    pools
        .backend
        .set_lineage(&key, &lineage)
        .await
        .map_err(|e| format!("recording the lineage of version {n}: {e}"))?;
    let granted = granted_per_pool(&catalog, grants);
    new.escrow = Some(Arc::new(EscrowPools::new(
        pools.backend.clone(),
        &catalog,
        &lineage,
        &granted,
        pools.grants.clone(),
    )?));
    new.lineage = Some(lineage);
    Ok(())
}

/// What `partition` seeds at its marker, moving from `old` to `new`: every account of
/// `new` that `old` does not use gets what its customers hold (`grants`, as (hunt,
/// pool, code)); a grown one gets the codes appended since `old` that they hold (from
/// other pools). Measured against the version the partition leaves, whatever versions
/// came between, so it covers every wait they asked for.
pub async fn seed_at_marker(
    old: &crate::state::Version,
    new: &crate::state::Version,
    partition: u32,
    grants: Vec<(&str, &str, &str)>,
) -> Result<(), EscrowFailure> {
    let (Some(pools), Some(_)) = (&new.escrow, &new.lineage) else {
        return Ok(());
    };
    let before = match &old.lineage {
        Some(l) => l.clone(),
        // A version rebuilt from the log (a partition behind at a start): its lineage
        // as recorded at its switch; none recorded is a cluster's first version, whose
        // accounts this one may still use.
        None => pools
            .backend
            .lineage(&lineage_key(old.record.version, &old.record.text))
            .await?
            .unwrap_or_default(),
    };
    let catalog = new.catalog();
    let accounts = pools.codes.iter().chain(pools.caps.iter().flatten());
    for account in accounts {
        let kept = before.pools.get(&account.id) == Some(&account.key)
            || before.caps.get(&account.id) == Some(&account.key);
        let seed = if !kept {
            let mut seeds = Lineage::seeds(
                account,
                catalog,
                std::iter::once((partition, grants.clone())),
            );
            match seeds.pop() {
                Some((_, seed)) => seed,
                None => continue,
            }
        } else {
            let was = old
                .catalog()
                .pools
                .iter()
                .find(|p| *p.id == *account.id)
                .map(|p| p.size());
            match was {
                Some(size) if size < account.size && !account.key.starts_with("cap.") => {
                    let seeds = Lineage::seeds(
                        account,
                        catalog,
                        std::iter::once((partition, grants.clone())),
                    );
                    let ix = seeds
                        .into_iter()
                        .flat_map(|(_, s)| match s {
                            Seed::Indexes(ix) => ix,
                            Seed::Count(_) => Vec::new(),
                        })
                        .filter(|i| *i >= size)
                        .collect();
                    Seed::Indexes(ix)
                }
                _ => continue,
            }
        };
        pools
            .backend
            .seed_at_marker(account, new.record.version, partition, seed)
            .await?;
    }
    Ok(())
}

/// `partition`'s marker of `new` is durable: every account of `new` stops waiting
/// for it (an account that does not wait costs one read).
pub async fn marked(new: &crate::state::Version, partition: u32) -> Result<(), EscrowFailure> {
    let Some(pools) = &new.escrow else {
        return Ok(());
    };
    for account in pools.codes.iter().chain(pools.caps.iter().flatten()) {
        pools
            .backend
            .marked(account, new.record.version, partition)
            .await?;
    }
    Ok(())
}
