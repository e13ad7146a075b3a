//! The hunts in force: `GET /v1/hunts`, a hunt's stats and its winners.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Path;
use hunt_core::spec::Order;
use hunt_core::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, Json, WINNERS_LIMIT_MAX};
use crate::route::Ask;
use crate::service::now;
use crate::state::Version;

/// `GET /v1/hunts`: the hunts of the version in force.
#[derive(Serialize, JsonSchema)]
pub(super) struct HuntsAnswer {
    /// The hunts file version in force.
    version: u64,
    hunts: Vec<HuntSummary>,
}

/// One hunt of the version in force.
#[derive(Serialize, JsonSchema)]
pub(super) struct HuntSummary {
    id: Arc<str>,
    title: Option<String>,
    /// Whether the hunt's window holds the present moment.
    active_now: bool,
    /// Inclusive start, if any.
    from: Option<Timestamp>,
    /// Exclusive end, if any.
    until: Option<Timestamp>,
    /// `any` or `sequence`.
    #[schemars(extend("enum" = ["any", "sequence"]))]
    order: &'static str,
    /// Step ids in order.
    steps: Arc<[Arc<str>]>,
    /// Steps needed to complete.
    complete_after: u32,
    reward: Option<HuntReward>,
    max_winners: Option<u64>,
}

/// A hunt's reward.
#[derive(Serialize, JsonSchema)]
pub(super) struct HuntReward {
    pool: Arc<str>,
    per_user: u32,
}

pub(super) async fn get_hunts(
    _: Authorized<role::Read>,
    Ready(service): Ready,
) -> Result<Json<HuntsAnswer>, ApiError> {
    let v = service.version();
    let t = now();
    let hunts = v
        .catalog()
        .hunts
        .iter()
        .map(|h| HuntSummary {
            id: h.id.clone(),
            title: h.title.clone(),
            active_now: h.is_active(t),
            from: h.from,
            until: h.until,
            order: match h.order {
                Order::Any => "any",
                Order::Sequence => "sequence",
            },
            steps: h.step_ids.clone(),
            complete_after: h.complete_after,
            reward: h.reward.map(|r| HuntReward {
                pool: v.catalog().pools[r.pool].id.clone(),
                per_user: r.per_user,
            }),
            max_winners: h.max_winners,
        })
        .collect();
    Ok(Json(HuntsAnswer {
        version: v.record.version,
        hunts,
    }))
}

/// The hunt's index in the version in force.
fn hunt_index(v: &Version, id: &str) -> Result<usize, ApiError> {
    v.catalog()
        .hunt_index(id)
        .ok_or_else(|| ApiError::UnknownHunt {
            id: id.to_string(),
            version: v.record.version,
            hunts: v
                .catalog()
                .hunts
                .iter()
                .map(|h| &*h.id)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `GET /v1/hunts/{id}/stats`: a hunt's figures.
#[derive(Serialize, JsonSchema)]
pub(super) struct StatsAnswer {
    hunt: Arc<str>,
    /// Whether the hunt is in the version in force. A hunt a later version removed
    /// still answers (false), with the steps it was found by and no pool.
    in_force: bool,
    /// Customers who made progress.
    participants: u64,
    /// Finds per step, in step order (for a hunt no longer in force: the steps found,
    /// by id).
    funnel: Vec<FunnelStep>,
    completions: u64,
    rewards_granted: u64,
    /// Denials by reason (`pool_empty`, `winners_cap`, `per_user_limit`, `not_in_audience`).
    rewards_denied: BTreeMap<String, u64>,
    trails_gone_cold: u64,
    reward: Option<PoolFigures>,
    /// On a cluster whose partitions are spread over nodes: the nodes that did not
    /// answer in time, whose shares these figures lack (absent when every node did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// One step's finds.
#[derive(Serialize, JsonSchema)]
pub(super) struct FunnelStep {
    step: Arc<str>,
    found: u64,
}

/// The reward pool's codes.
#[derive(Serialize, JsonSchema)]
pub(super) struct PoolFigures {
    pool: Arc<str>,
    size: u64,
    remaining: u64,
}

pub(super) async fn get_hunt_stats(
    _: Authorized<role::Read>,
    Path(id): Path<String>,
    Ready(service): Ready,
) -> Result<Json<StatsAnswer>, ApiError> {
    let v = service.version();
    let figures = service.figures(&Ask::default()).await;
    let (stats, partial) = (figures.stats, figures.partial);
    let Ok(h) = hunt_index(&v, &id) else {
        // A hunt a later version removed: its customers keep what they found and won,
        // and its figures still answer, with the steps it was found by.
        let c = stats
            .get(id.as_str())
            .ok_or_else(|| hunt_index(&v, &id).unwrap_err())?;
        return Ok(Json(StatsAnswer {
            hunt: Arc::from(id.as_str()),
            in_force: false,
            participants: c.participants,
            funnel: c
                .found
                .iter()
                .map(|(s, n)| FunnelStep {
                    step: s.clone(),
                    found: *n,
                })
                .collect(),
            completions: c.completions,
            rewards_granted: c.granted,
            rewards_denied: c.denied.clone(),
            trails_gone_cold: c.trails_gone_cold,
            reward: None,
            partial,
        }));
    };
    let hunt = &v.catalog().hunts[h];
    let c = stats.get(&*hunt.id).cloned().unwrap_or_default();
    let reward = hunt.reward.map(|r| {
        let pool = &v.catalog().pools[r.pool];
        let remaining = figures.pools.get(r.pool).map_or(0, |(_, _, left)| *left);
        PoolFigures {
            pool: pool.id.clone(),
            size: pool.size(),
            remaining,
        }
    });
    Ok(Json(StatsAnswer {
        hunt: hunt.id.clone(),
        in_force: true,
        participants: c.participants,
        funnel: hunt
            .step_ids
            .iter()
            .map(|s| FunnelStep {
                step: s.clone(),
                found: c.found.get(s).copied().unwrap_or(0),
            })
            .collect(),
        completions: c.completions,
        rewards_granted: c.granted,
        rewards_denied: c.denied,
        trails_gone_cold: c.trails_gone_cold,
        reward,
        partial,
    }))
}

/// `GET /v1/hunts/{id}/winners`.
#[derive(Serialize, JsonSchema)]
pub(super) struct WinnersAnswer {
    hunt: String,
    /// Whether the hunt is in the version in force. A hunt a later version removed
    /// still has its winners, who keep their codes (false).
    in_force: bool,
    /// Winners in all.
    total: u64,
    /// The first `limit`, in order of their grant.
    winners: Vec<WinnerView>,
    /// On a cluster whose partitions are spread over nodes: the nodes that did not
    /// answer in time, whose winners are missing (absent when every node did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// One winner.
#[derive(Serialize, JsonSchema)]
pub(super) struct WinnerView {
    user: String,
    code: String,
    at: Timestamp,
}

/// `GET /v1/hunts/{id}/winners`' query. The limit is read as text, so that a bad one
/// gets `bad_limit`.
#[derive(Deserialize, JsonSchema)]
pub(super) struct WinnersQuery {
    /// How many winners to show: 1 to 10000, 100 if absent.
    #[schemars(with = "Option<u32>", range(min = 1, max = 10000))]
    limit: Option<String>,
}

pub(super) async fn get_hunt_winners(
    _: Authorized<role::Read>,
    Path(id): Path<String>,
    Params(q): Params<WinnersQuery>,
    Ready(service): Ready,
) -> Result<Json<WinnersAnswer>, ApiError> {
    let v = service.version();
    let limit = super::extract::limit(q.limit.as_deref(), 100, WINNERS_LIMIT_MAX)?;
    let ask = Ask {
        winners_of: Some((id.clone(), limit)),
        ..Ask::default()
    };
    let figures = service.figures(&ask).await;
    let (stats, winners, total) = (figures.stats, figures.winners, figures.winners_total);
    // A hunt a later version removed still has its winners, who keep their codes.
    let in_force = hunt_index(&v, &id).is_ok();
    if !in_force && !stats.contains_key(id.as_str()) {
        hunt_index(&v, &id)?;
    }
    let winners = winners
        .into_iter()
        .map(|w| WinnerView {
            user: w.user,
            code: w.code,
            at: w.at,
        })
        .collect();
    Ok(Json(WinnersAnswer {
        hunt: id,
        in_force,
        total,
        winners,
        partial: figures.partial,
    }))
}

/// `GET /v1/hunts/{id}/history`: a hunt's window and its figures over the last 15
/// minutes.
#[derive(Serialize, JsonSchema)]
pub(super) struct HuntHistoryAnswer {
    hunt: Arc<str>,
    /// Whether the hunt is in the version in force (a removed one keeps its history
    /// but has no window).
    in_force: bool,
    title: Option<String>,
    /// Whether the hunt's window holds the present moment.
    active_now: bool,
    /// Inclusive start, if any.
    from: Option<Timestamp>,
    /// Exclusive end, if any.
    until: Option<Timestamp>,
    /// The server's clock when it answered, for a countdown to `from` or `until`.
    server_time: Timestamp,
    /// Seconds between two points.
    sample_every_s: u64,
    /// Totals at each sample, oldest first (completions over time are the
    /// differences between points).
    points: Vec<HuntPoint>,
    /// From a customer's first step found to their completion (event time).
    time_to_complete: TimeToComplete,
    /// On a cluster whose partitions are spread over nodes, the points and the time to
    /// complete are every node's: these nodes did not answer in time for the time to
    /// complete (absent when every node did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial: Vec<String>,
}

/// How long customers took to complete the hunt, over its last completions whose
/// first find the partition's owner applied since it started or took the partition
/// (each partition keeps its last 512).
#[derive(Serialize, JsonSchema)]
pub(super) struct TimeToComplete {
    /// Completions measured.
    completions: u64,
    median_s: Option<f64>,
    p90_s: Option<f64>,
}

/// A hunt's totals at a moment.
#[derive(Serialize, JsonSchema)]
pub(super) struct HuntPoint {
    at: Timestamp,
    participants: u64,
    completions: u64,
    rewards_granted: u64,
}

pub(super) async fn get_hunt_history(
    axum::extract::State(app): axum::extract::State<Arc<super::App>>,
    _: Authorized<role::Read>,
    Path(id): Path<String>,
    Ready(service): Ready,
) -> Result<Json<HuntHistoryAnswer>, ApiError> {
    let v = service.version();
    let samples = app.history.get().map(|h| h.samples()).unwrap_or_default();
    let points: Vec<HuntPoint> = samples
        .iter()
        .map(|s| {
            let t = s.hunts.iter().find(|h| *h.hunt == *id);
            HuntPoint {
                at: s.reading.at,
                participants: t.map_or(0, |t| t.participants),
                completions: t.map_or(0, |t| t.completions),
                rewards_granted: t.map_or(0, |t| t.granted),
            }
        })
        .collect();
    let t = now();
    let (mut ms, partial) = service.completion_times(&id).await;
    let q =
        |ms: &mut Vec<i64>, q| crate::state::completion::quantile_ms(ms, q).map(|v| v as f64 / 1e3);
    let time_to_complete = TimeToComplete {
        completions: ms.len() as u64,
        median_s: q(&mut ms, 0.5),
        p90_s: q(&mut ms, 0.9),
    };
    let common = |hunt: Arc<str>, points| HuntHistoryAnswer {
        hunt,
        in_force: false,
        title: None,
        active_now: false,
        from: None,
        until: None,
        server_time: t,
        sample_every_s: crate::history::SAMPLE_EVERY.as_secs(),
        points,
        time_to_complete,
        partial,
    };
    let Ok(h) = hunt_index(&v, &id) else {
        // A hunt a later version removed answers once anyone took part in it.
        let seen = samples
            .iter()
            .any(|s| s.hunts.iter().any(|h| *h.hunt == *id));
        if !seen {
            let (stats, _, _) = service.stats(None).await;
            if !stats.contains_key(id.as_str()) {
                hunt_index(&v, &id)?;
            }
        }
        return Ok(Json(common(Arc::from(id.as_str()), points)));
    };
    let hunt = &v.catalog().hunts[h];
    Ok(Json(HuntHistoryAnswer {
        in_force: true,
        title: hunt.title.clone(),
        active_now: hunt.is_active(t),
        from: hunt.from,
        until: hunt.until,
        ..common(hunt.id.clone(), points)
    }))
}
