//! Running the server: bind, rebuild from the log while answering `/readyz` with 503,
//! serve, and on SIGTERM/SIGINT stop accepting, finish in-flight requests (their
//! records synced), take a snapshot and exit. A failed log ends the process too
//! (fail-stop), with an error.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::{App, HttpConfig, router};
use crate::service::{EngineConfig, Service, open};

/// Everything `hunt serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub engine: EngineConfig,
    pub http: HttpConfig,
    /// The hunts file given at start: (name, text).
    pub hunts: Option<(String, String)>,
    /// Alert rules; `None`: the defaults.
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

/// The most partitions a server runs.
pub const PARTITIONS_MAX: usize = 1024;

impl ServeConfig {
    /// Checks the settings together, the one place that does; `hunt serve` calls it
    /// before it binds, and errors name its flag at fault. `serve` itself checks only
    /// the exposure, so that tests may run settings the command refuses (a backlog
    /// smaller than one request, to see its 503).
    pub fn validate(&self) -> Result<(), String> {
        let e = &self.engine;
        if e.partitions == 0 || e.partitions > PARTITIONS_MAX {
            return Err(format!(
                "--partitions must be 1-{PARTITIONS_MAX}, got {}",
                e.partitions
            ));
        }
        if e.backlog_events_max < self.http.limits.events_max {
            return Err(format!(
                "--backlog-max ({}) must be at least --max-events ({}): a full request must fit",
                e.backlog_events_max, self.http.limits.events_max
            ));
        }
        if e.snapshot_every_events == 0 {
            return Err("--snapshot-every must be at least 1".into());
        }
        if e.sink_queue_max == 0 {
            return Err("--sink-queue-max must be at least 1".into());
        }
        if e.sink_dlq_max == 0 {
            return Err("--sink-dlq-max must be at least 1".into());
        }
        check_exposure(&self.listen, &self.http)
    }
}

/// Refuses to open every endpoint, admin included, to a network without keys.
pub fn check_exposure(listen: &SocketAddr, http: &HttpConfig) -> Result<(), String> {
    if http.keys.is_empty() && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without API keys: every endpoint, admin included, would be open. \
             Give keys (--keys FILE or HUNT_API_KEYS), or listen on 127.0.0.1 for development"
        ));
    }
    Ok(())
}

/// Serves until `shutdown` resolves or the log fails. `on_ready` is told the bound
/// address as soon as the listener is up (before the rebuild finishes).
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    check_exposure(
        &listener.local_addr().map_err(|e| e.to_string())?,
        &config.http,
    )?;
    let app = App::new(config.http.clone());
    let routes = router(app.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let mut stop_rx = stop_rx.clone();
        async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
        }
    });
    // Stop on the caller's signal.
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests; finishing those in flight");
            stop_tx.send_replace(true);
        }
    });
    let engine = config.engine.clone();
    let hunts = config.hunts.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        open(&engine, hunts, &mut |lsn| {
            if last.elapsed().as_secs() >= 5 {
                tracing::info!(lsn, "replaying the log");
                last = std::time::Instant::now();
            }
        })
    })
    .await
    .map_err(|e| e.to_string())?;
    let (log, snapshots, recovered, started) = match opened {
        Ok(o) => o,
        Err(e) => {
            stop_tx.send_replace(true);
            let _ = server.await;
            return Err(e);
        }
    };
    if let Some(t) = &started.log_report.torn_tail {
        tracing::warn!(segment = %t.0, offset = t.1, bytes = t.2, "cut a torn tail off the log");
    }
    for w in &recovered.report.warnings {
        tracing::warn!("{w}");
    }
    let r = &recovered.report;
    tracing::info!(
        snapshot_lsn = r.snapshot_lsn.unwrap_or(0),
        records = r.records,
        events = r.events,
        last_lsn = r.last_lsn,
        "state rebuilt from the log"
    );
    if r.mismatches > 0 {
        tracing::warn!(
            mismatches = r.mismatches,
            first = r.first_mismatch.as_deref().unwrap_or(""),
            "applying the log again gave different outcomes for some events"
        );
    }
    if let Some(v) = started.recorded_version {
        tracing::info!(
            version = v,
            "recorded the given hunts file as a new version"
        );
    }
    let pending = recovered.outbox.pending().count();
    let dead = recovered.outbox.dead_letters().len();
    let service = match Service::start(config.engine.clone(), log, snapshots, recovered) {
        Ok(s) => s,
        Err(e) => {
            stop_tx.send_replace(true);
            let _ = server.await;
            return Err(e);
        }
    };
    // The alerts first: the service being set is what makes the server ready.
    let alerts = crate::alerts::Alerts::new(config.alerts.clone().unwrap_or_else(|| {
        crate::alerts::AlertsConfig::defaults(config.engine.backlog_events_max)
    }));
    let _ = app.alerts.set(alerts.clone());
    let _ = app.service.set(service.clone());
    let alerting = tokio::spawn(alerts.run(service.clone()));
    tracing::info!(
        version = service.version().record.version,
        deliveries_pending = pending,
        dead_letters = dead,
        "ready"
    );
    // Rate-limit state of idle keys and customers is let go once a minute.
    let trim = tokio::spawn({
        let app = app.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                app.trim_limiters();
            }
        }
    });
    // A failed log stops the server.
    let mut fatal = service.fatal();
    let failed = tokio::select! {
        _ = stop_rx.wait_for(|s| *s) => None,
        f = fatal.wait_for(|f| f.is_some()) => f.ok().and_then(|f| f.clone()),
    };
    // A stop asked for after the log failed (both ready at once) is still a failure.
    let failed = failed.or_else(|| fatal.borrow().clone());
    stop_tx.send_replace(true);
    let served = server.await.map_err(|e| e.to_string())?;
    trim.abort();
    let _ = trim.await;
    alerting.abort();
    let _ = alerting.await;
    service.shutdown().await;
    // Every partition worker is gone; the log closes (syncing what is queued) when
    // the last reference is dropped, which must happen before the data directory's
    // lock is let go.
    let log = service.log_weak();
    drop(app);
    let service: Arc<Service> = service;
    drop(service);
    for _ in 0..500 {
        if log.upgrade().is_none() {
            break;
        }
        // A background snapshot may still hold it for a moment.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if log.upgrade().is_some() {
        tracing::warn!("the event log is still open at the end of shutdown");
    }
    drop(started.lock);
    served.map_err(|e| e.to_string())?;
    match failed {
        Some(why) => Err(format!("stopped after a log failure: {why}")),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signals() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            engine: EngineConfig::new("data"),
            http: HttpConfig {
                limits: hunt_core::ingest::Limits::default(),
                keys: crate::auth::Keys::default(),
                rate_per_key: None,
                rate_per_user: None,
            },
            hunts: None,
            alerts: None,
        }
    }

    #[test]
    fn settings_are_checked_together_and_name_the_flag() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.engine.partitions = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .contains("--partitions must be 1-1024")
        );
        let mut c = config();
        c.engine.backlog_events_max = c.http.limits.events_max - 1;
        assert!(c.validate().unwrap_err().contains("--backlog-max"));
        let mut c = config();
        c.engine.sink_dlq_max = 0;
        assert!(c.validate().unwrap_err().contains("--sink-dlq-max"));
        let mut c = config();
        c.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("without API keys"));
    }
}
