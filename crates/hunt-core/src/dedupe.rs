//! The idempotency window of one partition: which `(user, id)` were applied, and the
//! answer they got, for `window` after their receipt.
//!
//! Bounded: when it holds `entries_max` entries that have not expired, a new one is
//! refused ([`Full`]) rather than an old one forgotten — forgetting would let a
//! duplicate inside the window be applied twice. The server turns that refusal into a
//! 503 with `Retry-After`. Entries expire in receipt order (a partition receives in
//! order), so expiry is a walk from the front.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::chunked::Chunked;
use crate::time::{Duration, Timestamp};

/// Default window: 24 hours.
pub const WINDOW_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// The window is full of entries that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dedupe window holds {0} unexpired events; retry later")]
pub struct Full(pub usize);

/// Where a customer's events go: a fixed hash of the user, the same on every run and
/// machine. The partition is this modulo the partition count.
pub fn route_hash(user: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7472_6561_7375_7265).hash_one(user)
}

/// A pair's identity in the window: the user's [`route_hash`] (so that an entry can be
/// moved to the partition of another partition count without its user) and a keyed
/// SipHash-1-3 of the pair under a secret key. 16 bytes instead of the two strings:
/// distinct pairs share an identity only if both halves collide, which no one who does
/// not know the key can arrange and which happens by chance with odds of about one in
/// 2⁶⁴ for two events of one customer.
pub type PairKey = (u64, u64);

/// Shards of the identity map. Each grows on its own, so a doubling rehashes a
/// sixty-fourth of the window, not all of it at once (identities are uniform, so the
/// shards fill evenly but double at scattered moments).
const SHARDS: usize = 64;

/// Remembered answers by `(user, id)`, for `window` after receipt.
///
/// The entries are kept in receipt order in a [`Chunked`] sequence, which a snapshot
/// copies by sharing its chunks ([`DedupeWindow::copy`]); the identity map only points
/// into it by sequence number.
#[derive(Debug)]
pub struct DedupeWindow<V> {
    window: Duration,
    entries_max: usize,
    secret: [u64; 2],
    /// Identity → sequence number of its entry, sharded by the identity's high bits.
    shards: Box<[HashMap<PairKey, u64, foldhash::fast::RandomState>]>,
    /// Identities held (the shards' lengths summed).
    len: usize,
    /// Entries in receipt order. An entry whose identity was inserted again later is
    /// stale: its identity points elsewhere.
    entries: Chunked<Entry<V>>,
}

/// One remembered answer.
pub type Entry<V> = (PairKey, Timestamp, V);

/// A window's entries as a snapshot takes them: shared, not copied.
#[derive(Debug, Clone)]
pub struct DedupeCopy<V> {
    secret: [u64; 2],
    entries: Chunked<Entry<V>>,
}

impl<V> DedupeCopy<V> {
    pub fn secret(&self) -> [u64; 2] {
        self.secret
    }

    /// Every entry, in receipt order: `(received, identity, answer)`. An identity may
    /// come more than once; the last is the one in force (inserting them in this order
    /// into a window gives the window they came from).
    pub fn entries(&self) -> impl Iterator<Item = (Timestamp, PairKey, &V)> {
        self.entries.values().map(|(k, at, v)| (*at, *k, v))
    }
}

fn shard_of(k: &PairKey) -> usize {
    (k.1 >> (64 - SHARDS.trailing_zeros())) as usize
}

impl<V: Clone> DedupeWindow<V> {
    /// A window whose identities are keyed by `secret`. Every window whose entries may
    /// be moved into another must share it (a snapshot keeps it).
    pub fn new(window: Duration, entries_max: usize, secret: [u64; 2]) -> DedupeWindow<V> {
        DedupeWindow {
            window,
            entries_max: entries_max.max(1),
            secret,
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            len: 0,
            entries: Chunked::default(),
        }
    }

    pub fn secret(&self) -> [u64; 2] {
        self.secret
    }

    /// The identity of `(user, id)` in this window.
    pub fn key(&self, user: &str, id: &str) -> PairKey {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.secret[0], self.secret[1]);
        // The user's length first, so that no two pairs hash the same bytes.
        h.write_usize(user.len());
        h.write(user.as_bytes());
        h.write(id.as_bytes());
        (route_hash(user), h.finish())
    }

    /// The answer first given to `(user, id)`, if it was received within the window.
    pub fn get(&self, user: &str, id: &str, now: Timestamp) -> Option<&V> {
        self.get_key(self.key(user, id), now)
    }

    /// [`get`](Self::get) by identity, as [`key`](Self::key) gave it.
    pub fn get_key(&self, k: PairKey, now: Timestamp) -> Option<&V> {
        let seq = *self.shards[shard_of(&k)].get(&k)?;
        self.entries
            .get(seq)
            .filter(|(_, at, _)| now.0 - at.0 <= self.window.0)
            .map(|(_, _, v)| v)
    }

    /// Remembers the answer to `(user, id)` received at `at` (not earlier than the
    /// previous insert's). Expires what fell out of the window first.
    pub fn insert(&mut self, user: &str, id: &str, at: Timestamp, value: V) -> Result<(), Full> {
        let k = self.key(user, id);
        self.insert_key(k, at, value)
    }

    /// [`insert`](Self::insert) by identity, as [`entries`](Self::entries) gave it.
    pub fn insert_key(&mut self, k: PairKey, at: Timestamp, value: V) -> Result<(), Full> {
        self.expire(at);
        let shard = shard_of(&k);
        if self.len >= self.entries_max && !self.shards[shard].contains_key(&k) {
            return Err(Full(self.len));
        }
        let seq = self.entries.push((k, at, value));
        if self.shards[shard].insert(k, seq).is_none() {
            self.len += 1;
        }
        Ok(())
    }

    /// Forgets entries received more than `window` before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some((seq, (k, at, _))) = self.entries.front() {
            if now.0 - at.0 <= self.window.0 {
                break;
            }
            let (k, shard) = (*k, shard_of(k));
            // A stale entry's identity points to a later one, which stays.
            if self.shards[shard].get(&k) == Some(&seq) {
                self.shards[shard].remove(&k);
                self.len -= 1;
            }
            if self.entries.pop_front() {
                // A chunk went: after a peak, give the shards' memory back (a quarter
                // full is the mark, so this is amortized; each shard is small).
                for s in self.shards.iter_mut() {
                    if s.capacity() > 1024 && s.len() < s.capacity() / 4 {
                        s.shrink_to(s.len() * 2);
                    }
                }
            }
        }
    }

    /// Whether one more entry received at `now` would be taken (expiring first).
    pub fn has_room(&mut self, now: Timestamp) -> bool {
        self.expire(now);
        self.len < self.entries_max
    }

    /// Every entry in force, in receipt order: `(received, identity, answer)`.
    pub fn entries(&self) -> impl Iterator<Item = (Timestamp, PairKey, &V)> {
        self.entries
            .iter()
            .filter(|(seq, (k, _, _))| self.shards[shard_of(k)].get(k) == Some(seq))
            .map(|(_, (k, at, v))| (*at, *k, v))
    }

    /// Room for `more` entries, spread over the shards (identities are uniform), so
    /// that loading a window rehashes nothing.
    pub fn reserve(&mut self, more: usize) {
        let each = more.div_ceil(SHARDS) + more.div_ceil(SHARDS * 8);
        for s in self.shards.iter_mut() {
            s.reserve(each);
        }
    }

    /// The entries, shared with the window rather than copied: for a snapshot, taken
    /// in time proportional to the window's chunks.
    pub fn copy(&self) -> DedupeCopy<V> {
        DedupeCopy {
            secret: self.secret,
            entries: self.entries.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_repeat_the_first_answer() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10, [1, 2]);
        w.insert("u", "e1", Timestamp(0), "first").unwrap();
        assert_eq!(w.get("u", "e1", Timestamp(59_000)), Some(&"first"));
        assert_eq!(w.get("u", "e2", Timestamp(1)), None);
        assert_eq!(
            w.get("other", "e1", Timestamp(1)),
            None,
            "ids are per customer"
        );
        // Outside the window: not a duplicate any more.
        assert_eq!(w.get("u", "e1", Timestamp(61_000)), None);
        w.insert("u", "e9", Timestamp(61_000), "later").unwrap();
        assert_eq!(w.len(), 1, "expired entries are forgotten");
    }

    #[test]
    fn pairs_never_collide() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10, [1, 2]);
        w.insert("ab", "c", Timestamp(0), 1).unwrap();
        w.insert("a", "bc", Timestamp(0), 2).unwrap();
        assert_eq!(
            (
                w.get("ab", "c", Timestamp(0)),
                w.get("a", "bc", Timestamp(0))
            ),
            (Some(&1), Some(&2))
        );
    }

    #[test]
    fn entries_move_into_another_window_with_the_same_secret() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10, [1, 2]);
        w.insert("a:b", "c", Timestamp(1), 1).unwrap();
        w.insert("ü", "", Timestamp(2), 2).unwrap();
        let got: Vec<_> = w.entries().map(|(t, k, v)| (t.0, k, *v)).collect();
        assert_eq!(
            got.iter().map(|e| (e.0, e.1.0, e.2)).collect::<Vec<_>>(),
            vec![(1, route_hash("a:b"), 1), (2, route_hash("ü"), 2)],
            "in receipt order, routed by user"
        );
        let mut moved = DedupeWindow::new(Duration::from_secs(60), 10, w.secret());
        for (t, k, v) in got {
            moved.insert_key(k, Timestamp(t), v).unwrap();
        }
        assert_eq!(moved.get("a:b", "c", Timestamp(3)), Some(&1));
        assert_eq!(moved.get("ü", "", Timestamp(3)), Some(&2));
        // Under another secret the same pairs are other identities.
        let other: DedupeWindow<i32> = DedupeWindow::new(Duration::from_secs(60), 10, [3, 4]);
        assert_ne!(other.key("a:b", "c"), w.key("a:b", "c"));
        assert_eq!(other.key("a:b", "c").0, w.key("a:b", "c").0);
    }

    #[test]
    fn expired_entries_free_their_order() {
        let mut w = DedupeWindow::new(Duration::from_secs(1), 100_000, [1, 2]);
        for i in 0..10_000 {
            w.insert("u", &i.to_string(), Timestamp(0), ()).unwrap();
        }
        w.insert("u", "late", Timestamp(5_000), ()).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w.get("u", "0", Timestamp(5_000)).is_none());
        assert!(w.get("u", "late", Timestamp(5_000)).is_some());
        assert_eq!(w.entries().count(), 1);
    }

    #[test]
    fn a_full_window_refuses_rather_than_forgets() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 2, [1, 2]);
        w.insert("u", "1", Timestamp(0), ()).unwrap();
        w.insert("u", "2", Timestamp(1), ()).unwrap();
        assert_eq!(w.insert("u", "3", Timestamp(2), ()), Err(Full(2)));
        assert!(
            w.get("u", "1", Timestamp(2)).is_some(),
            "nothing inside the window was forgotten"
        );
        // Once the oldest expire, there is room again.
        w.insert("u", "3", Timestamp(60_001), ()).unwrap();
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_copy_is_the_window_as_it_was_when_taken() {
        let mut w = DedupeWindow::new(Duration::from_secs(1), 100_000, [1, 2]);
        for i in 0..5_000 {
            w.insert("u", &i.to_string(), Timestamp(0), i).unwrap();
        }
        let copy = w.copy();
        // The window goes on: everything expires, new entries come.
        w.insert("u", "late", Timestamp(5_000), -1).unwrap();
        assert_eq!(w.len(), 1);
        let kept: Vec<i32> = copy.entries().map(|(_, _, v)| *v).collect();
        assert_eq!(kept, (0..5_000).collect::<Vec<_>>());
        // Moved into a window with the same secret, it answers as the original did.
        let mut back = DedupeWindow::new(Duration::from_secs(1), 100_000, copy.secret());
        for (at, k, v) in copy.entries() {
            back.insert_key(k, at, *v).unwrap();
        }
        assert_eq!(back.get("u", "4999", Timestamp(1)), Some(&4999));
        assert_eq!(back.len(), 5_000);
    }

    #[test]
    fn an_identity_inserted_again_keeps_its_last_entry() {
        let mut w = DedupeWindow::new(Duration::from_secs(10), 10, [1, 2]);
        w.insert("u", "a", Timestamp(0), 1).unwrap();
        w.insert("u", "b", Timestamp(5_000), 2).unwrap();
        w.insert("u", "a", Timestamp(6_000), 3).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.get("u", "a", Timestamp(6_000)), Some(&3));
        // The first entry of `a` expires; its later one stays.
        w.expire(Timestamp(10_500));
        assert_eq!(w.get("u", "a", Timestamp(10_500)), Some(&3));
        assert_eq!(w.len(), 2);
        let live: Vec<i32> = w.entries().map(|(_, _, v)| *v).collect();
        assert_eq!(live, vec![2, 3]);
        w.expire(Timestamp(16_001));
        assert!(w.is_empty());
    }
}
