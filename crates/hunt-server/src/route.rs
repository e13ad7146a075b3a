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
    /// The node's counters beside its figures (the dashboard's history, the alerts).
    #[serde(default)]
    pub counters: bool,
    /// A hunt's last completions' times: asked alone, nothing else counted.
    #[serde(default)]
    pub completion_times_of: Option<String>,
    /// The node's counters alone, nothing else counted (the Overview's reading now).
    #[serde(default)]
    pub counters_alone: bool,
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
    /// The node that answered (set by the router that gathered it).
    #[serde(default)]
    pub node: String,
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
    /// The node's counters, when asked.
    #[serde(default)]
    pub counters: Option<Counters>,
    /// The asked hunt's last completions' times here, in ms.
    #[serde(default)]
    pub completion_ms: Vec<i64>,
}

/// One node's counters since it started, as the dashboard's history and the alerts
/// read them. Summed over the nodes ([`Counters::add`]) they are the cluster's: each
/// event is accepted and applied by its partition's owner alone, and each post is
/// answered by the node it reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Events its partitions accepted.
    pub accepted: u64,
    /// The acknowledgement's histogram of the posts it answered (`hunt_ack_seconds`):
    /// observations per bucket, and in all.
    pub ack: Vec<u64>,
    pub ack_count: u64,
    /// Per partition: events queued (none but on the partitions it owns) and applied.
    pub backlog: Vec<u64>,
    pub applied: Vec<u64>,
    /// Its sinks: each node delivers its own partitions' notifications.
    pub sinks: Vec<SinkCounts>,
}

/// A sink's health on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkCounts {
    pub sink: Arc<str>,
    pub breaker: Breaker,
    /// Seconds the breaker has been open or probing without closing.
    pub unhealthy_for_s: Option<f64>,
    /// Deliveries waiting, in flight included.
    pub queue: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// A circuit breaker's state, worst last (so that the worst of several nodes' is
/// their maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breaker {
    Closed,
    HalfOpen,
    Open,
}

impl Breaker {
    pub fn name(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::HalfOpen => "half_open",
            Breaker::Open => "open",
        }
    }
}

impl Counters {
    /// Adds another node's counters: counts summed (per bucket, per partition, per
    /// sink); a sink's breaker is the worst of the two, unhealthy for the longer.
    pub fn add(&mut self, o: &Counters) {
        fn sum(a: &mut Vec<u64>, b: &[u64]) {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.accepted += o.accepted;
        sum(&mut self.ack, &o.ack);
        self.ack_count += o.ack_count;
        sum(&mut self.backlog, &o.backlog);
        sum(&mut self.applied, &o.applied);
        for s in &o.sinks {
            match self.sinks.iter_mut().find(|m| m.sink == s.sink) {
                Some(m) => {
                    m.breaker = m.breaker.max(s.breaker);
                    m.unhealthy_for_s = match (m.unhealthy_for_s, s.unhealthy_for_s) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    m.queue += s.queue;
                    m.in_flight += s.in_flight;
                    m.dead_letters += s.dead_letters;
                    m.delivered += s.delivered;
                    m.failed += s.failed;
                }
                None => self.sinks.push(s.clone()),
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(name: &str, breaker: Breaker, open: Option<f64>, dead: u64) -> SinkCounts {
        SinkCounts {
            sink: Arc::from(name),
            breaker,
            unhealthy_for_s: open,
            queue: 1,
            in_flight: 0,
            dead_letters: dead,
            delivered: 10,
            failed: 2,
        }
    }

    #[test]
    fn counters_add_up_and_a_sinks_worst_breaker_wins() {
        let mut a = Counters {
            accepted: 5,
            ack: vec![1, 2],
            ack_count: 3,
            backlog: vec![4, 0],
            applied: vec![7, 0],
            sinks: vec![sink("crm", Breaker::Closed, None, 1)],
        };
        let b = Counters {
            accepted: 6,
            ack: vec![0, 1, 1],
            ack_count: 2,
            backlog: vec![0, 3],
            applied: vec![2, 9],
            sinks: vec![
                sink("crm", Breaker::Open, Some(12.0), 4),
                sink("mail", Breaker::HalfOpen, Some(3.0), 0),
            ],
        };
        a.add(&b);
        assert_eq!(
            (a.accepted, &a.ack, a.ack_count, &a.backlog, &a.applied),
            (11, &vec![1, 3, 1], 5, &vec![4, 3], &vec![9, 9])
        );
        let crm = &a.sinks[0];
        assert_eq!(
            (
                crm.breaker,
                crm.unhealthy_for_s,
                crm.dead_letters,
                crm.queue
            ),
            (Breaker::Open, Some(12.0), 5, 2)
        );
        assert_eq!(a.sinks[1].breaker, Breaker::HalfOpen);
        // Over the wire and back, as a gather sends them.
        let wire = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Counters>(&wire).unwrap(), a);
    }
}
