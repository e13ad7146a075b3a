//! `hunt schema`: the JSON Schema of hunts files.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    out!(
        "{}",
        serde_json::to_string_pretty(&hunt_core::spec::json_schema())?
    );
    Ok(ExitCode::SUCCESS)
}
