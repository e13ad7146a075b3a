//! A partition's customers, held so that a snapshot can take them without stopping the
//! partition for long: each customer's state is behind its own `Arc`, so a copy of the
//! map costs two pointers per customer, and a customer changed while a copy holds it is
//! copied then, alone (copy-on-write). The map is sharded by the customer's route hash,
//! so a growing map rehashes a sixteenth of the customers at a time, not all of them.

use std::collections::HashMap;
use std::sync::Arc;

use hunt_core::dedupe::route_hash;
use hunt_core::engine::UserState;

const SHARDS: usize = 16;

type Shard = HashMap<Arc<str>, Arc<UserState>, foldhash::fast::RandomState>;

/// Customers by id. Cloning it is the snapshot's copy: it shares every customer.
#[derive(Clone)]
pub struct Users {
    shards: Box<[Shard]>,
    len: usize,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
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

    /// A customer to change: copied first if a snapshot still holds it.
    pub fn get_mut(&mut self, user: &str) -> Option<&mut UserState> {
        self.shards[shard_of(user)].get_mut(user).map(Arc::make_mut)
    }

    /// A customer to change, created empty if new. For a customer [`Users::get_mut`]
    /// did not find: it makes the key, which a known customer does not need.
    pub fn insert_default(&mut self, user: &str) -> &mut UserState {
        use std::collections::hash_map::Entry;
        let state = match self.shards[shard_of(user)].entry(Arc::from(user)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.len += 1;
                v.insert(Arc::default())
            }
        };
        Arc::make_mut(state)
    }

    pub fn insert(&mut self, user: &str, state: UserState) {
        if self.shards[shard_of(user)]
            .insert(Arc::from(user), Arc::new(state))
            .is_none()
        {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, user: &str) {
        if self.shards[shard_of(user)].remove(user).is_some() {
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
}
