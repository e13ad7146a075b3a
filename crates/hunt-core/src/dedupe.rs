//! The idempotency window of one partition: which `(user, id)` were applied, and the
//! answer they got, for `window` after their receipt.
//!
//! Bounded: when it holds `entries_max` entries that have not expired, a new one is
//! refused ([`Full`]) rather than an old one forgotten — forgetting would let a
//! duplicate inside the window be applied twice. The server turns that refusal into a
//! 503 with `Retry-After`. Entries expire in receipt order (a partition receives in
//! order), so expiry is a walk from the front.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

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

/// Remembered answers by `(user, id)`, for `window` after receipt.
#[derive(Debug, Clone)]
pub struct DedupeWindow<V> {
    window: Duration,
    entries_max: usize,
    secret: [u64; 2],
    map: HashMap<PairKey, (Timestamp, V), foldhash::fast::RandomState>,
    /// Keys in receipt order (their times are in `map`).
    order: VecDeque<PairKey>,
}

impl<V> DedupeWindow<V> {
    /// A window whose identities are keyed by `secret`. Every window whose entries may
    /// be moved into another must share it (a snapshot keeps it).
    pub fn new(window: Duration, entries_max: usize, secret: [u64; 2]) -> DedupeWindow<V> {
        DedupeWindow {
            window,
            entries_max: entries_max.max(1),
            secret,
            map: HashMap::default(),
            order: VecDeque::new(),
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
        self.map
            .get(&k)
            .filter(|(at, _)| now.0 - at.0 <= self.window.0)
            .map(|(_, v)| v)
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
        if !self.map.contains_key(&k) && self.map.len() >= self.entries_max {
            return Err(Full(self.map.len()));
        }
        if self.map.insert(k, (at, value)).is_none() {
            self.order.push_back(k);
        }
        Ok(())
    }

    /// Forgets entries received more than `window` before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(k) = self.order.front() {
            match self.map.get(k) {
                Some((at, _)) if now.0 - at.0 <= self.window.0 => break,
                _ => {
                    if let Some(k) = self.order.pop_front() {
                        self.map.remove(&k);
                    }
                }
            }
        }
        // After a peak, give the memory back (a quarter full is the mark, so this is
        // amortized).
        if self.order.capacity() > 1024 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// Whether one more entry received at `now` would be taken (expiring first).
    pub fn has_room(&mut self, now: Timestamp) -> bool {
        self.expire(now);
        self.map.len() < self.entries_max
    }

    /// Every entry, in receipt order: `(received, identity, answer)`. For snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (Timestamp, PairKey, &V)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|(at, v)| (*at, *k, v)))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
}
