//! Applying one event to one customer's state: conditions judged, steps counted and
//! found, hunts completed and rewarded, outcomes in a fixed order.

use crate::catalog::{Candidate, Hunt};
use crate::cond::{EventView, Input, ProgressView};
use crate::spec::Order;
use crate::time::Timestamp;

use super::{
    Allocator, DenyReason, Engine, Event, Grant, HuntProgress, Outcome, SLOT_DONE, SLOT_INDEX,
    SLOT_PENDING, Traits, Undo, UserState, merge_traits,
};

/// Counts of a customer with no progress yet, borrowed instead of allocated.
static ZERO_COUNTS: [u32; crate::catalog::STEPS_MAX] = [0; crate::catalog::STEPS_MAX];

impl Engine {
    /// The time an event counts at: its own time, but never later than its receipt
    /// (a sender cannot claim the future). `None` when it is later than `max_lateness`
    /// behind its receipt: such an event updates traits only.
    pub fn effective_time(&self, event: &Event, received: Timestamp) -> Option<Timestamp> {
        let t = event.time.map_or(received, |t| t.min(received));
        (received.0 - t.0 <= self.catalog.max_lateness.0).then_some(t)
    }

    /// Applies `event`, received at `received`, to the customer's `state`; appends the
    /// outcomes to `out`.
    pub fn apply(
        &self,
        state: &mut UserState,
        event: &Event,
        received: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
    ) {
        self.apply_undoable(state, event, received, alloc, out, &mut Undo::off());
    }

    /// [`apply`](Self::apply), saving in `undo` what it changes first (`undo` must be
    /// empty): if it panics, `undo.restore(state)` puts the state back as it was.
    pub fn apply_undoable(
        &self,
        state: &mut UserState,
        event: &Event,
        received: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        if state.bound_to != self.catalog.id && !state.hunts.is_empty() {
            undo.save_hunts(state);
        }
        state.bind(&self.catalog);
        if !event.traits.is_empty() {
            undo.save_traits(&state.traits, &event.traits);
            merge_traits(&mut state.traits, &event.traits);
        }
        let Some(t) = self.effective_time(event, received) else {
            return;
        };
        if state.slots.iter().any(|s| s & SLOT_PENDING != 0) {
            self.complete_pending(state, &event.user, t, alloc, out, undo);
        }
        let Some(mut found) = self.catalog.candidates(&event.kind, &event.data) else {
            return;
        };
        let candidates = found.as_sorted();
        let mut i = 0;
        while i < candidates.len() {
            let hunt = candidates[i].hunt;
            let j = i + candidates[i..]
                .iter()
                .take_while(|c| c.hunt == hunt)
                .count();
            self.apply_hunt(
                state,
                event,
                t,
                hunt as usize,
                &candidates[i..j],
                alloc,
                out,
                undo,
            );
            i = j;
        }
    }

    /// Completes, in file order, the active hunts whose completion rule a new version
    /// lowered to finds the customer already has.
    fn complete_pending(
        &self,
        state: &mut UserState,
        user: &str,
        t: Timestamp,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        let mut pending: Vec<(usize, usize)> = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| **s & SLOT_PENDING != 0 && **s & SLOT_DONE == 0)
            .map(|(p, s)| ((s & SLOT_INDEX) as usize, p))
            .collect();
        pending.sort_unstable();
        for (h, p) in pending {
            let hunt = &self.catalog.hunts[h];
            if !hunt.is_active(t) {
                continue;
            }
            undo.save_hunts(state);
            undo.save_rewards(state);
            state.hunts[p].completed_at = Some(t);
            state.slots[p] = (state.slots[p] & !SLOT_PENDING) | SLOT_DONE;
            out.push(Outcome::HuntCompleted {
                hunt: hunt.id.clone(),
            });
            self.reward(state, user, t, h, alloc, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_hunt(
        &self,
        state: &mut UserState,
        event: &Event,
        t: Timestamp,
        h: usize,
        cands: &[Candidate],
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
        undo: &mut Undo,
    ) {
        let hunt = &self.catalog.hunts[h];
        if !hunt.is_active(t) {
            return;
        }
        let existing = state.slots.iter().position(|s| s & SLOT_INDEX == h as u32);
        if let Some(p) = existing
            && state.slots[p] & SLOT_DONE != 0
        {
            return;
        }
        if existing.is_none() && !in_audience(hunt, &event.user, &state.traits) {
            return;
        }
        // First judge the conditions that do not read progress on the event alone: most
        // fail, and then the progress record (often not in cache) is never read. Nothing
        // is allocated on this path.
        let ev = EventView {
            id: &event.id,
            kind: &event.kind,
            time: t,
            data: &event.data,
        };
        let bare = Input {
            event: Some(ev),
            user_id: &event.user,
            traits: &state.traits,
            progress: None,
        };
        let progress = existing.map(|p| &state.hunts[p]);
        let matched = matched_steps(hunt, cands, bare, progress, t);
        if matched == 0 {
            return;
        }
        undo.save_hunts(state);
        undo.save_rewards(state);
        let p = match existing {
            Some(p) => p,
            None => {
                // Exactly as long as needed: a customer joins a hunt rarely, and a
                // doubling vector's spare room was a fifth of a customer's memory.
                state.hunts.reserve_exact(1);
                state.slots.reserve_exact(1);
                state.hunts.push(HuntProgress::new(hunt));
                state.slots.push(h as u32);
                state.hunts.len() - 1
            }
        };
        let before = state.hunts[p].found_count;
        let n = hunt.steps.len();
        match hunt.order {
            Order::Any => {
                let progress = &mut state.hunts[p];
                for s in 0..n {
                    if matched & (1 << s) != 0 {
                        self.count_step(progress, s, t, h, out);
                    }
                }
            }
            Order::Sequence => self.step_sequence(state, p, event, ev, t, h, cands, out),
        }
        // A bug half-way through a customer's change, on demand (tests of containment).
        #[cfg(feature = "failpoints")]
        fail::fail_point!(
            "engine::apply_hunt",
            event.user.starts_with("failpoint-"),
            |_| { panic!("failpoint engine::apply_hunt for {}", event.user) }
        );
        let progress = &mut state.hunts[p];
        if progress.found_count > before && progress.found_count >= hunt.complete_after {
            progress.completed_at = Some(t);
            state.slots[p] = (state.slots[p] & !SLOT_PENDING) | SLOT_DONE;
            out.push(Outcome::HuntCompleted {
                hunt: hunt.id.clone(),
            });
            self.reward(state, &event.user, t, h, alloc, out);
        }
    }

    /// Applies a matched event to the next step of a sequence hunt, minding `within`.
    #[allow(clippy::too_many_arguments)]
    fn step_sequence(
        &self,
        state: &mut UserState,
        p: usize,
        event: &Event,
        ev: EventView,
        t: Timestamp,
        h: usize,
        cands: &[Candidate],
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let next = state.hunts[p].found_count as usize;
        let step = &hunt.steps[next];
        if let (Some(last), Some(within)) = (state.hunts[p].last_found_at, step.within)
            && t > last.plus(within)
        {
            out.push(Outcome::TrailCold {
                hunt: hunt.id.clone(),
                step: step.id.clone(),
            });
            state.hunts[p] = HuntProgress::new(hunt);
            // The same event may start the trail afresh, judged on the reset progress.
            let view = ProgressView {
                found: 0,
                step_ids: &hunt.step_ids,
                counts: &ZERO_COUNTS[..hunt.steps.len()],
            };
            let input = Input {
                event: Some(ev),
                user_id: &event.user,
                traits: &state.traits,
                progress: Some(view),
            };
            if cands.iter().any(|c| c.step == 0) && hunt.steps[0].when.eval(&input) {
                self.count_step(&mut state.hunts[p], 0, t, h, out);
            }
            return;
        }
        self.count_step(&mut state.hunts[p], next, t, h, out);
    }

    /// One more matching event for step `s`; finds it when its `count` is reached.
    fn count_step(
        &self,
        progress: &mut HuntProgress,
        s: usize,
        t: Timestamp,
        h: usize,
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let step = &hunt.steps[s];
        progress.counts[s] += 1;
        if progress.counts[s] < step.count {
            return;
        }
        progress.found |= 1 << s;
        progress.found_count += 1;
        progress.last_found_at = Some(t);
        let next_clue = match hunt.order {
            Order::Sequence => hunt.steps.get(s + 1).and_then(|n| n.clue.clone()),
            Order::Any => (0..hunt.steps.len())
                .find(|i| !progress.is_found(*i))
                .and_then(|i| hunt.steps[i].clue.clone()),
        };
        out.push(Outcome::StepFound {
            hunt: hunt.id.clone(),
            step: step.id.clone(),
            found: progress.found_count,
            next_clue,
        });
    }

    fn reward(
        &self,
        state: &mut UserState,
        user: &str,
        t: Timestamp,
        h: usize,
        alloc: &mut dyn Allocator,
        out: &mut Vec<Outcome>,
    ) {
        let hunt = &self.catalog.hunts[h];
        let Some(reward) = hunt.reward else { return };
        let pool = &self.catalog.pools[reward.pool];
        let deny = |reason| Outcome::RewardDenied {
            hunt: hunt.id.clone(),
            pool: pool.id.clone(),
            reason,
        };
        if !in_audience(hunt, user, &state.traits) {
            out.push(deny(DenyReason::NotInAudience));
            return;
        }
        let held = state.rewards.iter().filter(|g| g.pool == pool.id).count();
        if held >= reward.per_user as usize {
            out.push(deny(DenyReason::PerUserLimit));
            return;
        }
        match alloc.allocate(&self.catalog, h, reward.pool) {
            Ok(code) => {
                state.rewards.push(Grant {
                    hunt: hunt.id.clone(),
                    pool: pool.id.clone(),
                    code: code.clone(),
                    at: t,
                });
                out.push(Outcome::RewardGranted {
                    hunt: hunt.id.clone(),
                    pool: pool.id.clone(),
                    code,
                });
            }
            Err(reason) => out.push(deny(reason)),
        }
    }
}

/// The steps of `hunt` among `cands` that the event matches, a bit per step (0: none):
/// judged on the event alone first, then, only for the steps the rules let it count
/// for, with the customer's `progress` in the hunt.
fn matched_steps(
    hunt: &Hunt,
    cands: &[Candidate],
    bare: Input,
    progress: Option<&HuntProgress>,
    t: Timestamp,
) -> u64 {
    let (mut holds, failed, pending) = judge_on_event(hunt, cands, &bare);
    if holds | failed | pending == 0 {
        return 0;
    }
    let n = hunt.steps.len();
    let (found_count, found, counts, last) = match progress {
        Some(p) => (p.found_count, p.found, &p.counts[..], p.last_found_at),
        None => (0, 0, &ZERO_COUNTS[..n], None),
    };
    // The steps this event may count for: unfound ones, or in a sequence the next.
    let eligible: u64 = match hunt.order {
        Order::Any => !found,
        Order::Sequence if (found_count as usize) < n => 1 << found_count,
        Order::Sequence => 0,
    };
    // Failures count only for conditions the rules needed evaluated.
    for s in 0..n {
        if failed & eligible & (1 << s) != 0 {
            hunt.steps[s].when.count_failure();
        }
    }
    if pending & eligible != 0 {
        let view = ProgressView {
            found: found_count,
            step_ids: &hunt.step_ids,
            counts,
        };
        let input = Input {
            progress: Some(view),
            ..bare
        };
        for s in 0..n {
            if pending & eligible & (1 << s) != 0 && hunt.steps[s].when.eval(&input) {
                holds |= 1 << s;
            }
        }
    }
    let mut matched = holds & eligible;
    // In a sequence, an event that happened before the previous step was found is
    // not after it.
    if hunt.order == Order::Sequence && last.is_some_and(|l| t < l) {
        matched = 0;
    }
    matched
}

/// Judges the candidates' conditions that do not read progress on the event alone: the
/// steps whose condition holds, failed, or is left pending (it reads progress), a bit
/// per step each.
fn judge_on_event(hunt: &Hunt, cands: &[Candidate], bare: &Input) -> (u64, u64, u64) {
    let (mut holds, mut failed, mut pending) = (0u64, 0u64, 0u64);
    for c in cands {
        let bit = 1u64 << c.step;
        let when = &hunt.steps[c.step as usize].when;
        if when.uses_progress() {
            pending |= bit;
            continue;
        }
        match when.eval_checked(bare) {
            Ok(true) => holds |= bit,
            Ok(false) => {}
            Err(_) => failed |= bit,
        }
    }
    (holds, failed, pending)
}

/// Whether a customer with these traits is in the hunt's audience (everyone, without
/// one). A failing audience condition counts as a failure and as "not in it".
pub(super) fn in_audience(hunt: &crate::catalog::Hunt, user: &str, traits: &Traits) -> bool {
    let Some(aud) = &hunt.audience else {
        return true;
    };
    aud.eval(&Input {
        event: None,
        user_id: user,
        traits,
        progress: None,
    })
}
