//! `hunt diff OLD NEW`: what a new hunts-file version changes, hunt by hunt and step by
//! step, and with `--data DIR` (server stopped) or `--server URL`, how many customers
//! each change touches. The rules it applies are `hunt_core::plan`'s, the same the
//! server's dry run (`PUT /v1/config?dry_run=true`) uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use hunt_core::catalog::Catalog;
use hunt_core::plan::{Plan, thousands};
use hunt_server::service::{DEDUPE_ENTRIES_DEFAULT, PARTITIONS_DEFAULT, lock_data_dir};
use hunt_server::state::DedupeConfig;
use hunt_store::fs::RealFs;
use hunt_store::{Log, LogConfig, Snapshots};
use serde_json::{Value, json};

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// The hunts file in force (or the one to compare from).
    old: PathBuf,
    /// The new version.
    new: PathBuf,
    /// Count the customers each change touches in this data directory (the server must
    /// be stopped).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data: Option<PathBuf>,
    /// Count them on a running server, by a dry run of the upload
    /// (`PUT /v1/config?dry_run=true`): nothing is switched.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// An admin API key for `--server` (or set HUNT_API_KEY).
    #[arg(long)]
    key: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// Loads a hunts file that must be valid; its errors are drawn and end the command.
fn load(path: &std::path::Path) -> anyhow::Result<Result<(Arc<Catalog>, String), String>> {
    let text = render::read_text(path)?;
    let name = path.display().to_string();
    Ok(match Catalog::load(&name, &text) {
        Ok((c, _)) => Ok((Arc::new(c), text)),
        Err(report) => Err(render::diagnostics(&report)),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (old, old_text) = match load(&args.old)? {
        Ok(c) => c,
        Err(d) => {
            eprint!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    let (new, new_text) = match load(&args.new)? {
        Ok(c) => c,
        Err(d) => {
            eprint!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut notes = Vec::new();
    let plan = if let Some(dir) = &args.data {
        let (plan, note) = plan_on_data(dir, &old, &old_text, &new)?;
        notes.extend(note);
        plan
    } else if let Some(url) = &args.server {
        let (plan, note) = plan_on_server(url, args.key.clone(), &old_text, &new_text)?;
        notes.extend(note);
        plan
    } else {
        Plan::new(&old, &new)
    };
    if args.json {
        let out = json!({
            "old": args.old.display().to_string(),
            "new": args.new.display().to_string(),
            "changes": plan.changes,
            "summary": plan.changes.iter().map(|c| c.describe()).collect::<Vec<_>>(),
            "refusals": plan.refusals,
            "customers": plan.customers,
            "notes": notes,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for n in &notes {
            out!("note: {n}");
        }
        print_plan(&plan, &args)?;
    }
    Ok(if plan.refusals.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_plan(plan: &Plan, args: &Args) -> anyhow::Result<()> {
    if plan.changes.is_empty() {
        out!(
            "{} and {} run the same hunts: nothing changes",
            args.old.display(),
            args.new.display()
        );
    } else {
        let counted = plan.customers.is_some();
        let mut header = vec!["change"];
        if counted {
            header.push("customers");
        }
        header.push("what it does to customers in progress");
        let mut t = render::table(&header);
        for c in &plan.changes {
            let mut row = vec![c.detail.clone()];
            if counted {
                row.push(c.customers.map_or("-".into(), thousands));
            }
            row.push(c.effect.clone());
            t.add_row(row);
        }
        out!("{t}");
        if counted {
            for c in plan.changes.iter().filter(|c| c.customers.unwrap_or(0) > 0) {
                out!("{}", c.describe());
            }
            if let Some(n) = plan.customers {
                let s = if n == 1 { "" } else { "s" };
                out!("({} customer{s} looked at)", thousands(n));
            }
        }
    }
    for r in &plan.refusals {
        out!("refused: {}", r.reason);
    }
    if !plan.refusals.is_empty() {
        out!("the new version cannot be put in force safely; the server would refuse it");
    }
    Ok(())
}

/// Counts on a stopped server's data: the log replayed, every customer laid out under
/// both versions.
fn plan_on_data(
    dir: &std::path::Path,
    old: &Catalog,
    old_text: &str,
    new: &Catalog,
) -> anyhow::Result<(Plan, Option<String>)> {
    if std::fs::read_dir(dir).is_err() {
        anyhow::bail!("{} is not a data directory", dir.display());
    }
    let _lock = lock_data_dir(dir).map_err(anyhow::Error::msg)?;
    let fs = Arc::new(RealFs);
    let (log, _) = Log::open(fs.clone(), LogConfig::new(dir))?;
    let snapshots = Snapshots::open(fs, dir)?;
    let dedupe = DedupeConfig {
        window: hunt_core::dedupe::WINDOW_DEFAULT,
        entries_max: DEDUPE_ENTRIES_DEFAULT,
    };
    let bar = crate::render::replay_bar(hunt_store::PartitionLog::durable(&log));
    let recovered = hunt_server::recover::recover(
        &log,
        Some(&snapshots),
        PARTITIONS_DEFAULT,
        dedupe,
        &mut |lsn| {
            if lsn % 4096 == 0 {
                bar.set_position(lsn);
            }
        },
    );
    bar.finish_and_clear();
    let recovered = recovered.map_err(|e| anyhow::anyhow!("the log does not replay: {e}"))?;
    let note = match &recovered.version {
        Some(v) if v.record.text != old_text => Some(format!(
            "the version in force in {} is {} ({}), not OLD: customers are counted against OLD",
            dir.display(),
            v.record.version,
            v.record.name
        )),
        None => Some(format!("{} holds no version yet", dir.display())),
        _ => None,
    };
    let mut plan = Plan::new(old, new);
    plan.customers = Some(0);
    for s in &recovered.states {
        for u in s.users.values() {
            plan.count(old, new, u);
        }
    }
    plan.check_grants(new, recovered.states.iter().flat_map(|s| s.grants()));
    Ok((plan, note))
}

/// Counts on a running server by a dry run of the upload.
fn plan_on_server(
    url: &str,
    key: Option<String>,
    old_text: &str,
    new_text: &str,
) -> anyhow::Result<(Plan, Option<String>)> {
    hunt_server::notify::install_tls_provider();
    let key = key.or_else(|| std::env::var("HUNT_API_KEY").ok());
    let base = url.trim_end_matches('/').to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let with_key = |r: reqwest::RequestBuilder| match &key {
            Some(k) => r.bearer_auth(k),
            None => r,
        };
        let call = |r: reqwest::RequestBuilder| async {
            let r = with_key(r)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the server at {base}: {e}"))?;
            let status = r.status().as_u16();
            let body: Value = serde_json::from_slice(&r.bytes().await?).unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        };
        let (status, current) = call(http.get(format!("{base}/v1/config"))).await?;
        if status != 200 {
            anyhow::bail!("the server answered {status} to GET /v1/config: {current}");
        }
        let note = (current["text"].as_str() != Some(old_text)).then(|| {
            format!(
                "the server's version in force is {}, not OLD: the plan is against it",
                current["version"]
            )
        });
        let (status, body) = call(
            http.put(format!("{base}/v1/config?dry_run=true&skip_tests=true"))
                .body(new_text.to_string()),
        )
        .await?;
        let plan_json = match status {
            200 => body,
            409 => body["error"]["details"].clone(),
            _ => anyhow::bail!("the server answered {status} to the dry run: {body}"),
        };
        Ok((plan_from_json(&plan_json)?, note))
    })
}

/// The server's plan, read back.
fn plan_from_json(v: &Value) -> anyhow::Result<Plan> {
    serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("the server's plan is not one this command reads: {e}"))
}
