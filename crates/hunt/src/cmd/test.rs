//! `hunt test FILE`: runs the file's cases, pass/fail per case with a diff of outcomes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use hunt_core::catalog::Catalog;
use hunt_core::testing::{DiffLine, run_case};

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// The hunts file whose `tests` to run.
    file: PathBuf,
    /// Run only cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let source = render::read_text(&args.file)?;
    let catalog = match Catalog::load(&name, &source) {
        Ok((c, report)) => {
            eprint!("{}", render::diagnostics(&report));
            Arc::new(c)
        }
        Err(report) => {
            eprint!("{}", render::diagnostics(&report));
            eprintln!("{name}: {} error(s); no test was run", report.errors());
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(f) = &args.filter
        && !catalog.tests.is_empty()
        && !catalog.tests.iter().any(|c| c.name.contains(f.as_str()))
    {
        let names: Vec<&str> = catalog.tests.iter().map(|c| c.name.as_str()).collect();
        eprintln!(
            "error: no test case of {name} has {f:?} in its name; its cases: {}",
            names.join("; ")
        );
        return Ok(ExitCode::from(2));
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &catalog.tests {
        if args
            .filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        let before = catalog.condition_errors();
        let result = run_case(&catalog, case);
        let failed_here = condition_failures(&catalog, &before);
        if result.passed {
            passed += 1;
            out!("PASS  {}", result.name);
            continue;
        }
        failed += 1;
        out!("FAIL  {}", result.name);
        out!("      (- expected but not produced, + produced but not expected)");
        for line in &result.diff {
            match line {
                DiffLine::Same(s) => out!("        {s}"),
                DiffLine::Missing(s) => out!("      - {s}"),
                DiffLine::Unexpected(s) => out!("      + {s}"),
            }
        }
        for (hunt, what, source, n) in &failed_here {
            out!(
                "      why: in hunt {hunt}, the condition of {what} could not be evaluated {n} time(s) in this case, and counted as false:"
            );
            out!("             {source}");
            out!(
                "           (a field that is missing or of another type; `hunt simulate` counts these over recorded traffic)"
            );
        }
    }
    if catalog.tests.is_empty() {
        out!("{name} has no test cases");
    }
    out!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The conditions whose run-time failures grew since `before` (from
/// [`Catalog::condition_errors`]): (hunt, "step X" or "the audience", source, count).
fn condition_failures(
    catalog: &Catalog,
    before: &[(Arc<str>, Arc<str>, u64)],
) -> Vec<(String, String, String, u64)> {
    let was = |h: &str, c: &str| {
        before
            .iter()
            .find(|(bh, bc, _)| &**bh == h && &**bc == c)
            .map_or(0, |(_, _, n)| *n)
    };
    let mut out = Vec::new();
    for h in &catalog.hunts {
        if let Some(a) = &h.audience {
            let n = a.error_count() - was(&h.id, "audience");
            if n > 0 {
                out.push((
                    h.id.to_string(),
                    "the audience".to_string(),
                    a.source().to_string(),
                    n,
                ));
            }
        }
        for st in &h.steps {
            let n = st.when.error_count() - was(&h.id, &st.id);
            if n > 0 {
                out.push((
                    h.id.to_string(),
                    format!("step {}", st.id),
                    st.when.source().to_string(),
                    n,
                ));
            }
        }
    }
    out
}
