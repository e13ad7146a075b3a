//! `GET /v1/pools`: each reward pool's burn-down over the last 15 minutes, its grant
//! rate, and when it runs out — the forecast the `pool_runs_out_within` alert uses.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use hunt_core::time::Timestamp;
use schemars::JsonSchema;
use serde::Serialize;

use super::extract::{Authorized, Ready, role};
use super::{ApiError, App, Json};
use crate::history::SAMPLE_EVERY;
use crate::service::now;

/// `GET /v1/pools`.
#[derive(Serialize, JsonSchema)]
pub(super) struct PoolsAnswer {
    /// Seconds between two points of a burn-down.
    sample_every_s: u64,
    /// The pools of the hunts file version in force.
    pools: Vec<PoolView>,
    /// On a cluster whose partitions are spread over nodes: the nodes that did not
    /// answer in time, whose grants `remaining` lacks (absent when every node did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// One pool.
#[derive(Serialize, JsonSchema)]
pub(super) struct PoolView {
    pool: Arc<str>,
    /// Codes it holds.
    size: u64,
    /// Codes left now (on a cluster whose partitions are spread over nodes, as every
    /// node answered; the burn-down before it and the forecast are this node's view).
    remaining: u64,
    /// Hunts of the version in force rewarding from it.
    hunts: Vec<Arc<str>>,
    /// Codes left over the last 15 minutes, oldest first, ending now.
    burn_down: Vec<PoolPoint>,
    /// The forecast: `None` when no `pool_runs_out_within` rule applies to the pool.
    forecast: Option<PoolForecastView>,
}

/// Codes left at a moment.
#[derive(Serialize, JsonSchema)]
pub(super) struct PoolPoint {
    at: Timestamp,
    remaining: u64,
}

/// When a pool runs out at its recent grant rate, as the alert reads it.
#[derive(Serialize, JsonSchema)]
pub(super) struct PoolForecastView {
    /// The alert rule whose window is used.
    rule_window_s: f64,
    /// Codes granted per minute over the window (`None` until the window holds a
    /// tenth of its length of history with codes granted).
    grant_rate_per_min: Option<f64>,
    /// Seconds until the pool runs out at that rate.
    runs_out_in_s: Option<f64>,
    /// When that is.
    runs_out_at: Option<Timestamp>,
}

pub(super) async fn pools(
    State(app): State<Arc<App>>,
    _: Authorized<role::Read>,
    Ready(service): Ready,
) -> Result<Json<PoolsAnswer>, ApiError> {
    let samples = app.history.get().map(|h| h.samples()).unwrap_or_default();
    let v = service.version();
    let (wall, mono) = (now(), Instant::now());
    let figures = service.figures(&crate::route::Ask::default()).await;
    let pools = figures
        .pools
        .into_iter()
        .enumerate()
        .map(|(i, (pool, size, remaining))| {
            let mut burn_down: Vec<PoolPoint> = samples
                .iter()
                .filter_map(|s| {
                    let left = s.pools.iter().find(|(p, _)| *p == pool)?.1;
                    Some(PoolPoint {
                        at: s.reading.at,
                        remaining: left,
                    })
                })
                .collect();
            burn_down.push(PoolPoint {
                at: wall,
                remaining,
            });
            let forecast = app
                .alerts
                .get()
                .and_then(|a| a.pool_forecast(&pool, remaining, mono))
                .map(|f| PoolForecastView {
                    rule_window_s: f.window.as_secs_f64(),
                    grant_rate_per_min: f.rate_per_s.map(|r| r * 60.0),
                    runs_out_in_s: f.runs_out_in.map(|d| d.as_secs_f64()),
                    runs_out_at: f
                        .runs_out_in
                        .map(|d| Timestamp(wall.0.saturating_add(d.as_millis() as i64))),
                });
            let hunts = v
                .catalog()
                .hunts
                .iter()
                .filter(|h| h.reward.is_some_and(|r| r.pool == i))
                .map(|h| h.id.clone())
                .collect();
            PoolView {
                pool,
                size,
                remaining,
                hunts,
                burn_down,
                forecast,
            }
        })
        .collect();
    Ok(Json(PoolsAnswer {
        sample_every_s: SAMPLE_EVERY.as_secs(),
        pools,
        partial: figures.partial,
    }))
}
