//! `hunt serve`: the engine as an HTTP service on the embedded store.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;

use hunt_core::ingest::Limits;
use hunt_core::time::Duration;
use hunt_server::auth::Keys;
use hunt_server::http::{HttpConfig, RATE_PER_USER_DEFAULT};
use hunt_server::server::{ServeConfig, signals};
use hunt_server::service::{
    BACKLOG_EVENTS_DEFAULT, DEDUPE_ENTRIES_DEFAULT, EngineConfig, PARTITIONS_DEFAULT, ProvidedLog,
    SNAPSHOT_EVERY_DEFAULT,
};
use hunt_server::state::DedupeConfig;

use crate::cmd::cluster_node::{self, ClusterArgs};
use crate::cmd::forward::{Standby, serve_forwarded};
use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// The hunts file that starts an empty data directory (or a new cluster); without
    /// it, an empty one starts with the embedded example (welcome.yaml). On a data
    /// directory with a version in force, a different file is not applied (a warning
    /// says so) unless --apply-config is given.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Put the --config file in force even though the data directory has a version in
    /// force: it is recorded as a new version, checked as `PUT /v1/config` would be.
    /// Not on a cluster, where `PUT /v1/config` changes the version.
    #[arg(long, requires = "config", conflicts_with = "cluster")]
    apply_config: bool,
    /// Where the event log and snapshots live.
    #[arg(long, value_name = "DIR", default_value = "hunt-data")]
    data: PathBuf,
    /// Address to listen on. Without API keys only a loopback address is allowed.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// API keys file: one `<name> <role>[,<role>…] <secret>` per line. Or set
    /// HUNT_API_KEYS to the same text (lines or `;`-separated).
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Partition workers (customers are spread over them by a hash of their id). On a
    /// cluster, fixed when it is created (default there: 64) and read from it after.
    #[arg(long)]
    partitions: Option<usize>,
    /// How long an `(user, id)` is remembered as a duplicate: 90s, 30m, 24h…
    #[arg(long, default_value = "24h")]
    dedupe_window: String,
    /// The most events remembered for duplicates (over all partitions); when the
    /// window is full of unexpired events, new ones get 503.
    #[arg(long, default_value_t = DEDUPE_ENTRIES_DEFAULT)]
    dedupe_max: usize,
    /// The most events queued for the partitions; beyond it requests get 503.
    #[arg(long, default_value_t = BACKLOG_EVENTS_DEFAULT)]
    backlog_max: usize,
    /// Events per second per API key (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate_per_key: u32,
    /// Events per second per customer (0: no limit).
    #[arg(long, default_value_t = RATE_PER_USER_DEFAULT)]
    rate_per_user: u32,
    /// Time for a request's headers to arrive, and the longest a kept-alive connection
    /// may wait idle for its next request: 20s, 1m…
    #[arg(long, default_value = "20s")]
    header_timeout: String,
    /// Time for a whole request body to arrive (408 `body_timeout` past it).
    #[arg(long, default_value = "30s")]
    body_timeout: String,
    /// Connections open at once; past it a new one gets 503 `too_many_connections`.
    /// Lowered, with a warning, to fit under the file-descriptor limit.
    #[arg(long, default_value_t = hunt_server::http::conn::CONNECTIONS_MAX_DEFAULT)]
    max_connections: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = Limits::default().body_bytes_max)]
    max_body_bytes: usize,
    /// Most events in one request.
    #[arg(long, default_value_t = Limits::default().events_max)]
    max_events: usize,
    /// Largest `data` of one event, in bytes of JSON.
    #[arg(long, default_value_t = Limits::default().data_bytes_max)]
    max_data_bytes: usize,
    /// Deepest nesting in `data` and `traits`.
    #[arg(long, default_value_t = Limits::default().depth_max)]
    max_depth: usize,
    /// Longest string in an event, in bytes.
    #[arg(long, default_value_t = Limits::default().string_bytes_max)]
    max_string_bytes: usize,
    /// Take a snapshot after this many accepted events (and at shutdown).
    #[arg(long, default_value_t = SNAPSHOT_EVERY_DEFAULT)]
    snapshot_every: u64,
    /// Open a damaged log by moving the damaged part aside (reported) instead of
    /// refusing to start.
    #[arg(long)]
    repair: bool,
    /// Alert rules and the alert webhook (YAML; see docs/alerts.md). Without it the
    /// default rules apply.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// The most deliveries one sink may have waiting; past it new ones go straight to
    /// the dead-letter queue, saying why.
    #[arg(long, default_value_t = hunt_server::notify::deliver::SINK_QUEUE_MAX_DEFAULT)]
    sink_queue_max: usize,
    /// The most dead letters one sink keeps; past it the oldest are evicted, saying so
    /// in the log and in hunt_sink_deliveries_total{result="evicted"}.
    #[arg(long, default_value_t = hunt_server::notify::deliver::SINK_DLQ_MAX_DEFAULT)]
    sink_dlq_max: usize,
    /// Log lines as JSON (one object per line) instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn keys(args: &Args) -> anyhow::Result<Keys> {
    if let Some(path) = &args.keys {
        let text = render::read_text(path)?;
        return Keys::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg);
    }
    match std::env::var("HUNT_API_KEYS") {
        Ok(v) => Keys::parse(&v.replace(';', "\n"), "HUNT_API_KEYS").map_err(anyhow::Error::msg),
        Err(_) => Ok(Keys::default()),
    }
}

/// A timeout flag: a positive duration (`20s`, `1m`).
fn timeout(text: &str, flag: &str) -> anyhow::Result<std::time::Duration> {
    let d = Duration::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    anyhow::ensure!(d.0 > 0, "{flag}: {text} is not a positive duration");
    Ok(std::time::Duration::from_millis(d.0 as u64))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logs(args.log_json);
    let window = Duration::parse(&args.dedupe_window)
        .map_err(|e| anyhow::anyhow!("--dedupe-window: {e}"))?;
    let hunts = match &args.config {
        Some(p) => Some((p.display().to_string(), render::read_text(p)?)),
        None => None,
    };
    let mut engine = EngineConfig::new(&args.data);
    engine.partitions = args.partitions.unwrap_or(PARTITIONS_DEFAULT);
    engine.dedupe = DedupeConfig {
        window,
        entries_max: args.dedupe_max,
    };
    engine.backlog_events_max = args.backlog_max;
    engine.snapshot_every_events = args.snapshot_every;
    engine.repair = args.repair;
    engine.sink_queue_max = args.sink_queue_max;
    engine.sink_dlq_max = args.sink_dlq_max;
    engine.apply_hunts_file = args.apply_config;
    engine.starter_hunts = Some((
        "welcome.yaml (the embedded example)".to_string(),
        crate::cmd::EXAMPLE_HUNTS.to_string(),
    ));
    let alerts = match &args.alerts {
        Some(p) => Some(
            hunt_server::alerts::AlertsConfig::parse(&render::read_text(p)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let http = HttpConfig {
        limits: Limits {
            body_bytes_max: args.max_body_bytes,
            events_max: args.max_events,
            data_bytes_max: args.max_data_bytes,
            depth_max: args.max_depth,
            string_bytes_max: args.max_string_bytes,
        },
        keys: keys(&args)?,
        rate_per_key: NonZeroU32::new(args.rate_per_key),
        rate_per_user: NonZeroU32::new(args.rate_per_user),
        conn: hunt_server::http::conn::ConnLimits {
            header_timeout: timeout(&args.header_timeout, "--header-timeout")?,
            body_timeout: timeout(&args.body_timeout, "--body-timeout")?,
            connections_max: args.max_connections,
        },
    };
    let mut config = ServeConfig {
        listen: args.listen,
        engine,
        http,
        hunts,
        alerts,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (mut lost, mut release, mut forwarded) = (None, None, None);
        let mut drained = None::<tokio::sync::watch::Receiver<bool>>;
        let mut beating = None::<cluster_node::Heartbeat>;
        // Bound before the cluster is joined: a standby answers on it at once.
        let bound = std::net::TcpListener::bind(config.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        // A node sharing the partitions: what starts its loop once the engine runs,
        // and what its stop gives back first.
        let mut prepared = None::<(
            crate::cmd::cluster_spread::Prepared,
            tokio::sync::watch::Receiver<bool>,
        )>;
        let mut spread_lost = None::<tokio::sync::oneshot::Sender<String>>;
        let leaving = std::sync::Arc::new(Leaving::default());
        let mut joining = if args.cluster.enabled() {
            hunt_server::server::check_exposure(&bound.local_addr()?, &config.http)
                .map_err(anyhow::Error::msg)?;
            cluster_node::check_forwarding_exposure(&args.cluster.cluster, &config.http)?;
            let joined =
                cluster_node::join(&args.cluster, args.partitions.map(|p| p as u32)).await?;
            let heartbeat = cluster_node::Heartbeat::start(&joined, bound.local_addr()?.to_string());
            Some((joined, heartbeat))
        } else {
            None
        };
        if let Some((joined, heartbeat)) = joining.take_if(|_| args.cluster.spread) {
            let mut p = crate::cmd::cluster_spread::prepare(joined).await?;
            heartbeat.owns(&p.log);
            heartbeat.drains_follow_requests();
            config.engine.data_dir = args
                .data
                .join(format!("cluster-{}", args.cluster.cluster_name));
            config.engine.partitions = p.partitions as usize;
            config.engine.provided_log = p.provided.take();
            config.engine.spread = p.routing.take();
            config.validate().map_err(anyhow::Error::msg)?;
            prepared = Some((p, heartbeat.draining()));
            *leaving.heartbeat.lock() = Some(heartbeat);
            let (tx, rx) = tokio::sync::oneshot::channel();
            (lost, spread_lost) = (Some(rx), Some(tx));
        } else if let Some((joined, heartbeat)) = joining {
            let (client, subject) = (joined.cluster.client(), joined.cluster.forward_subject());
            let standby = Standby::start(
                tokio::net::TcpListener::from_std(bound.try_clone()?)?,
                client.clone(),
                subject.clone(),
                // The owner applies each route's own limit; a standby lets the
                // largest through (a hunts file for PUT /v1/config).
                config
                    .http
                    .limits
                    .body_bytes_max
                    .max(hunt_server::http::CONFIG_BYTES_MAX),
            );
            tracing::info!(
                addr = %bound.local_addr()?,
                "listening as a standby: requests are forwarded to the owner"
            );
            let o = tokio::select! {
                o = cluster_node::become_owner(joined, heartbeat.draining()) => o,
                () = signals() => {
                    standby.stop().await;
                    heartbeat.stop().await;
                    tracing::info!("stopped cleanly (a standby)");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            standby.stop().await;
            let o = o?;
            heartbeat.owns(&o.log);
            drained = Some(heartbeat.draining());
            beating = Some(heartbeat);
            // The data directory keeps only the lock that keeps a second process off it:
            // the log and the snapshots are the cluster's.
            config.engine.data_dir = args
                .data
                .join(format!("cluster-{}", args.cluster.cluster_name));
            config.engine.partitions = o.partitions as usize;
            let snapshots = std::sync::Arc::new(o.snapshots);
            config.engine.provided_log = Some(ProvidedLog {
                log: std::sync::Arc::new(o.log.clone()),
                name: format!("JetStream stream {}", o.log.cluster().stream()),
                snapshots: Some(snapshots.clone()),
                part_snapshots: Some(snapshots),
                tenure: Some(o.tenure.clone()),
                metrics: Some(std::sync::Arc::new(cluster_node::NodeMetrics {
                    cluster: o.log.cluster().metrics().clone(),
                    tenure: o.tenure,
                })),
                escrow: Some(o.escrow.clone()),
                escrow_grants: o.log.cluster().metrics().escrow_grants.clone(),
                cluster_view: Some(std::sync::Arc::new(super::cluster::NodeView(
                    o.log.cluster().clone(),
                ))),
            });
            config.validate().map_err(anyhow::Error::msg)?;
            let counted = o.log.cluster().metrics().clone();
            (lost, release, forwarded) = (
                Some(o.lost),
                Some(o.release),
                Some((client, subject, counted)),
            );
        }
        let deposed = std::sync::Arc::new(parking_lot::Mutex::new(None::<String>));
        // The owner's answering of forwarded requests holds the server's routes, and
        // through them the log: it stops when the stop begins, so that the log closes.
        let responder = std::sync::Arc::new(parking_lot::Mutex::new(
            None::<tokio::task::AbortHandle>,
        ));
        let stop = {
            let deposed = deposed.clone();
            let stop_answering = StopAnswering(responder.clone());
            let leaving = leaving.clone();
            async move {
                let _stop_answering = stop_answering;
                match lost {
                    Some(lost) => tokio::select! {
                        () = signals() => {}
                        why = lost => {
                            let why = why.unwrap_or_else(|_| "the lease keeper stopped".into());
                            tracing::error!(reason = %why, "lost the cluster's partitions: stopping");
                            *deposed.lock() = Some(why);
                        }
                        () = drain_asked(drained) => {
                            tracing::info!("drained: stopping cleanly, and giving every lease up for a standby to take over");
                        }
                    },
                    None => signals().await,
                }
                // A node sharing the partitions leaves: its key first, so that no node
                // assigns it anything, then every partition it holds, handed over while
                // it still routes requests.
                leaving.leave().await;
            }
        };
        let listener = tokio::net::TcpListener::from_std(bound)?;
        let addr = listener.local_addr()?;
        if config.http.keys.is_empty() {
            tracing::warn!(
                "no API keys: development mode, every endpoint open, on loopback only ({addr})"
            );
        } else {
            tracing::info!(keys = config.http.keys.len(), "API keys loaded");
        }
        tracing::info!(
            %addr,
            data = %config.engine.data_dir.display(),
            partitions = config.engine.partitions,
            log = config.engine.provided_log.as_ref().map_or("local", |p| p.name.as_str()),
            "listening"
        );
        let mut served = match hunt_server::server::start(config, listener).await {
            Ok(running) => {
                // The owner answers what reached the standbys.
                if let (Some((client, subject, counted)), Some(routes)) =
                    (forwarded, running.routes())
                {
                    let task = tokio::spawn(async move {
                        if let Err(e) = serve_forwarded(client, subject, routes, counted).await {
                            tracing::error!(error = %e, "cannot answer requests forwarded by standbys");
                        }
                    });
                    *responder.lock() = Some(task.abort_handle());
                }
                if let (Some((p, draining)), Some(tx)) = (prepared.take(), spread_lost.take()) {
                    // Once the engine runs, the loop takes this node's partitions; a
                    // lease lost, or a loop that cannot start, stops the node.
                    let ready = running.when_ready();
                    let leaving = leaving.clone();
                    tokio::spawn(async move {
                        let Some(service) = ready.await else { return };
                        match p.start(&service, draining).await {
                            Ok(mut spread) => {
                                let lost = spread.lost();
                                *leaving.spread.lock().await = Some(spread);
                                tracing::info!(
                                    "sharing the partitions with the cluster's live nodes"
                                );
                                if let Some(lost) = lost
                                    && let Ok(why) = lost.await
                                {
                                    let _ = tx.send(why);
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(format!("the partitions' loop did not start: {e}"));
                            }
                        }
                    });
                }
                running.run_until(stop).await
            }
            Err(e) => Err(e),
        };
        if let Some(why) = deposed.lock().take() {
            // Not ours any more: nothing to give back, and not a clean stop.
            served = served.and(Err(format!("lost the cluster's partitions: {why}")));
        } else if let Some(release) = release {
            let (done, wait) = tokio::sync::oneshot::channel();
            if release.send(done).await.is_ok() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
            }
        }
        if let Some(heartbeat) = beating {
            heartbeat.stop().await;
        }
        match served {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// What a node sharing the partitions gives back when it stops.
#[derive(Default)]
struct Leaving {
    heartbeat: parking_lot::Mutex<Option<cluster_node::Heartbeat>>,
    spread: tokio::sync::Mutex<Option<crate::cmd::cluster_spread::Spread>>,
}

impl Leaving {
    async fn leave(&self) {
        let heartbeat = self.heartbeat.lock().take();
        if let Some(h) = heartbeat {
            h.stop().await;
        }
        let spread = self.spread.lock().await.take();
        if let Some(s) = spread {
            tracing::info!("giving every partition to the other nodes before stopping");
            s.stop(std::time::Duration::from_secs(30)).await;
        }
    }
}

/// Resolves when the node is asked to drain (never without a cluster).
async fn drain_asked(drained: Option<tokio::sync::watch::Receiver<bool>>) {
    match drained {
        Some(mut d) => {
            if d.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Aborts the answering of forwarded requests when dropped (when the stop begins).
struct StopAnswering(std::sync::Arc<parking_lot::Mutex<Option<tokio::task::AbortHandle>>>);

impl Drop for StopAnswering {
    fn drop(&mut self) {
        if let Some(t) = self.0.lock().take() {
            t.abort();
        }
    }
}

/// Structured logs on standard error; `RUST_LOG` picks the level (default `info`).
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (standard error closed, say, after the
        // process that read it went away) is dropped. Reporting it would go through
        // `eprintln!`, which panics on the same closed pipe and took down the task
        // that logged — once, the task that stops the server on SIGTERM.
        .log_internal_errors(false);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
