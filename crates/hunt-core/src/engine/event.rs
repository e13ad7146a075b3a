//! What goes in and comes out of the engine: a customer's event, and the outcomes it
//! produces (with the reasons a reward can be denied).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::ids::ID_BYTES_MAX;
use crate::time::Timestamp;

/// A customer's action, as posted by the shop. Its JSON Schema (in the OpenAPI
/// document) states the checks of `ingest`: ids of 1-128 bytes without control
/// characters (a schema counts characters, so it says at most 128 of them), the
/// type's characters, no other fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Event {
    /// Idempotency key: the same `(user, id)` is one event. 1-128 bytes, no control
    /// characters.
    #[schemars(length(min = 1, max = 128), pattern(r"^[^\x00-\x1F\x7F-\x9F]*$"))]
    pub id: String,
    /// Event type, e.g. `product_view`.
    #[serde(rename = "type")]
    #[schemars(pattern(r"^[a-z0-9_.:-]{1,64}$"))]
    pub kind: String,
    /// The customer (the partition key). 1-128 bytes, no control characters.
    #[schemars(length(min = 1, max = 128), pattern(r"^[^\x00-\x1F\x7F-\x9F]*$"))]
    pub user: String,
    /// When it happened, by the sender's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The event's fields, for conditions (`null` is none).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "Option<Map<String, Json>>")]
    pub data: Map<String, Json>,
    /// Traits merged into the customer's profile (`null` removes one; `null` for the
    /// whole is none).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "Option<Map<String, Json>>")]
    pub traits: Map<String, Json>,
}

impl Event {
    /// Checks the fields the contract constrains; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > ID_BYTES_MAX {
            return Err(format!(
                "`id` must be 1-{ID_BYTES_MAX} bytes, got {}",
                self.id.len()
            ));
        }
        if self.user.is_empty() || self.user.len() > ID_BYTES_MAX {
            return Err(format!(
                "`user` must be 1-{ID_BYTES_MAX} bytes, got {}",
                self.user.len()
            ));
        }
        if !crate::catalog::is_valid_event_type(&self.kind) {
            return Err(format!(
                "`type` must match [a-z0-9_.:-]{{1,64}}, got {:?}",
                self.kind
            ));
        }
        Ok(())
    }
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A step was found.
    StepFound {
        hunt: Arc<str>,
        step: Arc<str>,
        /// Steps of the hunt found so far, this one included.
        found: u32,
        /// The clue of the next step still to find, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_clue: Option<Arc<str>>,
    },
    /// The customer completed the hunt.
    HuntCompleted { hunt: Arc<str> },
    /// A reward code was granted.
    RewardGranted {
        hunt: Arc<str>,
        pool: Arc<str>,
        code: String,
    },
    /// The hunt was completed but no code could be granted.
    RewardDenied {
        hunt: Arc<str>,
        pool: Arc<str>,
        reason: DenyReason,
    },
    /// In a sequence hunt, `step` was matched after its `within` ran out: the trail went
    /// cold and the customer's progress in the hunt starts over.
    TrailCold { hunt: Arc<str>, step: Arc<str> },
}

impl Outcome {
    pub fn hunt(&self) -> &Arc<str> {
        match self {
            Outcome::StepFound { hunt, .. }
            | Outcome::HuntCompleted { hunt }
            | Outcome::RewardGranted { hunt, .. }
            | Outcome::RewardDenied { hunt, .. }
            | Outcome::TrailCold { hunt, .. } => hunt,
        }
    }
}

/// Why a reward was denied.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The pool has no codes left.
    PoolEmpty,
    /// The hunt already has `max_winners` winners.
    WinnersCap,
    /// The customer already holds `per_user` codes from the pool.
    PerUserLimit,
    /// The customer no longer matches the hunt's audience.
    NotInAudience,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::PoolEmpty => "pool_empty",
            DenyReason::WinnersCap => "winners_cap",
            DenyReason::PerUserLimit => "per_user_limit",
            DenyReason::NotInAudience => "not_in_audience",
        }
    }

    pub fn parse(s: &str) -> Option<DenyReason> {
        [
            DenyReason::PoolEmpty,
            DenyReason::WinnersCap,
            DenyReason::PerUserLimit,
            DenyReason::NotInAudience,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}
