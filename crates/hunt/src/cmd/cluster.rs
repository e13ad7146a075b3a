//! `hunt cluster status`: what a cluster's buckets and stream say now — its nodes,
//! and for each partition its owner, lease and lag. It only reads: it takes no lease
//! and creates nothing.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use hunt_cluster::{Cluster, ClusterConfig, JetStreamLog, Leases, Members};
use serde::Serialize;

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// The cluster's nodes, and each partition's owner, lease and lag.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The cluster's NATS servers: their client URLs (nats://host:port).
    #[arg(
        long,
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        required = true
    )]
    cluster: Vec<String>,
    /// The cluster's name (its stream is HUNT_<name>).
    #[arg(long, default_value = "hunt")]
    cluster_name: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    cluster: String,
    stream: String,
    partitions: u32,
    nodes: Vec<NodeStatus>,
    owners: Vec<PartitionStatus>,
}

#[derive(Debug, Serialize)]
struct NodeStatus {
    node: String,
    http: String,
    owned: usize,
    draining: bool,
    /// Milliseconds since its last heartbeat, by this machine's clock against the
    /// node's (clocks of two machines may differ).
    beat_age_ms: i64,
}

#[derive(Debug, Serialize)]
struct PartitionStatus {
    partition: u32,
    /// `None`: never taken, or released.
    owner: Option<String>,
    epoch: u64,
    /// Milliseconds since the lease was last renewed, as `beat_age_ms`.
    renewed_age_ms: Option<i64>,
    /// The last sequence on the partition's subject.
    end: u64,
    /// The last sequence the owner holds, from its last heartbeat.
    position: Option<u64>,
    /// How far `position` is behind `end`, in stream sequence numbers (0: the owner
    /// holds the subject's last message).
    lag: Option<u64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Status(args) = args.command;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(status(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(args: &StatusArgs) -> anyhow::Result<Status> {
    let mut cfg = ClusterConfig::new(args.cluster.clone(), args.cluster_name.clone());
    // A reader writes nothing: the checks that guard writes do not apply.
    cfg.create = false;
    cfg.replicas = 1;
    cfg.accept_lazy_fsync = true;
    let cluster = Cluster::connect(&cfg).await?;
    let partitions = cluster.partitions();
    let now = now_ms();
    let members = match Members::existing(&cluster).await? {
        Some(m) => m.read().await?,
        None => Vec::new(),
    };
    let positions: BTreeMap<u32, (String, u64)> = members
        .iter()
        .flat_map(|m| {
            m.member
                .positions
                .iter()
                .map(|(p, s)| (*p, (m.member.node.clone(), *s)))
        })
        .collect();
    let nodes = members
        .iter()
        .map(|m| NodeStatus {
            node: m.member.node.clone(),
            http: m.member.http.clone(),
            owned: m.member.owned.len(),
            draining: m.member.draining,
            beat_age_ms: now - m.member.beat_at_ms as i64,
        })
        .collect();
    let leases = Leases::existing(&cluster, "status").await?;
    let stream = cluster.stream().to_string();
    let log = JetStreamLog::new(cluster, tokio::runtime::Handle::current());
    let mut owners = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let seen = match &leases {
            Some(l) => Some(l.read(p).await?),
            None => None,
        };
        let owner = seen
            .as_ref()
            .and_then(|s| s.owner.clone())
            .filter(|o| !o.node.is_empty());
        let end = log.last_sequence(p).await?;
        // A position counts only if the lease's owner reported it.
        let position = match (&owner, positions.get(&p)) {
            (Some(o), Some((node, at))) if *node == o.node => Some(*at),
            _ => None,
        };
        owners.push(PartitionStatus {
            partition: p,
            epoch: owner.as_ref().map_or(0, |o| o.epoch),
            renewed_age_ms: owner.as_ref().map(|o| now - o.renewed_at_ms as i64),
            owner: owner.map(|o| o.node),
            end,
            position,
            lag: position.map(|at| end.saturating_sub(at)),
        });
    }
    Ok(Status {
        cluster: args.cluster_name.clone(),
        stream,
        partitions,
        nodes,
        owners,
    })
}

fn age(ms: i64) -> String {
    if ms < 0 {
        // The other machine's clock is ahead of this one's.
        "just now".into()
    } else {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    }
}

fn print_status(s: &Status) {
    println!(
        "cluster {}: stream {}, {} partitions, {} node(s) with a heartbeat",
        s.cluster,
        s.stream,
        s.partitions,
        s.nodes.len()
    );
    if s.nodes.is_empty() {
        println!("no node has a heartbeat: start one with `hunt serve --cluster …`");
    } else {
        let mut t = render::table(&["node", "http", "owns", "draining", "last heartbeat"]);
        for n in &s.nodes {
            t.add_row(vec![
                n.node.clone(),
                n.http.clone(),
                n.owned.to_string(),
                if n.draining { "yes" } else { "no" }.to_string(),
                age(n.beat_age_ms),
            ]);
        }
        println!("{t}");
    }
    let mut t = render::table(&["partition", "owner", "epoch", "lease renewed", "end", "lag"]);
    for p in &s.owners {
        t.add_row(vec![
            p.partition.to_string(),
            p.owner.clone().unwrap_or_else(|| "none".into()),
            p.epoch.to_string(),
            p.renewed_age_ms.map_or_else(|| "-".into(), age),
            p.end.to_string(),
            p.lag.map_or_else(|| "unknown".into(), |l| l.to_string()),
        ]);
    }
    println!("{t}");
}
