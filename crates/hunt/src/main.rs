//! The `hunt` command: check, test and simulate hunts files, print their schema,
//! generate traffic, serve the engine over HTTP and replay its log. Owns argument
//! parsing and presentation only; every decision is made by `hunt-core` and
//! `hunt-server`.
//!
//! What it owns: `cmd/`, one module per subcommand (check, test, simulate, diff,
//! schema, gen-traffic, serve, replay, dlq, bench), and `render.rs`, how diagnostics
//! and tables are shown.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Writes a line to standard output, returning the error (a closed pipe is not a crash).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod cmd;
mod render;

/// mimalloc rather than the system allocator: the server allocates per event (decoded
/// JSON, records, answers) from several threads, and glibc's malloc measured at ~20 %
/// of server CPU (docs/adr/0006).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Treasure Hunt Engine.
#[derive(Parser)]
#[command(name = "hunt", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a starter hunts file, with test cases, to edit.
    Init(cmd::init::Args),
    /// Check hunts files: every error and warning, with file:line:column and a hint.
    Check(cmd::check::Args),
    /// Run the test cases written in a hunts file.
    Test(cmd::test::Args),
    /// What a new hunts-file version changes, and how many customers each change touches.
    Diff(cmd::diff::Args),
    /// Run recorded events (NDJSON) through the engine in memory and report per hunt.
    Simulate(cmd::simulate::Args),
    /// Write realistic, seeded shopper traffic as NDJSON.
    GenTraffic(cmd::gen_traffic::Args),
    /// Print the JSON Schema of hunts files.
    Schema,
    /// Run the engine as an HTTP service, on the embedded store or a NATS JetStream
    /// cluster (--cluster).
    Serve(Box<cmd::serve::Args>),
    /// Verify the whole event log and rebuild the projections offline.
    Replay(cmd::replay::Args),
    /// The dead-letter queue of a running server: list, show, retry, drop.
    Dlq(cmd::dlq::Args),
    /// Load a running server with realistic traffic and report throughput and latency.
    Bench(cmd::bench::Args),
    /// A NATS JetStream cluster's nodes, partitions, owners, leases and lag.
    Cluster(cmd::cluster::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => cmd::init::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Test(a) => cmd::test::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::GenTraffic(a) => cmd::gen_traffic::run(a),
        Command::Schema => cmd::schema::run(),
        Command::Serve(a) => cmd::serve::run(*a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Dlq(a) => cmd::dlq::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Cluster(a) => cmd::cluster::run(a),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`hunt simulate … | head`): not an error of ours.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
