//! For operators and their tools: metrics, health, readiness, the alerts and the
//! OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use crate::alerts::AlertState;

use super::extract::{Authorized, Ready, role};
use super::{ApiError, App, Json};

pub(super) async fn get_metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let service = app.service.get().ok_or(ApiError::Starting)?;
    let mut text = crate::observe::render(service).await;
    if let Some(a) = app.alerts.get() {
        a.render(&mut text);
    }
    app.conn_metrics.render(&mut text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    app.ready()?;
    Ok((StatusCode::OK, "ready\n").into_response())
}

pub(super) async fn openapi(State(app): State<Arc<App>>) -> Response {
    let doc = app
        .openapi
        .get_or_init(|| super::openapi::document(&app.http));
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

/// `GET /v1/alerts`.
#[derive(Serialize, JsonSchema)]
pub(super) struct AlertsAnswer {
    /// How many alerts fire now.
    firing: usize,
    /// Every alert known, firing first.
    alerts: Vec<AlertState>,
    rules: Vec<RuleView>,
}

/// An alerting rule.
#[derive(Serialize, JsonSchema)]
pub(super) struct RuleView {
    name: String,
    /// When it fires, in words.
    condition: String,
}

pub(super) async fn alerts(
    State(app): State<Arc<App>>,
    _: Authorized<role::Read>,
    _: Ready,
) -> Result<Json<AlertsAnswer>, ApiError> {
    let a = app.alerts.get().ok_or(ApiError::AlertsStarting)?;
    let rules = a
        .config
        .rules
        .iter()
        .map(|r| RuleView {
            name: r.name.to_string(),
            condition: r.describe(),
        })
        .collect();
    let states = a.states();
    let firing = states
        .iter()
        .filter(|s| s.state == crate::alerts::Phase::Firing)
        .count();
    Ok(Json(AlertsAnswer {
        firing,
        alerts: states,
        rules,
    }))
}
