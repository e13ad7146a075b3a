//! The hunts in force: `GET /v1/hunts`, a hunt's stats and its winners.

use axum::extract::Path;
use hunt_core::spec::Order;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, Json, WINNERS_LIMIT_MAX};
use crate::service::now;
use crate::state::Version;

pub(super) async fn get_hunts(
    _: Authorized<role::Read>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let v = service.version();
    let t = now();
    let hunts: Vec<Value> = v
        .catalog()
        .hunts
        .iter()
        .map(|h| {
            json!({
                "id": h.id,
                "title": h.title,
                "active_now": h.is_active(t),
                "from": h.from,
                "until": h.until,
                "order": match h.order { Order::Any => "any", Order::Sequence => "sequence" },
                "steps": h.step_ids,
                "complete_after": h.complete_after,
                "reward": h.reward.map(|r| json!({"pool": v.catalog().pools[r.pool].id, "per_user": r.per_user})),
                "max_winners": h.max_winners,
            })
        })
        .collect();
    Ok(Json(json!({ "version": v.record.version, "hunts": hunts })))
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

pub(super) async fn get_hunt_stats(
    _: Authorized<role::Read>,
    Path(id): Path<String>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let v = service.version();
    let (stats, _, _) = service.stats(None).await;
    let Ok(h) = hunt_index(&v, &id) else {
        // A hunt a later version removed: its customers keep what they found and won,
        // and its figures still answer, with the steps it was found by.
        let c = stats
            .get(id.as_str())
            .ok_or_else(|| hunt_index(&v, &id).unwrap_err())?;
        return Ok(Json(json!({
            "hunt": id,
            "in_force": false,
            "participants": c.participants,
            "funnel": c.found.iter().map(|(s, n)| json!({"step": s, "found": n})).collect::<Vec<_>>(),
            "completions": c.completions,
            "rewards_granted": c.granted,
            "rewards_denied": c.denied,
            "trails_gone_cold": c.trails_gone_cold,
            "reward": null,
        })));
    };
    let hunt = &v.catalog().hunts[h];
    let c = stats.get(&*hunt.id).cloned().unwrap_or_default();
    let reward = hunt.reward.map(|r| {
        let pool = &v.catalog().pools[r.pool];
        json!({
            "pool": pool.id,
            "size": pool.size(),
            "remaining": pool.size().saturating_sub(v.pools.taken(r.pool)),
        })
    });
    Ok(Json(json!({
        "hunt": hunt.id,
        "in_force": true,
        "participants": c.participants,
        "funnel": hunt.step_ids.iter().map(|s| json!({"step": s, "found": c.found.get(s).copied().unwrap_or(0)})).collect::<Vec<_>>(),
        "completions": c.completions,
        "rewards_granted": c.granted,
        "rewards_denied": c.denied,
        "trails_gone_cold": c.trails_gone_cold,
        "reward": reward,
    })))
}

#[derive(Deserialize)]
pub(super) struct WinnersQuery {
    limit: Option<String>,
}

pub(super) async fn get_hunt_winners(
    _: Authorized<role::Read>,
    Path(id): Path<String>,
    Params(q): Params<WinnersQuery>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let v = service.version();
    let limit = super::extract::limit(q.limit.as_deref(), 100, WINNERS_LIMIT_MAX)?;
    let (stats, winners, total) = service.stats(Some((&id, limit))).await;
    // A hunt a later version removed still has its winners, who keep their codes.
    let in_force = hunt_index(&v, &id).is_ok();
    if !in_force && !stats.contains_key(id.as_str()) {
        hunt_index(&v, &id)?;
    }
    let list: Vec<_> = winners
        .into_iter()
        .map(|w| json!({"user": w.user, "code": w.code, "at": w.at}))
        .collect();
    Ok(Json(
        json!({ "hunt": id, "in_force": in_force, "total": total, "winners": list }),
    ))
}
