//! What a node counts of its life on the cluster, written out in the Prometheus text
//! format beside the engine's own figures on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// A node's cluster figures. Counters only go up; the owner's partitions are set when
/// it takes them.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// This node's id.
    pub node: Mutex<String>,
    /// The partitions this node owns (the node records' subject excluded).
    pub owned: Mutex<Vec<u32>>,
    /// The cluster's partition count.
    pub partitions: AtomicU64,
    /// The epoch of the leases this node holds: one more at every takeover, cluster-wide.
    pub epoch: AtomicU64,
    /// Each partition's lease epoch, for the partitions this node holds: one more at
    /// every change of the partition's owner.
    pub epochs: Mutex<std::collections::BTreeMap<u32, u64>>,
    /// Times this node took the partitions' leases over.
    pub takeovers: AtomicU64,
    /// Lease renewals confirmed, failed (no answer, no leader), refused (taken).
    pub renewals_confirmed: AtomicU64,
    pub renewals_failed: AtomicU64,
    pub renewals_refused: AtomicU64,
    /// Appends the stream refused because another owner had appended (fenced).
    pub fenced_appends: AtomicU64,
    /// Appends sent again after no acknowledgement (the same message id).
    pub append_resends: AtomicU64,
    /// Requests this node answered for standbys.
    pub forwarded_answered: AtomicU64,
    /// Reads and writes of the pools bucket (the escrow), shared with [`crate::Escrow`].
    pub escrow_ops: std::sync::Arc<AtomicU64>,
    /// Grants made from escrow blocks, counted by the engine.
    pub escrow_grants: std::sync::Arc<AtomicU64>,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ClusterMetrics {
    pub fn count_fenced(&self) {
        add(&self.fenced_appends);
    }

    pub fn count_resend(&self) {
        add(&self.append_resends);
    }

    /// Appends every figure to `out`, with the tenure left as the lease keeper has it.
    pub fn render(&self, out: &mut String, tenure_left: std::time::Duration) {
        let node = escape(&self.node.lock());
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP hunt_cluster_partition_owner 1 for each partition this node owns.\n\
             # TYPE hunt_cluster_partition_owner gauge"
        );
        for p in self.owned.lock().iter() {
            let _ = writeln!(
                out,
                "hunt_cluster_partition_owner{{partition=\"{p}\",node=\"{node}\"}} 1"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hunt_cluster_partition_epoch The lease epoch of each partition this node holds: one more at every change of its owner.\n\
             # TYPE hunt_cluster_partition_epoch gauge"
        );
        for (p, e) in self.epochs.lock().iter() {
            let _ = writeln!(
                out,
                "hunt_cluster_partition_epoch{{partition=\"{p}\",node=\"{node}\"}} {e}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hunt_cluster_partitions The cluster's partitions, owned or not.\n\
             # TYPE hunt_cluster_partitions gauge\n\
             hunt_cluster_partitions{{node=\"{node}\"}} {}\n\
             # HELP hunt_cluster_lease_epoch The epoch of the leases this node holds; every takeover in the cluster raises it by one.\n\
             # TYPE hunt_cluster_lease_epoch gauge\n\
             hunt_cluster_lease_epoch{{node=\"{node}\"}} {}",
            get(&self.partitions),
            get(&self.epoch)
        );
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "hunt_cluster_lease_takeovers_total",
                "Times this node took the partitions' leases over.",
                &self.takeovers,
            ),
            (
                "hunt_cluster_fenced_appends_total",
                "Appends the stream refused because another owner had appended: this node was deposed.",
                &self.fenced_appends,
            ),
            (
                "hunt_cluster_append_resends_total",
                "Appends sent again, with the same message id, after no acknowledgement came.",
                &self.append_resends,
            ),
            (
                "hunt_cluster_forwarded_answered_total",
                "Requests that reached a standby and were answered here, by the owner.",
                &self.forwarded_answered,
            ),
            (
                "hunt_cluster_escrow_ops_total",
                "Reads and writes of the pools bucket: with hunt_cluster_escrow_grants_total, the KV operations per grant.",
                &self.escrow_ops,
            ),
            (
                "hunt_cluster_escrow_grants_total",
                "Codes granted from this node's partitions' escrow blocks.",
                &self.escrow_grants,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hunt_cluster_lease_renewals_total Lease renewals by result: confirmed, failed (no answer or no leader; tried again), refused (another node took the lease).\n\
             # TYPE hunt_cluster_lease_renewals_total counter"
        );
        for (result, c) in [
            ("confirmed", &self.renewals_confirmed),
            ("failed", &self.renewals_failed),
            ("refused", &self.renewals_refused),
        ] {
            let _ = writeln!(
                out,
                "hunt_cluster_lease_renewals_total{{node=\"{node}\",result=\"{result}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hunt_cluster_tenure_seconds How long this node may still answer without another confirmed renewal (0: it answers 503 lease_unconfirmed).\n\
             # TYPE hunt_cluster_tenure_seconds gauge\n\
             hunt_cluster_tenure_seconds{{node=\"{node}\"}} {}",
            tenure_left.as_secs_f64()
        );
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_with_the_node_and_each_owned_partition() {
        let m = ClusterMetrics::default();
        *m.node.lock() = "a\"1".into();
        *m.owned.lock() = vec![0, 1];
        m.count_fenced();
        m.renewals_confirmed.fetch_add(3, Ordering::Relaxed);
        m.partitions.store(8, Ordering::Relaxed);
        m.epoch.store(41, Ordering::Relaxed);
        m.epochs.lock().insert(1, 40);
        let mut out = String::new();
        m.render(&mut out, std::time::Duration::from_millis(1500));
        assert!(
            out.contains("hunt_cluster_partition_owner{partition=\"1\",node=\"a\\\"1\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("hunt_cluster_fenced_appends_total{node=\"a\\\"1\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("hunt_cluster_partitions{node=\"a\\\"1\"} 8"),
            "{out}"
        );
        assert!(
            out.contains("hunt_cluster_lease_epoch{node=\"a\\\"1\"} 41"),
            "{out}"
        );
        assert!(
            out.contains("hunt_cluster_partition_epoch{partition=\"1\",node=\"a\\\"1\"} 40"),
            "{out}"
        );
        assert!(
            out.contains(
                "hunt_cluster_lease_renewals_total{node=\"a\\\"1\",result=\"confirmed\"} 3"
            ),
            "{out}"
        );
        assert!(
            out.contains("hunt_cluster_tenure_seconds{node=\"a\\\"1\"} 1.5"),
            "{out}"
        );
    }
}
