//! The hunts file: `GET /v1/config` shows the version in force, `PUT /v1/config`
//! plans, checks and puts a new one in force.

use axum::body::Body;
use hunt_core::plan::{Change, Plan, Refusal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{Authorized, Params, Ready, role};
use super::{ApiError, CONFIG_BYTES_MAX, Json};
use crate::service::{ConfigAnswer, ConfigOptions};
use hunt_core::time::Timestamp;

/// `GET /v1/config`: the hunts file version in force.
#[derive(Serialize, JsonSchema)]
pub(super) struct ConfigView {
    version: u64,
    /// The file's name, as given when it was put in force.
    name: String,
    in_force_since: Timestamp,
    /// How many hunts it has.
    hunts: usize,
    /// How many pools it has.
    pools: usize,
    /// The file's text.
    text: String,
}

pub(super) async fn get_config(
    _: Authorized<role::Admin>,
    Ready(service): Ready,
) -> Result<Json<ConfigView>, ApiError> {
    let v = service.version();
    Ok(Json(ConfigView {
        version: v.record.version,
        name: v.record.name.to_string(),
        in_force_since: Timestamp(v.record.at),
        hunts: v.catalog().hunts.len(),
        pools: v.catalog().pools.len(),
        text: v.record.text.to_string(),
    }))
}

/// `PUT /v1/config`: what was done.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum PutConfigAnswer {
    /// The file is the version in force: nothing recorded.
    Unchanged {
        version: u64,
        name: String,
        in_force_since: Timestamp,
        /// Always `true`.
        unchanged: bool,
    },
    /// The new version, in force, and what it changed.
    Switched {
        #[serde(flatten)]
        plan: PlanView,
        version: u64,
        name: String,
        in_force_since: Timestamp,
        /// The partitions of the log. On a cluster each puts the version in force at
        /// a marker of its own, between two of its rounds.
        partitions: u32,
        /// Partitions that had not put it in force yet when this answer was given (on
        /// a cluster: they are asked again until they have). Empty: in force on every
        /// partition.
        partitions_pending: Vec<u32>,
    },
    /// `dry_run`: what it would change; nothing switched.
    Planned {
        #[serde(flatten)]
        plan: PlanView,
        /// Always `true`.
        dry_run: bool,
        version_in_force: u64,
    },
}

/// A plan: its changes (with the customers each touches, when counted), one line per
/// change for a person, and the refusals.
#[derive(Serialize, JsonSchema)]
pub(super) struct PlanView {
    changes: Vec<Change>,
    /// One line per change, for a person.
    summary: Vec<String>,
    /// Why it cannot be put in force (empty when it can).
    refusals: Vec<Refusal>,
    /// Customers looked at to count the changes' effects.
    customers: Option<u64>,
}

impl PlanView {
    pub(super) fn of(plan: &Plan) -> PlanView {
        PlanView {
            changes: plan.changes.clone(),
            summary: plan.changes.iter().map(|c| c.describe()).collect(),
            refusals: plan.refusals.clone(),
            customers: plan.customers,
        }
    }
}

/// `PUT /v1/config`'s query.
#[derive(Deserialize, JsonSchema)]
pub(super) struct ConfigQuery {
    /// The file's name, for reports (`hunts.yaml` if absent).
    name: Option<String>,
    /// Say what the file would change, and to how many customers; switch nothing.
    #[serde(default)]
    dry_run: bool,
    /// Put it in force even if its own test cases fail.
    #[serde(default)]
    skip_tests: bool,
}

pub(super) async fn put_config(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<super::App>>,
    _: Authorized<role::Admin>,
    Params(q): Params<ConfigQuery>,
    Ready(service): Ready,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<PutConfigAnswer>, ApiError> {
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
            ConfigAnswer::Unchanged(r) => PutConfigAnswer::Unchanged {
                version: r.version,
                name: r.name.to_string(),
                in_force_since: Timestamp(r.at),
                unchanged: true,
            },
            ConfigAnswer::Planned(plan) => PutConfigAnswer::Planned {
                plan: PlanView::of(&plan),
                dry_run: true,
                version_in_force: service.version().record.version,
            },
            ConfigAnswer::Switched(r, plan, markers) => PutConfigAnswer::Switched {
                plan: PlanView::of(&plan),
                version: r.version,
                name: r.name.to_string(),
                in_force_since: Timestamp(r.at),
                partitions: markers.partitions,
                partitions_pending: markers.pending,
            },
        },
    ))
}

/// `GET /v1/config/versions`: every version of the hunts file in the log.
#[derive(Serialize, JsonSchema)]
pub(super) struct VersionsAnswer {
    /// The version in force.
    in_force: u64,
    /// Newest first.
    versions: Vec<VersionSummary>,
}

/// One version, without its text.
#[derive(Serialize, JsonSchema)]
pub(super) struct VersionSummary {
    version: u64,
    /// The file's name, as given when it was put in force.
    name: String,
    in_force_since: Timestamp,
}

pub(super) async fn get_versions(
    _: Authorized<role::Admin>,
    Ready(service): Ready,
) -> Result<Json<VersionsAnswer>, ApiError> {
    let mut versions: Vec<VersionSummary> = service
        .versions()
        .await
        .map_err(ApiError::LogRead)?
        .into_iter()
        .map(|e| VersionSummary {
            version: e.version,
            name: e.name,
            in_force_since: Timestamp(e.at),
        })
        .collect();
    versions.reverse();
    Ok(Json(VersionsAnswer {
        in_force: service.version().record.version,
        versions,
    }))
}

/// The largest version number taken: far beyond any log, and exact in a JSON number
/// whatever the reader (2^53 - 1).
pub(super) const VERSION_MAX: u64 = (1 << 53) - 1;

/// A version number as a path or query gives it.
fn version_number(text: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| (1..=VERSION_MAX).contains(v))
        .ok_or_else(|| ApiError::BadVersion(text.to_string()))
}

/// A version's record, or 404.
async fn record(
    service: &crate::service::Service,
    version: u64,
) -> Result<crate::records::ConfigRecord, ApiError> {
    service
        .version_record(version)
        .await
        .map_err(ApiError::LogRead)?
        .ok_or(ApiError::UnknownVersion {
            version,
            in_force: service.version().record.version,
        })
}

pub(super) async fn get_version(
    _: Authorized<role::Admin>,
    axum::extract::Path(version): axum::extract::Path<String>,
    Ready(service): Ready,
) -> Result<Json<ConfigView>, ApiError> {
    let r = record(&service, version_number(&version)?).await?;
    let (hunts, pools) = match hunt_core::catalog::Catalog::load(&r.name, &r.text) {
        Ok((c, _)) => (c.hunts.len(), c.pools.len()),
        Err(_) => (0, 0),
    };
    Ok(Json(ConfigView {
        version: r.version,
        name: r.name,
        in_force_since: Timestamp(r.at),
        hunts,
        pools,
        text: r.text,
    }))
}

/// `GET /v1/config/diff`'s query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    /// The older version.
    #[schemars(with = "u64", range(min = 1, max = 9007199254740991u64))]
    from: String,
    /// The newer version.
    #[schemars(with = "u64", range(min = 1, max = 9007199254740991u64))]
    to: String,
}

/// `GET /v1/config/diff`: what going from one version to another changes.
#[derive(Serialize, JsonSchema)]
pub(super) struct DiffAnswer {
    from: u64,
    to: u64,
    /// The changes between the two files (customers are not counted: a dry run of
    /// an upload, `PUT /v1/config?dry_run=true`, counts them against the version in
    /// force).
    #[serde(flatten)]
    plan: PlanView,
}

pub(super) async fn get_diff(
    _: Authorized<role::Admin>,
    Params(q): Params<DiffQuery>,
    Ready(service): Ready,
) -> Result<Json<DiffAnswer>, ApiError> {
    let (from, to) = (version_number(&q.from)?, version_number(&q.to)?);
    let (old, new) = (record(&service, from).await?, record(&service, to).await?);
    let catalog = |r: &crate::records::ConfigRecord| {
        hunt_core::catalog::Catalog::load(&r.name, &r.text)
            .map(|(c, _)| c)
            .map_err(|report| {
                ApiError::LogRead(format!(
                    "hunts file version {} no longer compiles: {} error(s)",
                    r.version,
                    report.errors()
                ))
            })
    };
    let plan = Plan::new(&catalog(&old)?, &catalog(&new)?);
    Ok(Json(DiffAnswer {
        from,
        to,
        plan: PlanView::of(&plan),
    }))
}
