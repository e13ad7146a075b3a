//! Running the server: bind, rebuild from the log while answering `/readyz` with 503,
//! serve, and on SIGTERM/SIGINT stop accepting, finish in-flight requests (their
//! records synced), take a snapshot and exit. A failed log ends the process too
//! (fail-stop), with an error.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::http::{App, HttpConfig, router};
use crate::service::{EngineConfig, Service, Started, open};

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
        if self.http.conn.connections_max == 0 {
            return Err("--max-connections must be at least 1".into());
        }
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

/// A started server. It holds the HTTP server, the rebuild, the alerts and the trimming,
/// and through the service the partition workers and the notifier:
/// [`Running::run_until`] stops them gracefully, [`Running::kill`] at once, and dropping
/// it aborts them all. A connection still open, or a snapshot being written, keeps the
/// service (and so the log) until it ends; `kill` waits for that.
pub struct Running {
    addr: SocketAddr,
    /// Weakly: the server's own stop lets go of the service before it waits for the
    /// log to close.
    app: std::sync::Weak<App>,
    stop: watch::Sender<bool>,
    /// The rebuild, then the watch over the running server; ends with how it stopped.
    main: JoinHandle<Result<(), String>>,
    /// The tasks `main` starts: aborted with it.
    tasks: Tasks,
    /// Told once the log is closed and the data directory let go.
    closed: watch::Receiver<bool>,
}

/// Tasks aborted together.
#[derive(Clone, Default)]
struct Tasks(Arc<parking_lot::Mutex<Vec<AbortHandle>>>);

impl Tasks {
    fn spawn<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let h = tokio::spawn(f);
        self.0.lock().push(h.abort_handle());
        h
    }

    fn abort_all(&self) {
        for t in self.0.lock().drain(..) {
            t.abort();
        }
    }
}

/// Serves the API on `listener` at once (answering `/readyz` with 503) and rebuilds the
/// state from the log in the background; ready when `/readyz` answers 200.
pub async fn start(config: ServeConfig, listener: TcpListener) -> Result<Running, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    check_exposure(&addr, &config.http)?;
    let (stop, _) = watch::channel(false);
    let (closed_tx, closed) = watch::channel(false);
    let tasks = Tasks::default();
    let app = App::new(config.http.clone());
    let main = tokio::spawn(run(
        config,
        listener,
        app.clone(),
        stop.clone(),
        tasks.clone(),
        closed_tx,
    ));
    Ok(Running {
        addr,
        app: Arc::downgrade(&app),
        stop,
        main,
        tasks,
        closed,
    })
}

/// Serves until `shutdown` resolves or the log fails.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    start(config, listener).await?.run_until(shutdown).await
}

impl Running {
    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's routes, to answer requests that did not come over this server's own
    /// listener (a cluster's standby forwards its requests to the owner). `None` once
    /// stopped.
    pub fn routes(&self) -> Option<axum::Router> {
        self.app.upgrade().map(router)
    }

    /// The running engine, once the log is replayed (for a router between nodes in
    /// one process, as in tests).
    pub fn service(&self) -> Option<Arc<Service>> {
        self.app.upgrade().and_then(|a| a.service.get().cloned())
    }

    /// Waits until the engine runs (the log replayed), without holding the server;
    /// `None` if the server stops first.
    pub fn when_ready(
        &self,
    ) -> impl std::future::Future<Output = Option<Arc<Service>>> + Send + 'static {
        let app = self.app.clone();
        async move {
            loop {
                if let Some(s) = app.upgrade()?.service.get() {
                    return Some(s.clone());
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    /// Whether it has stopped by itself (a start that failed, or a failed log).
    pub fn is_finished(&self) -> bool {
        self.main.is_finished()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes the requests
    /// in flight, takes a snapshot and closes the log; or until the log fails, with
    /// the failure.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), String> {
        let ended = tokio::select! {
            r = &mut self.main => Some(r),
            () = shutdown => None,
        };
        let r = match ended {
            Some(r) => r,
            None => {
                tracing::info!("shutting down: no new requests; finishing those in flight");
                self.stop.send_replace(true);
                (&mut self.main).await
            }
        };
        r.map_err(|e| e.to_string())?
    }

    /// Stops at once, as a crash of the process would: the partitions and the notifier
    /// stop where they are, no final snapshot is taken, requests in flight are answered
    /// 503 (what the log was given is written, as the process would leave it). Waits
    /// until the log is closed and the data directory let go, or says after
    /// `LOG_CLOSE_WAIT` that it is still open.
    pub async fn kill(mut self) {
        let service = self.app.upgrade().and_then(|a| a.service.get().cloned());
        match service {
            Some(s) => {
                s.kill();
                self.stop.send_replace(true);
            }
            // Still rebuilding: the rebuild's thread closes the log when it is done.
            None => self.abort(),
        }
        let _ = (&mut self.main).await;
        let closing = self.closed.wait_for(|c| *c);
        if tokio::time::timeout(LOG_CLOSE_WAIT, closing).await.is_err() {
            tracing::warn!("the event log is still open {LOG_CLOSE_WAIT:?} after a kill");
        }
    }

    fn abort(&self) {
        self.main.abort();
        self.tasks.abort_all();
    }
}

/// Aborts every task. The log closes when the last connection holding the service
/// closes; [`Running::kill`] waits for that.
impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.app.upgrade().and_then(|a| a.service.get().cloned()) {
            s.kill();
        }
        self.stop.send_replace(true);
        self.abort();
    }
}

/// How long a stop waits for the log to close before it says so.
const LOG_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The server's life after `start`: the rebuild, serving, and the stop.
async fn run(
    config: ServeConfig,
    listener: TcpListener,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    tasks: Tasks,
    closed: watch::Sender<bool>,
) -> Result<(), String> {
    let routes = router(app.clone());
    let mut limits = app.http.conn;
    limits.connections_max =
        crate::http::conn::fit_cap(limits.connections_max, crate::http::conn::fd_limit());
    tasks.spawn(crate::http::conn::watch_fds(app.conn_metrics.clone()));
    let server = tasks.spawn(crate::http::conn::serve(
        listener,
        routes,
        limits,
        app.conn_metrics.clone(),
        stop.subscribe(),
    ));
    let mut closed_rx = closed.subscribe();
    let service = match rebuild(&config, closed).await {
        Ok(s) => s,
        Err(e) => {
            stop.send_replace(true);
            let _ = server.await;
            return Err(e);
        }
    };
    // The alerts first: the service being set is what makes the server ready.
    let alerts = crate::alerts::Alerts::new(config.alerts.clone().unwrap_or_else(|| {
        crate::alerts::AlertsConfig::defaults(config.engine.backlog_events_max)
    }));
    let _ = app.alerts.set(alerts.clone());
    let history = crate::history::History::new();
    let _ = app.history.set(history.clone());
    let _ = app.service.set(service.clone());
    tasks.spawn(alerts.run(service.clone()));
    tasks.spawn(history.run(service.clone()));
    tracing::info!(version = service.version().record.version, "ready");
    // Rate-limit state of idle keys and customers is let go once a minute.
    tasks.spawn({
        let app = app.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                app.trim_limiters();
            }
        }
    });
    // A failed log stops the server.
    let mut stop_rx = stop.subscribe();
    let mut fatal = service.fatal();
    let failed = tokio::select! {
        _ = stop_rx.wait_for(|s| *s) => None,
        f = fatal.wait_for(|f| f.is_some()) => f.ok().and_then(|f| f.clone()),
    };
    // A stop asked for after the log failed (both ready at once) is still a failure.
    let failed = failed.or_else(|| fatal.borrow().clone());
    stop.send_replace(true);
    let served = server.await.map_err(|e| e.to_string())?;
    tasks.abort_all();
    service.shutdown().await;
    // The workers and the notifier are gone and the other tasks aborted: once they
    // let go of the service, the log closes (syncing what is queued), then the data
    // directory is let go.
    drop(app);
    drop(service);
    if tokio::time::timeout(LOG_CLOSE_WAIT, closed_rx.wait_for(|c| *c))
        .await
        .is_err()
    {
        tracing::warn!("the event log is still open at the end of shutdown");
    }
    served.map_err(|e| e.to_string())?;
    match failed {
        Some(why) => Err(format!("stopped after a log failure: {why}")),
        None => Ok(()),
    }
}

/// Opens the log, rebuilds the state from it (blocking, on its own thread) and starts
/// the service on it. `closed` is told when the log has closed.
async fn rebuild(
    config: &ServeConfig,
    closed: watch::Sender<bool>,
) -> Result<Arc<Service>, String> {
    let engine = config.engine.clone();
    let hunts = config.hunts.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        open(&engine, hunts, closed, &mut |lsn| {
            if last.elapsed().as_secs() >= 5 {
                tracing::info!(lsn, "replaying the log");
                last = std::time::Instant::now();
            }
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let (log, snapshots, mut recovered, started) = opened;
    log_rebuild(&recovered, &started);
    if let Some(p) = &config.engine.provided_log
        && let Some(backend) = &p.escrow
        && let Some(v) = &mut recovered.version
    {
        let grants: crate::escrow::PartitionGrants<'_> = recovered
            .states
            .iter()
            .enumerate()
            .map(|(p, s)| (p as u32, s.grants().collect()))
            .collect();
        crate::escrow::attach(backend.clone(), v, &grants, p.escrow_grants.clone()).await?;
        // Partitions a switch by markers did not reach grant from their version's
        // accounts until they put the newest in force (their first work).
        let mut attached: std::collections::BTreeMap<u64, Arc<crate::state::Version>> =
            std::collections::BTreeMap::new();
        for old in recovered.behind.values_mut() {
            let n = old.record.version;
            if let std::collections::btree_map::Entry::Vacant(e) = attached.entry(n) {
                let mut again = crate::state::Version::compile(old.record.clone())?;
                crate::escrow::attach(
                    backend.clone(),
                    &mut again,
                    &grants,
                    p.escrow_grants.clone(),
                )
                .await?;
                e.insert(Arc::new(again));
            }
            *old = attached[&n].clone();
        }
    }
    Service::start(config.engine.clone(), log, snapshots, recovered)
}

/// What the rebuild found, said once.
fn log_rebuild(recovered: &crate::recover::Recovered, started: &Started) {
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
        deliveries_pending = recovered.outbox.pending().count(),
        dead_letters = recovered.outbox.dead_letters().len(),
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
                conn: Default::default(),
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
        c.engine.sink_queue_max = 0;
        assert!(c.validate().unwrap_err().contains("--sink-queue-max"));
        let mut c = config();
        c.engine.snapshot_every_events = 0;
        assert!(c.validate().unwrap_err().contains("--snapshot-every"));
        let mut c = config();
        c.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("without API keys"));
    }
}
