//! For operators and their tools: metrics, health, readiness, the alerts and the
//! OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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

pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

pub(super) async fn alerts(
    State(app): State<Arc<App>>,
    _: Authorized<role::Read>,
    _: Ready,
) -> Result<Json<Value>, ApiError> {
    let a = app.alerts.get().ok_or(ApiError::AlertsStarting)?;
    let rules: Vec<Value> = a
        .config
        .rules
        .iter()
        .map(|r| json!({"name": r.name, "condition": r.describe()}))
        .collect();
    let states = a.states();
    let firing = states
        .iter()
        .filter(|s| s.state == crate::alerts::Phase::Firing)
        .count();
    Ok(Json(json!({
        "firing": firing,
        "alerts": states,
        "rules": rules,
    })))
}
