//! What a customer sees of the hunts (`GET /v1/users/{user}/hunts`), read from their
//! state without changing it.

use std::sync::Arc;

use serde::Serialize;

use super::apply::in_audience;
use super::{Engine, UserState};
use crate::spec::Order;
use crate::time::Timestamp;

/// What a customer sees of one hunt (`GET /v1/users/{user}/hunts`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HuntView {
    pub hunt: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `any` or `sequence`.
    #[schemars(extend("enum" = ["any", "sequence"]))]
    pub order: &'static str,
    pub steps: usize,
    /// Steps needed to complete.
    pub complete_after: u32,
    /// The steps found so far, in file order.
    pub found: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// The clue of the next step to look for, if the hunt is not completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_clue: Option<Arc<str>>,
    /// When the hunt ends, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl Engine {
    /// The hunts active at `now` that the customer may see: those they take part in,
    /// and those whose audience they are in, in file order, with progress and the next
    /// clue. Reads the state only.
    pub fn visible_hunts(&self, state: &UserState, user: &str, now: Timestamp) -> Vec<HuntView> {
        let mut out = Vec::new();
        for hunt in &self.catalog.hunts {
            if !hunt.is_active(now) {
                continue;
            }
            // Read as the customer's next event would lay it out.
            let progress = state.hunts.iter().find(|p| *p.hunt() == hunt.id).map(|p| {
                let mut p = std::borrow::Cow::Borrowed(p);
                if !Arc::ptr_eq(p.layout(), &hunt.layout) {
                    p.to_mut().rebind(hunt);
                }
                p
            });
            let progress = progress.as_deref();
            if progress.is_none() && !in_audience(hunt, user, &state.traits) {
                continue;
            }
            let n = hunt.steps.len();
            let is_found = |s: usize| progress.is_some_and(|p| p.is_found(s));
            let completed_at = progress.and_then(|p| p.completed_at);
            let next_clue = match (completed_at, hunt.order) {
                (Some(_), _) => None,
                (None, Order::Sequence) => {
                    let next = progress.map_or(0, |p| p.found_count as usize);
                    hunt.steps.get(next).and_then(|s| s.clue.clone())
                }
                (None, Order::Any) => (0..n)
                    .find(|s| !is_found(*s))
                    .and_then(|s| hunt.steps[s].clue.clone()),
            };
            out.push(HuntView {
                hunt: hunt.id.clone(),
                title: hunt.title.clone(),
                order: match hunt.order {
                    Order::Any => "any",
                    Order::Sequence => "sequence",
                },
                steps: n,
                complete_after: hunt.complete_after,
                found: (0..n)
                    .filter(|s| is_found(*s))
                    .map(|s| hunt.step_ids[s].clone())
                    .collect(),
                completed_at,
                next_clue,
                until: hunt.until,
            });
        }
        out
    }
}
