//! The Treasure Hunt Engine on NATS JetStream (see docs/cluster.md and ADR 0011).
//!
//! Owns: connecting to a NATS cluster and refusing settings that break a promise
//! ([`Cluster::connect`]: a server older than [`NATS_SERVER_MIN`], fewer replicas than
//! asked, servers that do not sync every write); the cluster's stream, one subject per
//! partition; and [`JetStreamLog`], the [`hunt_store::PartitionLog`] whose appends are
//! fenced with `Nats-Expected-Last-Subject-Sequence`, so that a deposed owner's append
//! is refused by the stream itself.
//! Must never: answer a round as durable before the stream's quorum has acknowledged
//! it, or append to a partition on a belief about its end that the stream does not
//! share.
//!
//! - [`cluster`]: the connection, the checks at start, the stream's names;
//! - [`assign`]: which live node should own each partition (rendezvous hashing);
//! - [`members`]: each node's heartbeat in the members bucket, and who is live;
//! - [`log`]: the fenced partition log;
//! - [`lease`]: partition leases in the owners bucket, by compare-and-set;
//! - [`escrow`]: a pool's codes and a hunt's winner slots handed to partitions in
//!   blocks, in the pools bucket;
//! - [`metrics`]: what a node counts of its life on the cluster;
//! - [`snapshots`]: the newest snapshot in the cluster's object store;
//! - `testing` (feature `testing`): three `nats-server`s on free ports, for tests.

pub mod assign;
pub mod cluster;
pub mod escrow;
pub mod lease;
pub mod log;
pub mod members;
pub mod metrics;
pub mod snapshots;
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::{Cluster, ClusterConfig, ClusterError, NATS_SERVER_MIN};
pub use escrow::{Account, Escrow, EscrowError, Holding, Policy, Refill, Span, Used};
pub use lease::{Held, Lapses, Leases, Owner, Seen};
pub use log::{JetStreamLog, RECORD_BITS};
pub use members::{Liveness, Member, Members, SeenMember};
pub use metrics::ClusterMetrics;
pub use snapshots::ObjectSnapshots;
