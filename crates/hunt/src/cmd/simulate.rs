//! `hunt simulate FILE --events F.ndjson`: a recorded stream through the engine.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use hunt_core::catalog::Catalog;
use hunt_core::ingest;
use hunt_core::simulate::Simulation;

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// The hunts file.
    file: PathBuf,
    /// Recorded events, one JSON object per line (`-` for standard input).
    #[arg(long)]
    events: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Bad lines described individually; past this they are only counted.
const BAD_LINES_SHOWN_MAX: u64 = 10;
/// The longest line read, in bytes; longer ones are refused as bad lines.
const LINE_BYTES_MAX: usize = 1 << 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let source = render::read_text(&args.file)?;
    let catalog = match Catalog::load(&name, &source) {
        Ok((c, _)) => Arc::new(c),
        Err(report) => {
            eprint!("{}", render::diagnostics(&report));
            eprintln!(
                "{name}: {} error(s); nothing was simulated",
                report.errors()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let mut sim = Simulation::new(catalog.clone());
    let started = Instant::now();
    let bad = feed(&args.events, |e| {
        sim.apply(e);
    })?;
    let elapsed = started.elapsed();
    if args.json {
        print_json(&sim, bad, &catalog)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{} events ({} bad lines skipped), {} customers, {} outcomes in {:.2?} ({:.0} events/s)",
        sim.events,
        bad,
        sim.customers(),
        sim.outcomes,
        elapsed,
        sim.events as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    print_tables(&sim, &catalog)?;
    Ok(ExitCode::SUCCESS)
}

/// The recorded events (`-`: standard input) and their size, when known.
fn open_events(events: &Path) -> anyhow::Result<(Box<dyn Read>, u64)> {
    if events.as_os_str() == "-" {
        return Ok((Box::new(std::io::stdin().lock()), 0));
    }
    let f = std::fs::File::open(events)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", events.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((Box::new(f), len))
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = if len > 0 {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Gives every good line of `events` to `each`, with a progress bar; returns how many
/// lines were bad (each said, up to a few). `hunt check --events` reads them too.
pub fn feed(events: &Path, mut each: impl FnMut(&hunt_core::engine::Event)) -> anyhow::Result<u64> {
    let (input, len) = open_events(events)?;
    let bar = progress_bar(len);
    let limits = ingest::Limits::default();
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut line = String::new();
    let (mut line_no, mut bad, mut read_bytes) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_line(&mut line)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        read_bytes += n as u64;
        if line_no % 8192 == 0 {
            bar.set_position(read_bytes);
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = if n > LINE_BYTES_MAX {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            Err(format!("line is longer than {LINE_BYTES_MAX} bytes"))
        } else {
            // The same decoding and limits as the server's ingest.
            ingest::decode_event(text.as_bytes(), line_no as usize - 1, &limits)
                .map_err(|r| r.reason)
        };
        match parsed {
            Ok(e) => each(&e),
            Err(msg) => {
                bad += 1;
                if bad <= BAD_LINES_SHOWN_MAX {
                    bar.suspend(|| eprintln!("{}:{line_no}: skipped: {msg}", events.display()));
                }
            }
        }
    }
    bar.finish_and_clear();
    if bad > BAD_LINES_SHOWN_MAX {
        eprintln!("… {} more bad line(s) skipped", bad - BAD_LINES_SHOWN_MAX);
    }
    Ok(bad)
}

fn print_json(sim: &Simulation, bad: u64, catalog: &Catalog) -> anyhow::Result<()> {
    let report = serde_json::json!({
        "events": sim.events,
        "bad_lines": bad,
        "customers": sim.customers(),
        "outcomes": sim.outcomes,
        "hunts": sim.hunt_stats(),
        "pools": sim.pool_stats(),
        "condition_errors": catalog.condition_errors().iter()
            .map(|(h, c, n)| serde_json::json!({"hunt": h, "condition": c, "errors": n})).collect::<Vec<_>>(),
    });
    out!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The hunts, their funnels, the pools and the conditions that failed, as tables.
fn print_tables(sim: &Simulation, catalog: &Catalog) -> anyhow::Result<()> {
    let hunts = sim.hunt_stats();
    let mut t = render::table(&[
        "Hunt",
        "Participants",
        "Completions",
        "Rewards granted",
        "Denied",
        "Trails gone cold",
    ]);
    for h in &hunts {
        let denied = if h.rewards_denied.is_empty() {
            "-".to_string()
        } else {
            h.rewards_denied
                .iter()
                .map(|(r, n)| format!("{} {n}", r.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.add_row(vec![
            h.hunt.to_string(),
            h.participants.to_string(),
            h.completions.to_string(),
            h.rewards_granted.to_string(),
            denied,
            h.trails_gone_cold.to_string(),
        ]);
    }
    out!("{t}");
    let mut f = render::table(&["Hunt", "Step", "Found by", "% of participants"]);
    for h in &hunts {
        for (step, n) in &h.funnel {
            let pct = if h.participants == 0 {
                0.0
            } else {
                *n as f64 * 100.0 / h.participants as f64
            };
            f.add_row(vec![
                h.hunt.to_string(),
                step.to_string(),
                n.to_string(),
                format!("{pct:.1}"),
            ]);
        }
    }
    out!("{f}");
    let mut p = render::table(&["Pool", "Size", "Granted", "Ran out at"]);
    for pool in &sim.pool_stats() {
        p.add_row(vec![
            pool.pool.to_string(),
            pool.size.to_string(),
            pool.granted.to_string(),
            pool.ran_out_at.map_or("-".to_string(), |t| t.to_string()),
        ]);
    }
    out!("{p}");
    let errors = catalog.condition_errors();
    if !errors.is_empty() {
        let mut e = render::table(&["Hunt", "Condition", "Failed evaluations (counted false)"]);
        for (h, c, n) in errors {
            e.add_row(vec![h.to_string(), c.to_string(), n.to_string()]);
        }
        out!("{e}");
    }
    Ok(())
}
