//! Starting: the data directory taken, the log opened, the state rebuilt, the hunts
//! file given at start recorded; and the local log as the service holds it.

use super::*;

/// What starting found.
pub struct Started {
    pub log_report: hunt_store::OpenReport,
    /// The version recorded at start, if the given file differed from the one in force.
    pub recorded_version: Option<u64>,
}

/// Takes the data directory for this process alone (created if missing): a second
/// server, or `hunt replay`, on the same directory is refused instead of both writing.
/// The lock lasts as long as the returned file is open.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another hunt process (a running server?); stop it first",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Opens the log and rebuilds the projections; blocking. `hunts` is the hunts file
/// given at start (name, text): recorded as a new version when it differs from the one
/// in force.
pub fn open(
    config: &EngineConfig,
    hunts: Option<(String, String)>,
    closed: tokio::sync::watch::Sender<bool>,
    progress: &mut dyn FnMut(u64),
) -> Result<
    (
        LocalLog,
        Arc<dyn SnapshotStore>,
        recover::Recovered,
        Started,
    ),
    String,
> {
    let lock = lock_data_dir(&config.data_dir)?;
    let fs = Arc::new(RealFs);
    let (held, log_report) = match &config.provided_log {
        Some(p) => (
            Held::Provided(p.log.clone()),
            hunt_store::OpenReport::default(),
        ),
        None => {
            let mut lc = LogConfig::new(&config.data_dir);
            lc.durability = config.durability;
            lc.repair = config.repair;
            let (log, report) = Log::open(fs.clone(), lc).map_err(|e| e.to_string())?;
            (Held::Local(log), report)
        }
    };
    let log = LocalLog {
        log: Some(held),
        lock: Some(lock),
        closed,
    };
    let snapshots: Arc<dyn SnapshotStore> = match config
        .provided_log
        .as_ref()
        .and_then(|p| p.snapshots.clone())
    {
        Some(s) => s,
        None => Arc::new(Snapshots::open(fs, &config.data_dir).map_err(|e| e.to_string())?),
    };
    let mut recovered = recover::recover(
        &log,
        Some(&*snapshots),
        config.partitions.max(1),
        config.dedupe,
        progress,
    )?;
    let mut recorded_version = None;
    let hunts = match hunts {
        None if recovered.version.is_none() => {
            let starter = config.starter_hunts.clone();
            if let Some((name, _)) = &starter {
                tracing::warn!(
                    file = %name,
                    "no hunts file given and none in force yet: serving the embedded example. Start with --config FILE, or PUT /v1/config, to run your own hunts"
                );
            }
            starter
        }
        given => given,
    };
    if let Some((name, text)) = hunts {
        let same = recovered
            .version
            .as_ref()
            .is_some_and(|v| v.record.text == text);
        // A restart keeps the version in force (it may have come from `PUT /v1/config`
        // since): the file given at start only starts an empty log, unless asked. On a
        // cluster, every node is started with a hunts file, and a node that takes the
        // partitions over must never put its file back: the file only starts a new
        // cluster.
        let shared = config.provided_log.is_some();
        if !same
            && (shared || !config.apply_hunts_file)
            && let Some(v) = &recovered.version
        {
            if shared {
                tracing::info!(
                    file = %name,
                    version = v.record.version,
                    "the cluster has a version in force: the hunts file given at start is not applied (it only starts a new cluster; PUT /v1/config changes it)"
                );
            } else {
                tracing::warn!(
                    file = %name,
                    version = v.record.version,
                    in_force = %v.record.name,
                    "the data directory has a version in force and the hunts file given at start differs: it is not applied. Restart with --apply-config to put it in force, or PUT /v1/config"
                );
            }
        } else if !same {
            if let Err(report) = Catalog::load(&name, &text) {
                return Err(render_report(&report));
            }
            let record = ConfigRecord {
                version: recovered
                    .version
                    .as_ref()
                    .map_or(1, |v| v.record.version + 1),
                name,
                text,
                at: now().0,
            };
            let mut v = Version::compile(record.clone())?;
            let refusals = hunt_core::plan::refusals(
                v.catalog(),
                recovered.states.iter().flat_map(|s| s.grants()),
            );
            if !refusals.is_empty() {
                let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
                return Err(format!(
                    "{} cannot be put in force safely: {}; start without --config to go on \
                     with the version in force",
                    record.name,
                    reasons.join("; ")
                ));
            }
            v.restore_pools(recovered.states.iter().flat_map(|s| s.grants()))?;
            if config.spread.is_some() {
                // Nodes that share the partitions share the node records: the first
                // version goes after their end, fenced should another node's go first.
                tokio::runtime::Handle::current()
                    .block_on(log.append_after_end(NODE))
                    .map_err(|e| e.to_string())?;
            }
            match log.append_blocking(NODE, KIND_CONFIG, encode_config(&record)) {
                Ok(()) => {
                    recorded_version = Some(record.version);
                    recovered.version = Some(v);
                }
                Err(LogError::Fenced { .. }) if config.spread.is_some() => {
                    // Another node started the cluster at the same moment, and its
                    // version went first: it is the one in force.
                    let newest = super::config::newest_version(&log, 1)?
                        .0
                        .ok_or("the node records hold no version after another node's")?;
                    tracing::info!(
                        version = newest.version,
                        "another node started the cluster at the same moment: its version is in force, the hunts file given at start is not applied"
                    );
                    recovered.version = Some(Version::compile(newest)?);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    if recovered.version.is_none() {
        return Err(
            "no hunts file: the log holds no version yet, so start with --config FILE".into(),
        );
    }
    Ok((
        log,
        snapshots,
        recovered,
        Started {
            log_report,
            recorded_version,
        },
    ))
}

/// A hunts file's errors as text, for a start that cannot go on.
pub fn render_report(report: &hunt_core::diag::Report) -> String {
    let mut s = format!("{} has {} error(s):", report.name, report.errors());
    for d in report.diagnostics() {
        s.push_str("\n  ");
        s.push_str(&d.to_string());
    }
    s
}

/// The log as the service holds it, with the data directory's lock: the local log, or
/// one provided (the cluster's). When the last reference goes, the log closes (writing
/// what it was given), then the directory is let go, then `closed` is told: in that
/// order, so a next start on the directory can wait for the signal instead of a timer.
pub struct LocalLog {
    log: Option<Held>,
    lock: Option<std::fs::File>,
    closed: tokio::sync::watch::Sender<bool>,
}

enum Held {
    Local(Log),
    Provided(Arc<dyn PartitionLog>),
}

impl LocalLog {
    pub fn new(
        log: Log,
        lock: std::fs::File,
        closed: tokio::sync::watch::Sender<bool>,
    ) -> LocalLog {
        LocalLog {
            log: Some(Held::Local(log)),
            lock: Some(lock),
            closed,
        }
    }

    fn log(&self) -> &dyn PartitionLog {
        match self.log.as_ref().expect("open until dropped") {
            Held::Local(l) => l,
            Held::Provided(p) => p.as_ref(),
        }
    }

    /// The local log, when it is the one held.
    pub(super) fn local(&self) -> Option<&Log> {
        match self.log.as_ref() {
            Some(Held::Local(l)) => Some(l),
            _ => None,
        }
    }

    /// Appends one record and waits until it is durable; from a thread that may block.
    fn append_blocking(&self, partition: u32, kind: u8, payload: Vec<u8>) -> Result<(), LogError> {
        if let Some(l) = self.local() {
            return l.append(kind, &payload).map(|_| ());
        }
        let submitting = self.log().submit(partition, vec![(kind, payload)]);
        let ticket = tokio::runtime::Handle::current().block_on(submitting)?;
        ticket.wait().map(|_| ())
    }
}

impl PartitionLog for LocalLog {
    fn submit(
        &self,
        partition: u32,
        records: Vec<(u8, Vec<u8>)>,
    ) -> hunt_store::partition_log::Submitting<'_> {
        self.log().submit(partition, records)
    }

    fn read(
        &self,
        partitions: hunt_store::Partitions,
        from: hunt_store::Lsn,
    ) -> Result<hunt_store::partition_log::Records, LogError> {
        self.log().read(partitions, from)
    }

    fn durable(&self) -> hunt_store::Lsn {
        self.log().durable()
    }

    fn stopped(&self) -> Option<LogError> {
        self.log().stopped()
    }

    fn dense(&self) -> bool {
        self.log().dense()
    }

    fn append_after_end(&self, partition: u32) -> hunt_store::partition_log::Pending<'_, bool> {
        self.log().append_after_end(partition)
    }
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        drop(self.log.take());
        drop(self.lock.take());
        self.closed.send_replace(true);
    }
}
