//! `hunt replay --data DIR` (or `--cluster URL…`): reads the whole log, checks every
//! record, applies every event again with the version in force at it, and prints what
//! the projections hold. On a cluster it only reads: it takes no lease, creates
//! nothing, and may run while the nodes serve (it sees the stream as it was when each
//! message was read).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use comfy_table::Table;
use hunt_cluster::{Cluster, ClusterConfig, JetStreamLog, ObjectSnapshots};
use hunt_server::recover::Recovered;
use hunt_server::service::{DEDUPE_ENTRIES_DEFAULT, PARTITIONS_DEFAULT, lock_data_dir};
use hunt_server::state::{DedupeConfig, HuntCounters};
use hunt_store::fs::RealFs;
use hunt_store::{Log, LogConfig, PartitionLog, SnapshotStore, Snapshots};

#[derive(clap::Args)]
pub struct Args {
    /// The server's data directory (the server must be stopped).
    #[arg(long, value_name = "DIR", required_unless_present = "cluster")]
    data: Option<PathBuf>,
    /// Read a cluster's stream instead: its NATS servers' client URLs.
    #[arg(
        long,
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        conflicts_with = "data"
    )]
    cluster: Vec<String>,
    /// The cluster's name (its stream is HUNT_<name>).
    #[arg(long, default_value = "hunt", requires = "cluster")]
    cluster_name: String,
    /// Start from the newest snapshot instead of the first record.
    #[arg(long)]
    from_snapshot: bool,
    /// Print the totals as JSON.
    #[arg(long)]
    json: bool,
}

/// The log to replay, the snapshots it may start from, its partition count, and how
/// far it reaches (for the progress bar).
type Opened = (
    Box<dyn PartitionLog>,
    Option<Box<dyn SnapshotStore>>,
    usize,
    u64,
);

fn open_local(args: &Args, dir: &std::path::Path) -> anyhow::Result<(Opened, std::fs::File)> {
    if !dir.join("LOCK").exists() && std::fs::read_dir(dir).is_err() {
        anyhow::bail!("{} is not a data directory", dir.display());
    }
    let lock = lock_data_dir(dir).map_err(anyhow::Error::msg)?;
    let fs = Arc::new(RealFs);
    let (log, open) = Log::open(fs.clone(), LogConfig::new(dir))?;
    if let Some((seg, off, bytes)) = &open.torn_tail {
        eprintln!("note: cut a torn tail of {bytes} bytes off {seg} at offset {off}");
    }
    let snapshots: Option<Box<dyn SnapshotStore>> = if args.from_snapshot {
        Some(Box::new(Snapshots::open(fs, dir)?))
    } else {
        None
    };
    Ok((
        (Box::new(log), snapshots, PARTITIONS_DEFAULT, open.last_lsn),
        lock,
    ))
}

fn open_cluster(args: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<Opened> {
    let mut cfg = ClusterConfig::new(args.cluster.clone(), args.cluster_name.clone());
    // A reader writes nothing: the checks that guard writes do not apply.
    cfg.create = false;
    cfg.replicas = 1;
    cfg.accept_lazy_fsync = true;
    let cluster = rt.block_on(Cluster::connect(&cfg))?;
    let partitions = cluster.partitions() as usize;
    let snapshots: Option<Box<dyn SnapshotStore>> = if args.from_snapshot {
        match rt.block_on(ObjectSnapshots::existing(&cluster, rt.handle().clone()))? {
            Some(s) => Some(Box::new(s)),
            None => {
                eprintln!("note: the cluster has no snapshots yet; reading the whole stream");
                None
            }
        }
    } else {
        None
    };
    let log = JetStreamLog::new(cluster, rt.handle().clone());
    Ok((Box::new(log), snapshots, partitions, 0))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut _lock = None;
    let (log, snapshots, partitions, last) = match &args.data {
        Some(dir) => {
            let (opened, lock) = open_local(&args, dir)?;
            _lock = Some(lock);
            opened
        }
        None => open_cluster(&args, &rt)?,
    };
    let bar = crate::render::replay_bar(last);
    let dedupe = DedupeConfig {
        window: hunt_core::dedupe::WINDOW_DEFAULT,
        entries_max: DEDUPE_ENTRIES_DEFAULT,
    };
    let started = std::time::Instant::now();
    let result = hunt_server::recover::recover(
        &*log,
        snapshots.as_deref(),
        partitions,
        dedupe,
        &mut |lsn| {
            if lsn % 4096 == 0 {
                bar.set_position(lsn);
            }
        },
    );
    bar.finish_and_clear();
    let recovered = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the log does not replay: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let elapsed = started.elapsed();
    let r = &recovered.report;
    let customers: usize = recovered.states.iter().map(|s| s.users.len()).sum();
    let mut stats: Stats = Default::default();
    for s in &recovered.states {
        for (h, c) in &s.stats {
            stats.entry(h.clone()).or_default().add(c);
        }
    }
    let summary = Summary::of(&recovered, &stats, customers, elapsed);
    if args.json {
        print_json(&summary)?;
    } else {
        print_text(&summary)?;
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if r.mismatches > 0 {
        eprintln!(
            "error: {} event(s) give different outcomes when applied again; first: {}",
            r.mismatches,
            r.first_mismatch.as_deref().unwrap_or("")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

type Stats = std::collections::BTreeMap<Arc<str>, HuntCounters>;

/// What a replay found, for both of its forms.
struct Summary<'a> {
    r: &'a hunt_server::recover::Report,
    version: Option<&'a hunt_server::state::Version>,
    waiting: usize,
    dead: usize,
    stats: &'a Stats,
    customers: usize,
    elapsed: std::time::Duration,
}

impl<'a> Summary<'a> {
    fn of(
        recovered: &'a Recovered,
        stats: &'a Stats,
        customers: usize,
        elapsed: std::time::Duration,
    ) -> Summary<'a> {
        Summary {
            r: &recovered.report,
            version: recovered.version.as_ref(),
            waiting: recovered.outbox.pending().count(),
            dead: recovered.outbox.dead_letters().len(),
            stats,
            customers,
            elapsed,
        }
    }
}

fn print_json(s: &Summary) -> anyhow::Result<()> {
    let out = serde_json::json!({
        "records": s.r.records,
        "events": s.r.events,
        "config_versions": s.r.config_versions,
        "snapshot_lsn": s.r.snapshot_lsn,
        "last_lsn": s.r.last_lsn,
        "version_in_force": s.version.map(|v| v.record.version),
        "customers": s.customers,
        "mismatches": s.r.mismatches,
        "first_mismatch": s.r.first_mismatch,
        "hunts": s.stats,
        "deliveries_waiting": s.waiting,
        "dead_letters": s.dead,
        "delivery_changes": s.r.delivery_changes,
        "delivery_misfits": s.r.delivery_misfits,
        "seconds": s.elapsed.as_secs_f64(),
    });
    out!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_text(s: &Summary) -> anyhow::Result<()> {
    let Summary {
        r,
        version,
        waiting,
        dead,
        stats,
        customers,
        elapsed,
    } = *s;
    out!(
        "replayed {} records ({} events, {} hunts-file versions) in {:.2} s ({}/s); last LSN {}{}",
        crate::render::count(r.records),
        crate::render::count(r.events),
        r.config_versions,
        elapsed.as_secs_f64(),
        crate::render::count((r.records as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
        r.last_lsn,
        r.snapshot_lsn
            .map(|l| format!(", from the snapshot at LSN {l}"))
            .unwrap_or_default()
    );
    if let Some(v) = version {
        out!(
            "version in force: {} ({}); customers: {customers}",
            v.record.version,
            v.record.name
        );
        out!(
            "notifications: {waiting} deliveries waiting, {dead} dead letters ({} delivery changes read{})",
            r.delivery_changes,
            if r.delivery_misfits > 0 {
                format!(", {} that did not fit", r.delivery_misfits)
            } else {
                String::new()
            }
        );
    }
    let mut t = Table::new();
    t.set_header(vec![
        "hunt",
        "participants",
        "completions",
        "granted",
        "denied",
        "trails cold",
    ]);
    for (h, c) in stats {
        t.add_row(vec![
            h.to_string(),
            c.participants.to_string(),
            c.completions.to_string(),
            c.granted.to_string(),
            c.denied.values().sum::<u64>().to_string(),
            c.trails_gone_cold.to_string(),
        ]);
    }
    out!("{t}");
    if let Some(v) = version {
        let mut t = Table::new();
        t.set_header(vec!["pool", "size", "granted", "remaining"]);
        for (i, p) in v.catalog().pools.iter().enumerate() {
            let taken = v.pools.taken(i);
            t.add_row(vec![
                p.id.to_string(),
                p.size().to_string(),
                taken.to_string(),
                p.size().saturating_sub(taken).to_string(),
            ]);
        }
        out!("{t}");
    }
    Ok(())
}
