//! The index from event type to the steps an event can reveal: the steps whose condition
//! requires `event.data.F == "v"` are looked up by the event's value of F.

use super::FixedMap;
use crate::cond::Condition;

/// The steps one event type can reveal. Steps whose condition requires
/// `event.data.F == "v"` (or `F in [...]`) are found by the event's value of F; the others
/// are always candidates. The index only narrows: the condition still decides.
#[derive(Debug, Default)]
pub struct TypeIndex {
    /// Candidates with no indexable requirement, ordered by (hunt, step).
    always: Vec<Candidate>,
    keyed: Vec<KeyedSteps>,
}

#[derive(Debug)]
struct KeyedSteps {
    /// The field under `event.data`.
    path: Vec<String>,
    by_value: FixedMap<String, Vec<Candidate>>,
    /// Every candidate keyed on this field: evaluated when the event lacks the field, so
    /// that their failures are counted as for any other condition.
    all: Vec<Candidate>,
}

/// Candidates gathered for one event: on the stack for the usual few.
pub struct Candidates {
    inline: [Candidate; 32],
    len: usize,
    spill: Vec<Candidate>,
}

impl Candidates {
    fn new() -> Candidates {
        Candidates {
            inline: [Candidate { hunt: 0, step: 0 }; 32],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn extend(&mut self, items: &[Candidate]) {
        for c in items {
            if self.len < self.inline.len() {
                self.inline[self.len] = *c;
                self.len += 1;
            } else {
                self.spill.push(*c);
            }
        }
    }

    /// The candidates in (hunt, step) order, without duplicates.
    pub fn as_sorted(&mut self) -> &[Candidate] {
        if !self.spill.is_empty() {
            let mut all = self.inline[..self.len].to_vec();
            all.append(&mut self.spill);
            all.sort_unstable_by_key(|c| (c.hunt, c.step));
            all.dedup();
            self.spill = all;
            self.len = 0;
            return &self.spill;
        }
        let v = &mut self.inline[..self.len];
        v.sort_unstable_by_key(|c| (c.hunt, c.step));
        let mut n = 0;
        for i in 0..v.len() {
            if n == 0 || v[i] != v[n - 1] {
                v[n] = v[i];
                n += 1;
            }
        }
        self.len = n;
        &self.inline[..n]
    }
}

impl TypeIndex {
    pub(super) fn add(&mut self, c: Candidate, when: &Condition) {
        let Some((path, values)) = when.required_equality() else {
            self.always.push(c);
            return;
        };
        let k = match self.keyed.iter().position(|k| k.path == path) {
            Some(k) => k,
            None => {
                self.keyed.push(KeyedSteps {
                    path: path.to_vec(),
                    by_value: FixedMap::default(),
                    all: Vec::new(),
                });
                self.keyed.len() - 1
            }
        };
        let keyed = &mut self.keyed[k];
        keyed.all.push(c);
        for v in values {
            let list = keyed.by_value.entry(v.to_string()).or_default();
            if !list.contains(&c) {
                list.push(c);
            }
        }
    }

    /// The steps `data` could reveal.
    pub fn candidates(&self, data: &serde_json::Map<String, serde_json::Value>) -> Candidates {
        let mut out = Candidates::new();
        out.extend(&self.always);
        for k in &self.keyed {
            match lookup_str(data, &k.path) {
                Lookup::Str(v) => {
                    if let Some(list) = k.by_value.get(v) {
                        out.extend(list);
                    }
                }
                // Present but not a string: unequal to every string literal, so false.
                Lookup::Other => {}
                // Missing: let the conditions run, and count their failure.
                Lookup::Missing => out.extend(&k.all),
            }
        }
        out
    }
}

enum Lookup<'a> {
    Str(&'a str),
    Other,
    Missing,
}

fn lookup_str<'a>(
    data: &'a serde_json::Map<String, serde_json::Value>,
    path: &[String],
) -> Lookup<'a> {
    let mut cur = data;
    for (i, k) in path.iter().enumerate() {
        match cur.get(k) {
            None => return Lookup::Missing,
            Some(serde_json::Value::String(s)) if i + 1 == path.len() => return Lookup::Str(s),
            Some(serde_json::Value::Object(m)) if i + 1 < path.len() => cur = m,
            Some(_) if i + 1 == path.len() => return Lookup::Other,
            // A non-object on the way: reading through it fails, as a missing key does.
            Some(_) => return Lookup::Missing,
        }
    }
    Lookup::Missing
}

/// A step an event type can reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub hunt: u32,
    pub step: u32,
}
