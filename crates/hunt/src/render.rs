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
