//! One module per subcommand.

pub mod check;
pub mod gen_traffic;
pub mod schema;
pub mod simulate;
pub mod test;
