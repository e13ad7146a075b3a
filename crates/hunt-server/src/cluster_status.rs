//! A cluster's nodes and partitions as the dashboard shows them (`GET /v1/cluster`):
//! what `hunt cluster status` prints, read from the cluster's buckets and stream by
//! the node that answers. The reading is the cluster's code; the server only asks.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

use crate::escrow::BoxFuture;

/// Every node with a heartbeat, and each partition's owner and lag.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClusterStatus {
    pub nodes: Vec<ClusterNode>,
    pub partitions: Vec<ClusterPartition>,
}

/// A node with a heartbeat in the members bucket.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClusterNode {
    pub node: String,
    /// Where its HTTP API listens.
    pub http: String,
    /// How many partitions it owns.
    pub owned: usize,
    /// Asked to give its partitions away (`hunt cluster drain`).
    pub draining: bool,
    /// Milliseconds since its last heartbeat, by this node's clock against the other's
    /// (clocks of two machines may differ; for people, not for deciding).
    pub beat_age_ms: i64,
}

/// One partition's owner, lease and lag.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClusterPartition {
    pub partition: u32,
    /// `None`: never taken, or released.
    pub owner: Option<String>,
    /// The epoch of its lease.
    pub epoch: u64,
    /// Milliseconds since the lease was last renewed.
    pub renewed_age_ms: Option<i64>,
    /// The last sequence on the partition's subject.
    pub end: u64,
    /// How far the owner's position, at its last heartbeat, is behind `end`, in
    /// stream sequence numbers (0: it holds the subject's last message).
    pub lag: Option<u64>,
}

/// Reads a cluster's status (the node's cluster code gives it).
pub trait ClusterView: Send + Sync + 'static {
    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, String>>;
}

pub type SharedClusterView = Arc<dyn ClusterView>;
