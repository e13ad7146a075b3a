//! For the dashboard's overview and cluster pages: `GET /v1/overview` (throughput,
//! acknowledgement latency, the backlog and its time to drain, now and over the last
//! 15 minutes; the sinks; the alerts firing) and `GET /v1/cluster`.

use std::sync::Arc;

use axum::extract::State;
use hunt_core::time::Timestamp;
use schemars::JsonSchema;
use serde::Serialize;

use super::extract::{Authorized, Ready, role};
use super::{ApiError, App, Json};
use crate::alerts::{AlertState, Phase};
use crate::history::{self, Rates, Reading, SAMPLE_EVERY};
use crate::route::SinkCounts;
use crate::service::Service;

/// `GET /v1/overview`.
#[derive(Serialize, JsonSchema)]
pub(super) struct OverviewAnswer {
    /// Development mode: the server has no API keys, listens on loopback only, and
    /// every endpoint is open.
    development: bool,
    /// Whether the log is a cluster's (`hunt serve --cluster`).
    clustered: bool,
    /// The hunts file version in force.
    version: u64,
    /// Seconds between two points of `history`.
    sample_every_s: u64,
    /// Over the last `sample_every_s` seconds or so, up to this answer.
    now: Figures,
    /// Per partition, over the same span as `now`.
    partitions: Vec<PartitionFigures>,
    /// The last 15 minutes, oldest first: each point over the span since the one
    /// before. Empty for the first seconds after a start.
    history: Vec<Figures>,
    /// Each sink of the version in force (and any still delivering an older one's).
    sinks: Vec<SinkView>,
    /// The alerts firing now (all of them, with the rules: `GET /v1/alerts`). On a
    /// cluster whose partitions are spread over nodes, this node's: each node
    /// evaluates the rules, the pools' and dead letters' on the cluster's figures.
    alerts_firing: Vec<AlertState>,
    /// On a cluster whose partitions are spread over nodes, the figures are the
    /// cluster's, every node's summed; these nodes did not answer in time and are
    /// missing from `now`, `partitions` and `sinks` (absent when every node did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// Throughput, latency and backlog over a span.
#[derive(Serialize, JsonSchema)]
pub(super) struct Figures {
    /// The end of the span.
    at: Timestamp,
    /// Events accepted per second.
    events_per_s: f64,
    /// The median time from a post's arrival to its answer, in ms (`None`: no post
    /// was answered in the span).
    ack_p50_ms: Option<f64>,
    /// The 99th percentile of the same, in ms.
    ack_p99_ms: Option<f64>,
    /// Events queued for the partitions at the end of the span.
    backlog: u64,
    /// Seconds until the backlog is applied at the span's rate: 0 with nothing queued;
    /// `None` when events are queued and none was applied.
    time_to_drain_s: Option<f64>,
}

impl From<&Rates> for Figures {
    fn from(r: &Rates) -> Figures {
        Figures {
            at: r.at,
            events_per_s: r.events_per_s,
            ack_p50_ms: r.ack_p50_ms,
            ack_p99_ms: r.ack_p99_ms,
            backlog: r.backlog as u64,
            time_to_drain_s: r.time_to_drain_s,
        }
    }
}

/// One partition's queue.
#[derive(Serialize, JsonSchema)]
pub(super) struct PartitionFigures {
    partition: u32,
    /// Events queued, not yet applied.
    backlog: u64,
    /// Events applied per second over the span.
    applied_per_s: f64,
    /// Seconds until its queue is applied at that rate (`None`: queued, none applied).
    time_to_drain_s: Option<f64>,
}

/// A sink's health (on a cluster whose partitions are spread over nodes, every
/// node's delivery of it: counts summed, the worst breaker, the longest unhealthy).
#[derive(Serialize, JsonSchema)]
pub(super) struct SinkView {
    sink: Arc<str>,
    /// The circuit breaker: `closed` (delivering), `open` (deliveries wait) or
    /// `half_open` (one probe out).
    #[schemars(extend("enum" = ["closed", "open", "half_open"]))]
    breaker: &'static str,
    /// Seconds the breaker has been open or probing without closing.
    unhealthy_for_s: Option<f64>,
    /// Deliveries waiting, in flight included.
    queue: u64,
    /// Attempts under way.
    in_flight: u64,
    /// Deliveries in the dead-letter queue.
    dead_letters: u64,
    /// Deliveries made since the start.
    delivered: u64,
    /// Failed attempts since the start (each tried again later or dead-lettered).
    failed: u64,
}

/// The rates from the newest sample at least one sampling interval old (else the
/// oldest there is) to a reading taken now; the sinks now; the nodes that did not
/// answer.
async fn latest(app: &App, service: &Service) -> (Rates, Vec<Rates>, Vec<SinkView>, Vec<String>) {
    let bounds = service.metrics.ack_seconds.bounds();
    let (live, sinks, partial) = history::read(service).await;
    let samples = app.history.get().map(|h| h.samples()).unwrap_or_default();
    let base: Option<&Reading> = samples
        .iter()
        .rev()
        .map(|s| &s.reading)
        .find(|r| live.mono.saturating_duration_since(r.mono) >= SAMPLE_EVERY)
        .or_else(|| samples.first().map(|s| &s.reading));
    let now = history::rates(base.unwrap_or(&live), &live, bounds);
    let sinks = sinks.into_iter().map(SinkView::from).collect();
    (now, history::series(&samples, bounds), sinks, partial)
}

impl From<SinkCounts> for SinkView {
    fn from(s: SinkCounts) -> SinkView {
        SinkView {
            sink: s.sink,
            breaker: s.breaker.name(),
            unhealthy_for_s: s.unhealthy_for_s,
            queue: s.queue,
            in_flight: s.in_flight,
            dead_letters: s.dead_letters,
            delivered: s.delivered,
            failed: s.failed,
        }
    }
}

fn partitions(r: &Rates) -> Vec<PartitionFigures> {
    r.partitions
        .iter()
        .enumerate()
        .map(|(p, (queued, rate, drain))| PartitionFigures {
            partition: p as u32,
            backlog: *queued as u64,
            applied_per_s: *rate,
            time_to_drain_s: *drain,
        })
        .collect()
}

pub(super) async fn overview(
    State(app): State<Arc<App>>,
    _: Authorized<role::Read>,
    Ready(service): Ready,
) -> Result<Json<OverviewAnswer>, ApiError> {
    let (now, series, sinks, partial) = latest(&app, &service).await;
    let alerts_firing = app
        .alerts
        .get()
        .map(|a| {
            a.states()
                .into_iter()
                .filter(|s| s.state == Phase::Firing)
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(OverviewAnswer {
        development: app.http.keys.is_empty(),
        clustered: service.config.provided_log.is_some(),
        version: service.version().record.version,
        sample_every_s: SAMPLE_EVERY.as_secs(),
        partitions: partitions(&now),
        now: Figures::from(&now),
        history: series.iter().map(Figures::from).collect(),
        sinks,
        alerts_firing,
        partial,
    }))
}

/// `GET /v1/cluster`: what this node serves, and the whole cluster's nodes and
/// partitions.
#[derive(Serialize, JsonSchema)]
pub(super) struct ClusterAnswer {
    /// Whether the log is a cluster's (`hunt serve --cluster`); the other fields are
    /// empty when it is not.
    clustered: bool,
    /// The log this node serves from (e.g. `JetStream stream HUNT_shop`).
    log: Option<String>,
    /// Seconds left on this node's leases of its partitions (`None` without leases).
    lease_left_s: Option<f64>,
    /// The partitions and their queues: this node's, or on a cluster whose
    /// partitions are spread over nodes, each at its owner (gathered).
    partitions: Vec<PartitionFigures>,
    /// Every node with a heartbeat and each partition's owner and lag, as `hunt
    /// cluster status` reads them (`None` when not clustered or not read).
    status: Option<crate::cluster_status::ClusterStatus>,
    /// Why `status` could not be read, if it could not.
    status_error: Option<String>,
}

/// How long reading the cluster's status may take before the answer goes without it.
const CLUSTER_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) async fn cluster(
    State(app): State<Arc<App>>,
    _: Authorized<role::Read>,
    Ready(service): Ready,
) -> Result<Json<ClusterAnswer>, ApiError> {
    let Some(provided) = service.config.provided_log.as_ref() else {
        return Ok(Json(ClusterAnswer {
            clustered: false,
            log: None,
            lease_left_s: None,
            partitions: Vec::new(),
            status: None,
            status_error: None,
        }));
    };
    let (now, ..) = latest(&app, &service).await;
    let (status, status_error) = match &provided.cluster_view {
        Some(view) => match tokio::time::timeout(CLUSTER_STATUS_WAIT, view.status()).await {
            Ok(Ok(s)) => (Some(s), None),
            Ok(Err(e)) => (None, Some(e)),
            Err(_) => (
                None,
                Some(format!(
                    "the cluster's status was not read within {} s",
                    CLUSTER_STATUS_WAIT.as_secs()
                )),
            ),
        },
        None => (None, None),
    };
    Ok(Json(ClusterAnswer {
        clustered: true,
        log: Some(provided.name.clone()),
        lease_left_s: service
            .tenure()
            .map(|t| t.left_at(crate::tenure::Stamp::now()).as_secs_f64()),
        partitions: partitions(&now),
        status,
        status_error,
    }))
}
