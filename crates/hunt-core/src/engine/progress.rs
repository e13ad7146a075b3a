//! A customer's progress in one hunt, and the layout (the hunt's step ids in one
//! version's order) it is kept by.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::Order;
use crate::time::Timestamp;

/// A hunt's id and its step ids in one version's order: shared by the catalog and every
/// progress record laid out by it, so that a record holds one thin pointer for both.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub hunt: Arc<str>,
    pub steps: Arc<[Arc<str>]>,
}

/// A customer's progress in one hunt.
///
/// Progress belongs to steps by id: `counts` and `found` are by position in the record's
/// layout, the hunt's step ids in the version the record was last laid out by. When a
/// new version changes the steps, [`UserState::bind`](super::UserState::bind) lays the record out again by id
/// (see `docs/engine.md`, "When the hunts file changes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ProgressWire", try_from = "ProgressWire")]
pub struct HuntProgress {
    /// The hunt, and the step ids `counts` and `found` are laid out by.
    layout: Arc<Layout>,
    /// Matching events seen per step.
    pub counts: Vec<u32>,
    /// Found steps, as a bit set by position in the layout.
    pub found: u64,
    pub found_count: u32,
    /// When the most recent step was found (event time).
    pub last_found_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

/// A progress record as JSON and other self-describing formats see it.
#[derive(Serialize, Deserialize)]
struct ProgressWire {
    hunt: Arc<str>,
    steps: Vec<Arc<str>>,
    counts: Vec<u32>,
    found: u64,
    found_count: u32,
    #[serde(default)]
    last_found_at: Option<Timestamp>,
    #[serde(default)]
    completed_at: Option<Timestamp>,
}

impl From<HuntProgress> for ProgressWire {
    fn from(p: HuntProgress) -> ProgressWire {
        ProgressWire {
            hunt: p.layout.hunt.clone(),
            steps: p.layout.steps.to_vec(),
            counts: p.counts,
            found: p.found,
            found_count: p.found_count,
            last_found_at: p.last_found_at,
            completed_at: p.completed_at,
        }
    }
}

impl TryFrom<ProgressWire> for HuntProgress {
    type Error = String;

    fn try_from(w: ProgressWire) -> Result<HuntProgress, String> {
        let layout = Arc::new(Layout {
            hunt: w.hunt,
            steps: w.steps.into(),
        });
        HuntProgress::from_parts(
            layout,
            w.counts,
            w.found,
            w.found_count,
            w.last_found_at,
            w.completed_at,
        )
    }
}

impl HuntProgress {
    pub(super) fn new(hunt: &crate::catalog::Hunt) -> HuntProgress {
        HuntProgress {
            layout: hunt.layout.clone(),
            counts: vec![0; hunt.steps.len()],
            found: 0,
            found_count: 0,
            last_found_at: None,
            completed_at: None,
        }
    }

    /// A record from its parts (as a snapshot stored them). Its counts must match its
    /// layout.
    pub fn from_parts(
        layout: Arc<Layout>,
        counts: Vec<u32>,
        found: u64,
        found_count: u32,
        last_found_at: Option<Timestamp>,
        completed_at: Option<Timestamp>,
    ) -> Result<HuntProgress, String> {
        if counts.len() != layout.steps.len() {
            return Err(format!(
                "progress in `{}` has {} counts for {} steps",
                layout.hunt,
                counts.len(),
                layout.steps.len()
            ));
        }
        Ok(HuntProgress {
            layout,
            counts,
            found,
            found_count,
            last_found_at,
            completed_at,
        })
    }

    /// The hunt's id.
    pub fn hunt(&self) -> &Arc<str> {
        &self.layout.hunt
    }

    /// The step ids `counts` and `found` are laid out by.
    pub fn steps(&self) -> &[Arc<str>] {
        &self.layout.steps
    }

    /// The hunt and its step ids as this record is laid out (shared).
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn is_found(&self, step: usize) -> bool {
        step < 64 && self.found & (1 << step) != 0
    }

    /// The ids of the steps found, in layout order.
    pub fn found_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.layout
            .steps
            .iter()
            .enumerate()
            .filter(|(s, _)| self.is_found(*s))
            .map(|(_, id)| id)
    }

    /// Matching events seen for the step `id` (0 if the layout lacks it).
    pub fn count_of(&self, id: &str) -> u32 {
        self.layout
            .steps
            .iter()
            .position(|s| &**s == id)
            .and_then(|s| self.counts.get(s).copied())
            .unwrap_or(0)
    }

    /// Lays the record out by `hunt`'s steps, keeping what belongs to each step id:
    /// - a step still there keeps its count and its find, wherever it moved;
    /// - a removed step's count and find are dropped; an added step starts at zero;
    /// - in a sequence hunt not yet completed, the customer's place is the longest
    ///   prefix of the new order they had found: finds past it are dropped, and only the
    ///   step right after it keeps a count (a sequence counts the next step only). With
    ///   no find left there is no previous step, so no `within` runs from one;
    /// - a completed hunt stays completed; its finds of steps still there are kept.
    pub fn rebind(&mut self, hunt: &crate::catalog::Hunt) {
        let n = hunt.steps.len();
        if !Arc::ptr_eq(&self.layout, &hunt.layout) {
            // A record whose counts do not match its layout (never written by this
            // engine) is laid out by id all the same, rather than trusted.
            if *self.layout.steps != *hunt.step_ids || self.counts.len() != n {
                let mut counts = vec![0; n];
                let mut found = 0u64;
                for (old, id) in self.layout.steps.iter().enumerate() {
                    if let Some(new) = hunt.step_ids.iter().position(|s| s == id) {
                        counts[new] = self.counts.get(old).copied().unwrap_or(0);
                        if self.is_found(old) {
                            found |= 1 << new;
                        }
                    }
                }
                self.counts = counts;
                self.found = found;
            }
            self.layout = hunt.layout.clone();
            self.found &= if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
            self.found_count = self.found.count_ones();
        }
        if hunt.order == Order::Sequence && self.completed_at.is_none() {
            let place = (!self.found).trailing_zeros().min(n as u32) as usize;
            self.found = if place == 64 {
                u64::MAX
            } else {
                (1u64 << place) - 1
            };
            self.found_count = place as u32;
            for c in self.counts.iter_mut().skip(place + 1) {
                *c = 0;
            }
            if place == 0 {
                self.last_found_at = None;
            }
        }
    }
}
