//! The hunts file: `GET /v1/config` shows the version in force, `PUT /v1/config`
//! plans, checks and puts a new one in force.

use axum::body::Body;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, CONFIG_BYTES_MAX, Json};
use crate::service::{ConfigAnswer, ConfigOptions};
use hunt_core::time::Timestamp;

pub(super) async fn get_config(
    _: Authorized<role::Admin>,
    Ready(service): Ready,
) -> Result<Json<Value>, ApiError> {
    let v = service.version();
    Ok(Json(json!({
        "version": v.record.version,
        "name": v.record.name,
        "in_force_since": Timestamp(v.record.at),
        "hunts": v.catalog().hunts.len(),
        "pools": v.catalog().pools.len(),
        "text": v.record.text,
    })))
}

#[derive(Deserialize)]
pub(super) struct ConfigQuery {
    name: Option<String>,
    /// Say what the file would change, and to how many customers; switch nothing.
    #[serde(default)]
    dry_run: bool,
    /// Put it in force even if its own test cases fail.
    #[serde(default)]
    skip_tests: bool,
}

/// A plan as JSON: its changes (with the customers each touches, when counted), one line
/// per change for a person, and the refusals.
pub(super) fn plan_json(plan: &hunt_core::plan::Plan) -> Value {
    json!({
        "changes": plan.changes,
        "summary": plan.changes.iter().map(|c| c.describe()).collect::<Vec<_>>(),
        "refusals": plan.refusals,
        "customers": plan.customers,
    })
}

pub(super) async fn put_config(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<super::App>>,
    _: Authorized<role::Admin>,
    Params(q): Params<ConfigQuery>,
    Ready(service): Ready,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = super::extract::body_bytes(
        &headers,
        body,
        "a hunts file",
        CONFIG_BYTES_MAX,
        app.http.conn.body_timeout,
    )
    .await
    .and_then(|b| super::extract::decoded_body(&headers, b, "a hunts file", CONFIG_BYTES_MAX))?;
    let text = std::str::from_utf8(&bytes).map_err(ApiError::NotUtf8)?;
    let name = q.name.unwrap_or_else(|| "hunts.yaml".into());
    let options = ConfigOptions {
        dry_run: q.dry_run,
        skip_tests: q.skip_tests,
    };
    Ok(Json(
        match service.put_config(&name, text, options).await? {
            ConfigAnswer::Unchanged(r) => json!({
                "version": r.version,
                "name": r.name,
                "in_force_since": Timestamp(r.at),
                "unchanged": true,
            }),
            ConfigAnswer::Planned(plan) => {
                let mut body = plan_json(&plan);
                body["dry_run"] = json!(true);
                body["version_in_force"] = json!(service.version().record.version);
                body
            }
            ConfigAnswer::Switched(r, plan) => {
                let mut body = plan_json(&plan);
                body["version"] = json!(r.version);
                body["name"] = json!(r.name);
                body["in_force_since"] = json!(Timestamp(r.at));
                body
            }
        },
    ))
}
