//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod cluster;
pub mod cluster_node;
pub mod diff;
pub mod dlq;
pub mod forward;
pub mod gen_traffic;
pub mod replay;
pub mod schema;
pub mod serve;
pub mod simulate;
pub mod test;
