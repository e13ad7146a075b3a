//! `hunt cluster status`: what a cluster's buckets and stream say now — its nodes,
//! and for each partition its owner, lease and lag. It only reads: it takes no lease
//! and creates nothing.
//!
//! `hunt cluster drain NODE`: asks a node to give its partitions away before
//! maintenance, and waits until it owns none.

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
    /// Moves a node's partitions to other nodes before maintenance: the node finishes
    /// its rounds in flight, writes a snapshot, gives its leases up and stops; another
    /// node takes the partitions over. A standby asked to drain takes nothing over.
    Drain(DrainArgs),
}

/// Which cluster a tool reads.
#[derive(clap::Args)]
struct ClusterFlags {
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
}

#[derive(clap::Args)]
struct DrainArgs {
    /// The node's id (as `hunt cluster status` lists it).
    node: String,
    #[command(flatten)]
    at: ClusterFlags,
    /// Withdraw the request instead (a node that starts again withdraws it too).
    #[arg(long)]
    undo: bool,
    /// Drain even when no other live node could take the partitions over.
    #[arg(long)]
    force: bool,
    /// How long to wait for the node to own no partition.
    #[arg(long, default_value = "60s", value_parser = hunt_core::time::Duration::parse)]
    timeout: hunt_core::time::Duration,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    at: ClusterFlags,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct Status {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let args = match args.command {
        Sub::Status(a) => a,
        Sub::Drain(a) => return rt.block_on(drain(&a)),
    };
    let status = rt.block_on(status(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to an existing cluster as a tool: it creates nothing, and the checks
/// that guard the stream's writes do not apply.
async fn connect(urls: &[String], name: &str) -> anyhow::Result<Cluster> {
    let mut cfg = ClusterConfig::new(urls.to_vec(), name.to_string());
    cfg.create = false;
    cfg.replicas = 1;
    cfg.accept_lazy_fsync = true;
    Ok(Cluster::connect(&cfg).await?)
}

async fn drain(args: &DrainArgs) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.at.cluster, &args.at.cluster_name).await?;
    let Some(members) = Members::existing(&cluster).await? else {
        anyhow::bail!("no node has joined cluster {}", args.at.cluster_name);
    };
    if args.undo {
        members.clear_drain(&args.node).await?;
        println!("node {}: drain withdrawn", args.node);
        return Ok(ExitCode::SUCCESS);
    }
    let seen = members.read().await?;
    let Some(me) = seen.iter().find(|m| m.member.node == args.node) else {
        let known: Vec<&str> = seen.iter().map(|m| m.member.node.as_str()).collect();
        eprintln!(
            "error: no node {} has a heartbeat in cluster {} (nodes: {})",
            args.node,
            args.at.cluster_name,
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
        return Ok(ExitCode::from(2));
    };
    let others: Vec<&str> = seen
        .iter()
        .filter(|m| m.member.node != args.node && !m.member.draining)
        .map(|m| m.member.node.as_str())
        .collect();
    if !me.member.owned.is_empty() && others.is_empty() && !args.force {
        eprintln!(
            "error: node {} owns {} partition(s) and no other node that is not draining has a heartbeat: nobody would take them over. Start another node first, or give --force",
            args.node,
            me.member.owned.len()
        );
        return Ok(ExitCode::from(2));
    }
    members.request_drain(&args.node).await?;
    println!(
        "node {}: asked to drain ({} partition(s); other nodes: {})",
        args.node,
        me.member.owned.len(),
        if others.is_empty() {
            "none".into()
        } else {
            others.join(", ")
        }
    );
    let started = std::time::Instant::now();
    let limit = std::time::Duration::from_millis(args.timeout.0.max(0) as u64);
    loop {
        let seen = members.read().await?;
        let mine = seen.iter().find(|m| m.member.node == args.node);
        let owned = mine.map_or(0, |m| m.member.owned.len());
        let taken: usize = seen
            .iter()
            .filter(|m| m.member.node != args.node)
            .map(|m| m.member.owned.len())
            .sum();
        // Drained once it owns nothing and the others own every partition (or there
        // are no others, with --force).
        if owned == 0 && (others.is_empty() || taken >= cluster.partitions() as usize) {
            let owners: std::collections::BTreeSet<&str> = seen
                .iter()
                .filter(|m| !m.member.owned.is_empty())
                .map(|m| m.member.node.as_str())
                .collect();
            println!(
                "node {}: drained in {:.1} s ({}); partitions now owned by: {}",
                args.node,
                started.elapsed().as_secs_f64(),
                if mine.is_some() {
                    "still running"
                } else {
                    "stopped"
                },
                if owners.is_empty() {
                    "nobody yet".into()
                } else {
                    owners.into_iter().collect::<Vec<_>>().join(", ")
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > limit {
            eprintln!(
                "error: node {} still owns {owned} partition(s) after {:.0} s; the request stands (withdraw it with --undo)",
                args.node,
                limit.as_secs_f64()
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn status(args: &StatusArgs) -> anyhow::Result<Status> {
    let cluster = connect(&args.at.cluster, &args.at.cluster_name).await?;
    read_status(&cluster).await
}

/// What a cluster's buckets and stream say now (it only reads).
pub async fn read_status(cluster: &Cluster) -> anyhow::Result<Status> {
    let cluster = cluster.clone();
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
    let name = cluster.name().to_string();
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
        cluster: name,
        stream,
        partitions,
        nodes,
        owners,
    })
}

/// The cluster's status for the dashboard (`GET /v1/cluster`), read by the node over
/// its own connection.
pub struct NodeView(pub Cluster);

impl hunt_server::cluster_status::ClusterView for NodeView {
    fn status(
        &self,
    ) -> hunt_server::escrow::BoxFuture<
        '_,
        Result<hunt_server::cluster_status::ClusterStatus, String>,
    > {
        use hunt_server::cluster_status::{ClusterNode, ClusterPartition, ClusterStatus};
        Box::pin(async move {
            let s = read_status(&self.0).await.map_err(|e| e.to_string())?;
            Ok(ClusterStatus {
                nodes: s
                    .nodes
                    .into_iter()
                    .map(|n| ClusterNode {
                        node: n.node,
                        http: n.http,
                        owned: n.owned,
                        draining: n.draining,
                        beat_age_ms: n.beat_age_ms,
                    })
                    .collect(),
                partitions: s
                    .owners
                    .into_iter()
                    .map(|p| ClusterPartition {
                        partition: p.partition,
                        owner: p.owner,
                        epoch: p.epoch,
                        renewed_age_ms: p.renewed_age_ms,
                        end: p.end,
                        lag: p.lag,
                    })
                    .collect(),
            })
        })
    }
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
