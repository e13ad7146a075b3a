//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod cluster;
pub mod cluster_node;
// Not started by `hunt serve` yet: the partitions' assignment (ADR 0015, step 4) will
// host and release partitions with it. Tested in its own module.
#[allow(dead_code)]
pub mod cluster_route;
pub mod cluster_spread;
pub mod diff;
pub mod dlq;
pub mod forward;
pub mod gen_traffic;
pub mod init;
pub mod replay;
pub mod schema;
pub mod serve;
pub mod simulate;
pub mod test;

/// The quick start's hunts file, built into the binary: what `hunt serve` starts with
/// when given none and none is in force, and what `hunt init` writes.
pub const EXAMPLE_HUNTS: &str = include_str!("../../../../examples/welcome.yaml");
