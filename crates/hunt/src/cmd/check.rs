//! `hunt check FILE…`: exits 2 when a file cannot be read (the check could not run),
//! else 1 when any file has an error, 0 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use hunt_core::catalog::Catalog;

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// Hunts files (YAML or JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print problems as JSON (one array for all files) instead of drawing them.
    #[arg(long)]
    json: bool,
    /// Recorded events (NDJSON, one event per line; `-` for standard input): warn of a
    /// condition that reads an `event.data` field no event of its type carries there.
    #[arg(long, value_name = "F.ndjson")]
    events: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shapes = match &args.events {
        None => None,
        Some(path) => {
            let mut shapes = hunt_core::shapes::EventShapes::default();
            match super::simulate::feed(path, |e| shapes.add(&e.kind, &e.data)) {
                Ok(bad) if bad > 0 && shapes.total() == 0 => {
                    eprintln!(
                        "error: no event could be read from {} ({bad} bad lines): nothing to check the conditions against",
                        path.display()
                    );
                    return Ok(ExitCode::from(2));
                }
                Ok(_) => Some((shapes, path.display().to_string())),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    let mut failed = false;
    let mut unreadable = false;
    let mut all_json = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let source = match render::read_text(path) {
            Ok(s) => s,
            Err(e) => {
                unreadable = true;
                if args.json {
                    all_json.push(serde_json::json!({"severity": "error", "file": name, "message": e.to_string()}));
                } else {
                    eprintln!("error: {e}");
                }
                continue;
            }
        };
        let (report, summary) = match Catalog::load(&name, &source) {
            Ok((c, mut report)) => {
                if let Some((shapes, given)) = &shapes {
                    let mut problems = std::mem::take(&mut report.problems);
                    problems.extend(shapes.unseen_fields(&c, given));
                    report = hunt_core::diag::Report::new(&name, report.source.clone(), problems);
                }
                let s = format!(
                    "{name}: ok — {} hunt(s), {} pool(s), {} sink(s), {} test case(s){}",
                    c.hunts.len(),
                    c.pools.len(),
                    c.sinks.len(),
                    c.tests.len(),
                    warnings(report.warnings())
                );
                (report, s)
            }
            Err(report) => {
                failed = true;
                let s = format!(
                    "{name}: {} error(s){}",
                    report.errors(),
                    warnings(report.warnings())
                );
                (report, s)
            }
        };
        if args.json {
            if let serde_json::Value::Array(items) = report.to_json() {
                all_json.extend(items);
            }
        } else {
            eprint!("{}", render::diagnostics(&report));
            out!("{summary}");
        }
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&all_json)?);
    }
    Ok(if unreadable {
        ExitCode::from(2)
    } else if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn warnings(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} warning(s)")
    }
}
