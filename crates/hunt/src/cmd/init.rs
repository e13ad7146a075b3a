//! `hunt init [FILE]`: writes a starter hunts file, with its test cases, to edit.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write it (refused if it exists).
    #[arg(default_value = "hunts.yaml")]
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let f = &args.file;
    let mut out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f)
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "{} exists; nothing was written (give another name, or move it away)",
                f.display()
            )
        }
        Err(e) => anyhow::bail!("cannot create {}: {e}", f.display()),
    };
    std::io::Write::write_all(&mut out, crate::cmd::EXAMPLE_HUNTS.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?;
    let name = f.display();
    out!("wrote {name}: one hunt (three eggs to find), a pool of three codes, two test cases");
    out!("next:");
    out!("  hunt check {name}             every error and warning, with its line");
    out!("  hunt test {name}              run its test cases");
    out!("  hunt serve --config {name}    serve it on http://127.0.0.1:8080");
    out!("the file's format: docs/hunts-file.md, or `hunt schema` for its JSON Schema");
    Ok(ExitCode::SUCCESS)
}
