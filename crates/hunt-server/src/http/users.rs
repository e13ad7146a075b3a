//! A customer's progress: `GET /v1/users/{user}` and `/v1/users/{user}/hunts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hunt_core::engine::{Grant, HuntProgress, HuntView, Traits};
use schemars::JsonSchema;
use serde::Serialize;

use super::extract::{Authorized, Customer, Ready, role};
use super::{ApiError, Json};
use crate::service::now;
use crate::state::Version;

/// `GET /v1/users/{user}`: a customer.
#[derive(Serialize, JsonSchema)]
pub(super) struct UserAnswer {
    user: String,
    traits: Traits,
    /// Progress in each hunt the customer has taken part in, in order of joining.
    hunts: Vec<ProgressView>,
    /// Reward codes held.
    rewards: Vec<Grant>,
}

/// `GET /v1/users/{user}/hunts`: the active hunts the customer may see.
#[derive(Serialize, JsonSchema)]
pub(super) struct UserHuntsAnswer {
    user: String,
    hunts: Vec<HuntView>,
}

/// A customer's progress in one hunt, by step id.
#[derive(Serialize, JsonSchema)]
pub(super) struct ProgressView {
    hunt: Arc<str>,
    /// The steps found, by id.
    found: Vec<Arc<str>>,
    found_count: u32,
    /// Matching events per step, for steps with a count.
    counts: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_found_at: Option<hunt_core::time::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<hunt_core::time::Timestamp>,
}

fn progress_view(v: &Version, p: &HuntProgress) -> ProgressView {
    // Laid out as the customer's next event will see it under the version in force; a
    // hunt no longer in the file shows the steps it had.
    let hunt = v
        .catalog()
        .hunt_index(p.hunt())
        .map(|h| &v.catalog().hunts[h]);
    let mut p = std::borrow::Cow::Borrowed(p);
    if let Some(h) = hunt {
        p.to_mut().rebind(h);
    }
    let counted = |id: &str| {
        hunt.and_then(|h| h.steps.iter().find(|s| &*s.id == id))
            .is_some_and(|s| s.count > 1)
    };
    ProgressView {
        hunt: p.hunt().clone(),
        found: p.found_ids().cloned().collect(),
        found_count: p.found_count,
        counts: p
            .steps()
            .iter()
            .zip(&p.counts)
            .filter(|(id, c)| **c > 0 && counted(id))
            .map(|(id, c)| (id.to_string(), *c))
            .collect(),
        last_found_at: p.last_found_at,
        completed_at: p.completed_at,
    }
}

pub(super) async fn get_user(
    _: Authorized<role::Read>,
    Customer(user): Customer,
    Ready(service): Ready,
) -> Result<Json<UserAnswer>, ApiError> {
    let (view, _) = service.user(&user, None).await?;
    let view = view.ok_or(ApiError::UnknownUser(user))?;
    let v = service.version();
    Ok(Json(UserAnswer {
        hunts: view
            .state
            .hunts()
            .iter()
            .map(|p| progress_view(&v, p))
            .collect(),
        user: view.user,
        traits: view.state.traits,
        rewards: view.state.rewards,
    }))
}

pub(super) async fn get_user_hunts(
    _: Authorized<role::Read>,
    Customer(user): Customer,
    Ready(service): Ready,
) -> Result<Json<UserHuntsAnswer>, ApiError> {
    let (_, hunts) = service.user(&user, Some(now())).await?;
    Ok(Json(UserHuntsAnswer { user, hunts }))
}
