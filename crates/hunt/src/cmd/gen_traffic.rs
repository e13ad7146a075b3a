//! `hunt gen-traffic`: seeded shopper traffic as NDJSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use hunt_core::time::{Duration, Timestamp};
use hunt_core::traffic::{TrafficSpec, generate};

#[derive(clap::Args)]
pub struct Args {
    /// How many customers the traffic draws from. Some are far more active than others,
    /// so with few events per customer not all of them appear.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// How many events.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Seed: the same seed gives the same traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// When the first sessions start (RFC 3339).
    #[arg(long, default_value = "2026-11-27T08:00:00Z", value_parser = Timestamp::parse)]
    start: Timestamp,
    /// Over how long sessions start (e.g. 12h).
    #[arg(long, default_value = "12h", value_parser = Duration::parse)]
    span: Duration,
    /// Share of customers who are hunting (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    hunters: f64,
    /// Write here instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Also write the hunts file this traffic is made for (20 hunts × 5 steps, the one
    /// the benchmarks use) to this file.
    #[arg(long, value_name = "FILE")]
    hunts_file: Option<PathBuf>,
}

/// The most events one run generates (they are held in memory to sort by time).
const EVENTS_MAX: u64 = 50_000_000;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.users >= 1, "--users must be at least 1");
    anyhow::ensure!(
        args.events <= EVENTS_MAX,
        "--events must be at most {EVENTS_MAX}"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.hunters),
        "--hunters must be between 0 and 1"
    );
    let spec = TrafficSpec {
        users: args.users,
        events: args.events,
        seed: args.seed,
        start: args.start,
        span: args.span,
        hunters: args.hunters,
    };
    if let Some(p) = &args.hunts_file {
        std::fs::write(p, hunt_core::traffic::bench_hunts_file(20))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    // Drawn on standard error, and only on a terminal.
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "generating {} events",
        crate::render::count(args.events)
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let events = generate(&spec);
    spinner.finish_and_clear();
    let bar = indicatif::ProgressBar::new(events.len() as u64);
    bar.set_style(crate::render::progress_style(
        "writing [{bar:40}] {human_pos}/{human_len} events ({rate}, {eta} left)",
    ));
    let sink: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = std::io::BufWriter::new(sink);
    for (i, e) in events.iter().enumerate() {
        serde_json::to_writer(&mut w, e).map_err(std::io::Error::from)?;
        w.write_all(b"\n")?;
        if i % 4096 == 4095 {
            bar.inc(4096);
        }
    }
    w.flush()?;
    bar.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}
