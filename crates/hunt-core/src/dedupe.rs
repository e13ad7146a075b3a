//! The idempotency window of one partition: which `(user, id)` were applied, and the
//! answer they got, for `window` after their receipt.
//!
//! Bounded: when it holds `entries_max` entries that have not expired, a new one is
//! refused ([`Full`]) rather than an old one forgotten — forgetting would let a
//! duplicate inside the window be applied twice. The server turns that refusal into a
//! 503 with `Retry-After`. Entries expire in receipt order (a partition receives in
//! order), so expiry is a walk from the front.

use std::collections::{HashMap, VecDeque};

use crate::time::{Duration, Timestamp};

/// Default window: 24 hours.
pub const WINDOW_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// The window is full of entries that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dedupe window holds {0} unexpired events; retry later")]
pub struct Full(pub usize);

/// Remembered answers by `(user, id)`, for `window` after receipt.
#[derive(Debug, Clone)]
pub struct DedupeWindow<V> {
    window: Duration,
    entries_max: usize,
    map: HashMap<Box<str>, (Timestamp, V), foldhash::fast::RandomState>,
    /// Keys in receipt order, with their receipt time.
    order: VecDeque<(Timestamp, Box<str>)>,
}

/// One key for a pair: the user's length first, so no two pairs share a key. Built by
/// hand: this runs twice per event, and the formatting machinery was measurable.
fn key(user: &str, id: &str) -> Box<str> {
    let mut k = String::with_capacity(user.len() + id.len() + 4);
    let mut n = user.len();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        k.push(*d as char);
    }
    k.push(':');
    k.push_str(user);
    k.push_str(id);
    k.into_boxed_str()
}

/// The pair a key was made from.
fn split_key(k: &str) -> Option<(&str, &str)> {
    let (len, rest) = k.split_once(':')?;
    let len: usize = len.parse().ok()?;
    (rest.is_char_boundary(len) && len <= rest.len()).then(|| rest.split_at(len))
}

impl<V> DedupeWindow<V> {
    pub fn new(window: Duration, entries_max: usize) -> DedupeWindow<V> {
        DedupeWindow {
            window,
            entries_max: entries_max.max(1),
            map: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// The answer first given to `(user, id)`, if it was received within the window.
    pub fn get(&self, user: &str, id: &str, now: Timestamp) -> Option<&V> {
        self.map
            .get(&key(user, id))
            .filter(|(at, _)| now.0 - at.0 <= self.window.0)
            .map(|(_, v)| v)
    }

    /// Remembers the answer to `(user, id)` received at `at` (not earlier than the
    /// previous insert's). Expires what fell out of the window first.
    pub fn insert(&mut self, user: &str, id: &str, at: Timestamp, value: V) -> Result<(), Full> {
        self.expire(at);
        let k = key(user, id);
        if !self.map.contains_key(&k) && self.map.len() >= self.entries_max {
            return Err(Full(self.map.len()));
        }
        if self.map.insert(k.clone(), (at, value)).is_none() {
            self.order.push_back((at, k));
        }
        Ok(())
    }

    /// Forgets entries received more than `window` before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if now.0 - at.0 <= self.window.0 {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
    }

    /// Whether one more entry received at `now` would be taken (expiring first).
    pub fn has_room(&mut self, now: Timestamp) -> bool {
        self.expire(now);
        self.map.len() < self.entries_max
    }

    /// Every entry, in receipt order: `(received, user, id, answer)`. For snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (Timestamp, &str, &str, &V)> {
        self.order.iter().filter_map(|(at, k)| {
            let (user, id) = split_key(k)?;
            let (_, v) = self.map.get(k)?;
            Some((*at, user, id, v))
        })
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
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10);
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
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10);
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
    fn entries_give_back_each_pair() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 10);
        w.insert("a:b", "c", Timestamp(1), 1).unwrap();
        w.insert("ü", "", Timestamp(2), 2).unwrap();
        let got: Vec<_> = w.entries().map(|(t, u, i, v)| (t.0, u, i, *v)).collect();
        assert_eq!(got, vec![(1, "a:b", "c", 1), (2, "ü", "", 2)]);
        assert!(w.has_room(Timestamp(2)));
    }

    #[test]
    fn a_full_window_refuses_rather_than_forgets() {
        let mut w = DedupeWindow::new(Duration::from_secs(60), 2);
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
