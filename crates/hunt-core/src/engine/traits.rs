//! A customer's traits: kept sorted by name, merged from each event's `traits`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// The most traits kept per customer; new traits past it are not stored.
pub const TRAITS_MAX: usize = 64;

/// A customer's traits. Customers have few, so they are a vector sorted by name: a JSON
/// map allocates a node of eleven slots for even one trait (about 640 bytes), which was
/// a quarter of a customer's memory. Serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traits(Vec<(Box<str>, Json)>);

impl Traits {
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets a trait (replacing its value).
    pub fn insert(&mut self, name: &str, value: Json) {
        match self.find(name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name.into(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Json> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// The traits in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> Map<String, Json> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl From<Map<String, Json>> for Traits {
    fn from(m: Map<String, Json>) -> Traits {
        // A JSON map iterates in key order: already sorted.
        Traits(
            m.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
        )
    }
}

impl Serialize for Traits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A JSON object, as it is serialized.
impl schemars::JsonSchema for Traits {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Traits".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

impl<'de> Deserialize<'de> for Traits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Traits, D::Error> {
        Map::<String, Json>::deserialize(d).map(Traits::from)
    }
}

/// Merges event traits into a profile: `null` removes a trait; past [`TRAITS_MAX`]
/// new traits are not stored.
pub fn merge_traits(profile: &mut Traits, traits: &Map<String, Json>) {
    for (k, v) in traits {
        if v.is_null() {
            profile.remove(k);
        } else if let Some(old) = profile.get(k) {
            if old != v {
                profile.insert(k, v.clone());
            }
        } else if profile.len() < TRAITS_MAX {
            profile.insert(k, v.clone());
        }
    }
}
