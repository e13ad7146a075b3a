//! Undoing one event: what applying it changed in a customer's state, saved so that a
//! panic half-way leaves the state as the log says.

use serde_json::{Map, Value as Json};

use super::{HuntProgress, Traits, UserState};

/// What applying one event changed in a customer's state, kept so that the state can be
/// put back as it was if applying panicked half-way (a bug must not leave a customer's
/// state different from what the log says). Each part is saved just before it is first
/// changed: most events change only traits, or nothing, and then nothing is copied.
#[derive(Debug, Default)]
pub struct Undo {
    /// The progress records as they were, once any of them was about to change.
    hunts: Option<Vec<HuntProgress>>,
    /// Traits the event set or removed, with their values before (`None`: absent).
    traits: Vec<(Box<str>, Option<Json>)>,
    /// Codes held before, once one was about to be added.
    rewards_len: Option<usize>,
    /// Saves nothing: for callers that never put a state back (`Engine::apply`).
    off: bool,
}

impl Undo {
    /// An undo that saves nothing, so a caller that cannot restore pays nothing.
    pub(super) fn off() -> Undo {
        Undo {
            off: true,
            ..Undo::default()
        }
    }

    pub(super) fn save_hunts(&mut self, state: &UserState) {
        if !self.off && self.hunts.is_none() {
            self.hunts = Some(state.hunts.clone());
        }
    }

    pub(super) fn save_traits(&mut self, profile: &Traits, traits: &Map<String, Json>) {
        if self.off {
            return;
        }
        for k in traits.keys() {
            self.traits
                .push((k.as_str().into(), profile.get(k).cloned()));
        }
    }

    pub(super) fn save_rewards(&mut self, state: &UserState) {
        if !self.off {
            self.rewards_len.get_or_insert(state.rewards.len());
        }
    }

    /// Forgets what was saved (the event's changes stand).
    pub fn clear(&mut self) {
        self.hunts = None;
        self.traits.clear();
        self.rewards_len = None;
    }

    /// Puts `state` back as it was before the event, and forgets what was saved. The
    /// state binds again at its next event.
    pub fn restore(&mut self, state: &mut UserState) {
        if let Some(h) = self.hunts.take() {
            state.hunts = h;
        }
        for (k, v) in self.traits.drain(..).rev() {
            match v {
                Some(v) => state.traits.insert(&k, v),
                None => {
                    state.traits.remove(&k);
                }
            }
        }
        if let Some(n) = self.rewards_len.take() {
            state.rewards.truncate(n);
        }
        state.bound_to = 0;
        state.slots.clear();
    }
}
