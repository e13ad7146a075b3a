//! Partitions owned by other nodes (ADR 0015): a node applies the events of the
//! partitions it owns, and sends the others' to their owners through a [`Router`],
//! so that any node answers any request.
//!
//! Owns: which partitions this node applies ([`Spread`]), and the types that travel
//! between nodes: events' statuses ([`Routed`]), a customer as their owner shows them
//! ([`UserView`]), and one node's share of the hunt-wide figures ([`Share`]). The
//! transport (NATS request-reply on a cluster) is the router's; the server knows
//! nothing of it.
//! Must never: apply an event of a partition it does not own, or answer an event the
//! owner did not answer (an event whose owner could not be reached is refused for a
//! retry, nothing recorded here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hunt_core::engine::{Event, Outcome};
use serde::{Deserialize, Serialize};

use crate::escrow::BoxFuture;
use crate::partition::Status;
pub use crate::partition::UserView;
use crate::state::{HuntCounters, Winner};

/// Which partitions this node applies, and where the others go.
#[derive(Clone)]
pub struct Spread {
    pub owned: BTreeSet<u32>,
    pub router: Arc<dyn Router>,
}

impl std::fmt::Debug for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spread")
            .field("owned", &self.owned)
            .finish()
    }
}

/// Events' statuses: (index in the request, event id, status).
pub type Statuses = Vec<(usize, String, Status)>;

/// Sends work to the owners of partitions this node does not own.
pub trait Router: Send + Sync + 'static {
    /// Applies `events` (each with its index in the request) on the owner of
    /// `partition`, and gives their statuses, each once its records are durable there.
    fn events<'a>(
        &'a self,
        partition: u32,
        events: Vec<(usize, Event)>,
    ) -> BoxFuture<'a, Result<Statuses, String>>;

    /// Asks every other node's partitions to give back what they hold unused of the
    /// escrow account `key` (a partition here found it empty). Not waited for.
    fn give_back(&self, key: &str);

    /// The customer `user` (of `partition`) as its owner shows them, once what it
    /// shows is durable there (`None`: the owner has no events of theirs).
    fn user<'a>(
        &'a self,
        partition: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserView>, String>>;

    /// Every other node's share of the hunt-wide figures, as each answers `ask`; the
    /// nodes that did not answer in time are named in [`Gathered::missing`].
    fn gather<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Gathered>;
}

/// What a gather asks every node for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// A hunt's first winners in grant order, at most this many: `(hunt, limit)`.
    pub winners_of: Option<(String, usize)>,
    /// Dead letters: listed, or retried or dropped, each node its own.
    #[serde(default)]
    pub dead_letters: Option<DeadAsk>,
    /// A new hunts file's text: each node counts the plan's customers on its
    /// partitions, and says which codes their customers hold.
    #[serde(default)]
    pub plan_for: Option<String>,
}

/// What a node is asked of its dead letters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadAsk {
    pub filter: crate::notify::outbox::Filter,
    /// Listed: at most this many (with the CloudEvent only when asked by id).
    pub limit: usize,
    /// Instead of listing: retry (`true`) or drop (`false`) every one that matches.
    pub act: Option<bool>,
}

/// One node's share of the hunt-wide figures: what its partitions hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// Figures per hunt, summed over the node's partitions.
    pub stats: BTreeMap<Arc<str>, HuntCounters>,
    /// The asked hunt's first winners here, in grant order.
    pub winners: Vec<Winner>,
    /// How many winners the asked hunt has here.
    pub winners_total: u64,
    /// Codes granted from each pool (by id) to the node's partitions' customers.
    pub pools_taken: BTreeMap<Arc<str>, u64>,
    /// The hunts-file version each of the node's partitions applies (a version switch
    /// waits for every partition's).
    #[serde(default)]
    pub in_force: BTreeMap<u32, u64>,
    /// The dead letters asked for, here, in the log's order.
    #[serde(default)]
    pub dead: Vec<crate::notify::outbox::Entry>,
    /// How many dead letters here match the asked filter.
    #[serde(default)]
    pub dead_total: usize,
    /// The ids retried or dropped here.
    #[serde(default)]
    pub acted: Vec<String>,
    /// Why the asked retry or drop failed here (its log stopped).
    #[serde(default)]
    pub act_failed: Option<String>,
    /// The asked plan, counted on this node's partitions.
    #[serde(default)]
    pub plan: Option<hunt_core::plan::Plan>,
    /// The codes this node's partitions' customers hold: (hunt, pool, code).
    #[serde(default)]
    pub held_codes: Vec<(String, String, String)>,
}

/// The other nodes' shares, and who did not answer.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub shares: Vec<Share>,
    /// The nodes that did not answer in time: their shares are missing.
    pub missing: Vec<String>,
}

/// An event's status as it travels back from its partition's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Routed {
    Accepted { outcomes: Vec<Outcome> },
    Duplicate { outcomes: Vec<Outcome> },
    WindowFull,
    Internal { why: String },
    Unavailable { why: String },
    Moving { why: String },
}

impl Routed {
    pub fn of(s: &Status) -> Routed {
        match s {
            Status::Accepted(a) => Routed::Accepted {
                outcomes: a.to_vec(),
            },
            Status::Duplicate(a) => Routed::Duplicate {
                outcomes: a.to_vec(),
            },
            Status::WindowFull => Routed::WindowFull,
            Status::Internal(why) => Routed::Internal { why: why.clone() },
            Status::Unavailable(why) => Routed::Unavailable { why: why.clone() },
            Status::Moving(why) => Routed::Moving { why: why.clone() },
        }
    }

    pub fn into_status(self) -> Status {
        use crate::state::answer_from;
        match self {
            Routed::Accepted { outcomes } => Status::Accepted(answer_from(outcomes)),
            Routed::Duplicate { outcomes } => Status::Duplicate(answer_from(outcomes)),
            Routed::WindowFull => Status::WindowFull,
            Routed::Internal { why } => Status::Internal(why),
            Routed::Unavailable { why } => Status::Unavailable(why),
            Routed::Moving { why } => Status::Moving(why),
        }
    }
}
