//! Drawing for the terminal: diagnostics (rustc-like, through miette) and tables.

use std::io::IsTerminal;

use hunt_core::diag::Report;

/// Draws every problem of a report to a string.
pub fn diagnostics(report: &Report) -> String {
    let theme = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    for d in report.diagnostics() {
        if handler.render_report(&mut out, &d).is_err() {
            // Drawing failed (it should not): fall back to one plain line.
            out.push_str(&format!(
                "{}:{}:{}: {}\n",
                d.file, d.at.line, d.at.column, d.problem.message
            ));
        }
    }
    out
}

/// A whole number with thousands separated by commas: `1,204,000`.
pub fn count(n: u64) -> String {
    hunt_core::diag::thousands(n)
}

/// The bar of a log being replayed up to record `last` (hidden when the log is empty);
/// set its position from the replay's progress.
pub fn replay_bar(last: u64) -> indicatif::ProgressBar {
    let bar = if last > 0 {
        indicatif::ProgressBar::new(last)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        progress_style(
            "{spinner} replaying [{bar:40}] {human_pos}/{human_len} records ({rate}, {eta} left)",
        )
        .progress_chars("=> "),
    );
    bar
}

/// A progress style from `template`, where `{rate}` is the items per second as a
/// whole number with separators (`104,363/s`, not indicatif's `104,363.0409/s`).
pub fn progress_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", count(state.per_sec().max(0.0) as u64));
            },
        )
}

/// A table in the house style.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(comfy_table::Cell::new));
    t
}

/// Reads a hunts file as text, naming the file in the error.
pub fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(104_363), "104,363");
        assert_eq!(count(1_204_000), "1,204,000");
    }
}
