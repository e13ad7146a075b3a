//! A partition's customers, held so that a snapshot can take them without stopping the
//! partition for long. Copy-on-write at two levels:
//!
//! - the map is 256 shards by the customer's route hash, each behind an `Arc`: a copy of
//!   the whole map costs 256 pointers, whatever the customers. The first change to a
//!   shard that a copy still holds copies that shard's map (a 256th of the customers,
//!   two pointers each), so the cost of a copy is spread over the events that follow it
//!   instead of paid at once;
//! - each customer's state is behind its own `Arc`, so a copied shard shares its
//!   customers, and a customer changed while a copy holds it is copied then, alone.
//!
//! A growing map rehashes one shard at a time, a 256th of the customers.

use std::collections::HashMap;
use std::sync::Arc;

use hunt_core::dedupe::route_hash;
use hunt_core::engine::UserState;

const SHARDS: usize = 256;

type Shard = HashMap<Arc<str>, Arc<UserState>, foldhash::fast::RandomState>;

/// Customers by id. Cloning it is the snapshot's copy: it shares every shard.
#[derive(Clone)]
pub struct Users {
    shards: Box<[Arc<Shard>]>,
    len: usize,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }
}

fn shard_of(user: &str) -> usize {
    // The high bits: the partition is taken from the low ones.
    (route_hash(user) >> (64 - SHARDS.trailing_zeros())) as usize
}

impl Users {
    pub fn get(&self, user: &str) -> Option<&UserState> {
        self.shards[shard_of(user)].get(user).map(|s| &**s)
    }

    /// A customer to change: its shard and itself copied first if a snapshot still
    /// holds them.
    pub fn get_mut(&mut self, user: &str) -> Option<&mut UserState> {
        self.shard_holding(user)?.get_mut(user).map(Arc::make_mut)
    }

    /// The shard of `user` to change, copied first if a snapshot still holds it.
    fn shard_mut(&mut self, user: &str) -> &mut Shard {
        Arc::make_mut(&mut self.shards[shard_of(user)])
    }

    /// The shard of `user` to change, if it holds `user`: a shard a snapshot holds is
    /// copied only to change a customer it has.
    fn shard_holding(&mut self, user: &str) -> Option<&mut Shard> {
        let i = shard_of(user);
        if Arc::get_mut(&mut self.shards[i]).is_none() && !self.shards[i].contains_key(user) {
            return None;
        }
        Some(Arc::make_mut(&mut self.shards[i]))
    }

    /// A customer to change, created empty if new. For a customer [`Users::get_mut`]
    /// did not find: it makes the key, which a known customer does not need.
    pub fn insert_default(&mut self, user: &str) -> &mut UserState {
        use std::collections::hash_map::Entry;
        let shard = Arc::make_mut(&mut self.shards[shard_of(user)]);
        let state = match shard.entry(Arc::from(user)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.len += 1;
                v.insert(Arc::default())
            }
        };
        Arc::make_mut(state)
    }

    pub fn insert(&mut self, user: &str, state: UserState) {
        if self
            .shard_mut(user)
            .insert(Arc::from(user), Arc::new(state))
            .is_none()
        {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, user: &str) {
        if self
            .shard_holding(user)
            .and_then(|s| s.remove(user))
            .is_some()
        {
            self.len -= 1;
        }
    }

    /// Every customer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &UserState)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (&**k, &**v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &UserState> {
        self.iter().map(|(_, v)| v)
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
    fn a_copy_keeps_each_customer_as_it_was() {
        let mut users = Users::default();
        for i in 0..100 {
            let u = format!("u{i}");
            assert!(users.get_mut(&u).is_none());
            let s = users.insert_default(&u);
            s.traits.insert("n", serde_json::json!(i));
        }
        let copy = users.clone();
        let s = users.get_mut("u7").expect("known");
        s.traits.insert("n", serde_json::json!("changed"));
        users.remove("u8");
        users.insert("v", UserState::default());
        assert_eq!(
            copy.get("u7").unwrap().traits.get("n"),
            Some(&serde_json::json!(7))
        );
        assert_eq!(
            users.get("u7").unwrap().traits.get("n"),
            Some(&serde_json::json!("changed"))
        );
        assert!(copy.get("u8").is_some() && users.get("u8").is_none());
        assert_eq!((copy.len(), users.len()), (100, 100));
        assert_eq!(users.iter().count(), 100);
        // Unchanged customers are shared, not copied.
        let shard = &users.shards[shard_of("u9")];
        let copied = &copy.shards[shard_of("u9")];
        assert!(Arc::ptr_eq(&shard["u9"], &copied["u9"]));
        assert!(!Arc::ptr_eq(
            &users.shards[shard_of("u7")]["u7"],
            &copy.shards[shard_of("u7")]["u7"]
        ));
    }

    #[test]
    fn a_copy_shares_every_shard_until_one_changes() {
        let mut users = Users::default();
        for i in 0..2000 {
            users.insert_default(&format!("u{i}"));
        }
        let copy = users.clone();
        let shared = |a: &Users, b: &Users| {
            (0..SHARDS)
                .filter(|&i| Arc::ptr_eq(&a.shards[i], &b.shards[i]))
                .count()
        };
        assert_eq!(shared(&users, &copy), SHARDS);
        // Looking for, or removing, a customer a shard does not have copies nothing.
        assert!(users.get_mut("nobody").is_none());
        users.remove("nobody");
        assert_eq!(shared(&users, &copy), SHARDS);
        // A change copies its own shard only, and the shard's other customers are shared.
        users
            .get_mut("u5")
            .expect("known")
            .traits
            .insert("n", serde_json::json!(1));
        assert_eq!(shared(&users, &copy), SHARDS - 1);
        let i = shard_of("u5");
        let other = users.shards[i]
            .keys()
            .find(|k| &***k != "u5")
            .expect("2000 customers over 256 shards")
            .clone();
        assert!(Arc::ptr_eq(
            &users.shards[i][&other],
            &copy.shards[i][&other]
        ));
        assert!(copy.get("u5").unwrap().traits.get("n").is_none());
        // A second change to the same shard copies nothing more.
        users.get_mut(&other).expect("known");
        assert_eq!(shared(&users, &copy), SHARDS - 1);
        users.insert_default("u-new");
        assert!(shared(&users, &copy) >= SHARDS - 2);
        assert_eq!((users.len(), copy.len()), (2001, 2000));
    }
}
