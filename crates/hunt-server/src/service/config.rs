//! Putting a new hunts file in force: checked, tested, planned, then switched on every
//! partition between the same two records of the log.

use super::*;

/// Why a new hunts file was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the hunts file has errors")]
    Invalid(Box<hunt_core::diag::Report>),
    #[error("{} of the file's test cases failed", .0.len())]
    TestsFailed(Vec<hunt_core::testing::CaseResult>),
    #[error("the new version cannot be put in force safely")]
    Unsafe(Box<Plan>),
    /// A bug while checking the file (a test case or a partition's count panicked).
    #[error("{0}")]
    Internal(String),
    #[error("the event log stopped ({0})")]
    Stopped(Stopped),
    /// On a cluster, the pools' escrow could not be reached to start the new
    /// version's accounts: nothing changed; retry.
    #[error("the cluster's pools could not be reached ({0})")]
    PoolsUnavailable(String),
    /// On a cluster whose partitions are spread over nodes, another node put a
    /// version first (at the same time, or a moment ago and this node has not put it
    /// in force yet): nothing changed; send the file again.
    #[error("{0}")]
    Raced(String),
}

/// How a new hunts file is to be taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigOptions {
    /// Only say what it would change, and to how many customers; switch nothing.
    pub dry_run: bool,
    /// Do not run the file's own test cases first.
    pub skip_tests: bool,
}

/// What taking a hunts file came to.
#[derive(Debug)]
pub enum ConfigAnswer {
    /// The file is the version in force: nothing recorded.
    Unchanged(ConfigRecord),
    /// A dry run: the changes, with the customers each touches.
    Planned(Box<Plan>),
    /// Recorded and in force, with the changes it made and the partitions that
    /// have put it in force.
    Switched(ConfigRecord, Box<Plan>, Markers),
}

/// Where a new version is in force: every partition but those pending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Markers {
    pub partitions: u32,
    /// Partitions that had not put it in force when the answer was given (they will:
    /// each is asked again until it has).
    pub pending: Vec<u32>,
}

/// How long a switch by markers waits for every partition's marker before it answers
/// with those still pending.
pub const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Service {
    /// Validates a new hunts file, runs its test cases, and records and puts it in force
    /// (or, in a dry run, says what it would change); all partitions switch between the
    /// same two records of the log. A file identical to the version in force is not
    /// recorded again.
    pub async fn put_config(
        &self,
        name: &str,
        text: &str,
        options: ConfigOptions,
    ) -> Result<ConfigAnswer, ConfigError> {
        let catalog = match Catalog::load(name, text) {
            Ok((c, _)) => Arc::new(c),
            Err(r) => return Err(ConfigError::Invalid(Box::new(r))),
        };
        if self.version().record.text == text {
            // Checked again under the coordinator's lock; here it saves running the tests.
            return self.unchanged(options);
        }
        if !options.skip_tests && !catalog.tests.is_empty() {
            let c = catalog.clone();
            let failed: Vec<_> = tokio::task::spawn_blocking(move || {
                c.tests
                    .iter()
                    .map(|case| hunt_core::testing::run_case(&c, case))
                    .filter(|r| !r.passed)
                    .collect()
            })
            .await
            .map_err(|e| ConfigError::Internal(format!("the test cases did not run: {e}")))?;
            if !failed.is_empty() {
                return Err(ConfigError::TestsFailed(failed));
            }
        }
        // The switch runs on its own task: if the admin's request is dropped half-way
        // (its client went away), the partitions must still all resume on the version
        // the log records.
        let me = self
            .self_arc()
            .ok_or(ConfigError::Stopped(Stopped::Stopping))?;
        let (name, text) = (name.to_string(), text.to_string());
        tokio::spawn(async move {
            if options.dry_run {
                me.plan_version(catalog, &text).await
            } else {
                me.switch_version(&name, &text).await
            }
        })
        .await
        .map_err(|e| ConfigError::Stopped(Stopped::Switch(e.to_string())))?
    }

    /// The answer for a file identical to the version in force.
    fn unchanged(&self, options: ConfigOptions) -> Result<ConfigAnswer, ConfigError> {
        Ok(if options.dry_run {
            ConfigAnswer::Planned(Box::default())
        } else {
            ConfigAnswer::Unchanged(self.version().record.clone())
        })
    }

    /// What `new` would change, with the customers each change touches, counted by each
    /// partition between its rounds; refused if the codes granted do not fit it.
    async fn plan_version(
        &self,
        new: Arc<Catalog>,
        text: &str,
    ) -> Result<ConfigAnswer, ConfigError> {
        let _one = self.coordinator.lock().await;
        let old = self.version();
        if old.record.text == text {
            return self.unchanged(ConfigOptions {
                dry_run: true,
                skip_tests: true,
            });
        }
        let (plan, _) = self.count_plan(old.catalog(), &new, Some(text)).await?;
        if plan.refusals.is_empty() {
            Ok(ConfigAnswer::Planned(Box::new(plan)))
        } else {
            Err(ConfigError::Unsafe(Box::new(plan)))
        }
    }

    /// The plan from `old` to `new`, with the customers each change touches counted by
    /// each partition between its rounds, and the grants checked against `new`; with
    /// each partition's grants.
    pub(super) async fn count_plan(
        &self,
        old: &Catalog,
        new: &Arc<Catalog>,
        everywhere: Option<&str>,
    ) -> Result<(Plan, Vec<(u32, crate::partition::Grants)>), ConfigError> {
        let template = Plan::new(old, new);
        let mut waits = Vec::new();
        // The partitions this node applies (on a node sharing them with others, its
        // share of the customers).
        for (p, h) in self
            .partitions
            .iter()
            .enumerate()
            .filter(|(p, _)| self.owns(*p))
        {
            let (reply, rx) = oneshot::channel();
            h.tx.send(Msg::Plan {
                new: new.clone(),
                plan: template.clone(),
                reply,
            })
            .await
            .map_err(|_| ConfigError::Stopped(Stopped::Partitions))?;
            waits.push((p as u32, rx));
        }
        let mut plan = template;
        let mut grants = Vec::new();
        for (p, rx) in waits {
            let (part, g) = rx
                .await
                .map_err(|_| ConfigError::Stopped(Stopped::Partition))?
                .map_err(ConfigError::Internal)?;
            plan.add_counts(&part);
            grants.push((p, g));
        }
        // On a node sharing the partitions, given the new file's text: the other
        // nodes' customers too, counted and checked (a pool must not take back a code
        // any customer holds, on any node).
        let mut elsewhere = Vec::new();
        if let (Some(text), Some(spread)) = (everywhere, &self.config.spread) {
            let gathered = spread
                .router
                .gather(&crate::route::Ask {
                    plan_for: Some(text.to_string()),
                    ..Default::default()
                })
                .await;
            if !gathered.missing.is_empty() {
                return Err(ConfigError::PoolsUnavailable(format!(
                    "nodes {} did not count their customers in time",
                    gathered.missing.join(", ")
                )));
            }
            for share in gathered.shares {
                match share.plan {
                    Some(part) => plan.add_counts(&part),
                    None => {
                        return Err(ConfigError::Internal(
                            "a node could not count the plan on its partitions".into(),
                        ));
                    }
                }
                elsewhere.extend(share.held_codes);
            }
        }
        plan.check_grants(
            new,
            grants
                .iter()
                .flat_map(|(_, g)| g)
                .chain(&elsewhere)
                .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str())),
        );
        Ok((plan, grants))
    }

    async fn switch_version(&self, name: &str, text: &str) -> Result<ConfigAnswer, ConfigError> {
        if self.version().escrow.is_some() {
            return self.switch_by_markers(name, text).await;
        }
        let _one = self.coordinator.lock().await;
        if self.version().record.text == text {
            return self.unchanged(ConfigOptions::default());
        }
        let (paused, resumes) = self.pause_all().await.map_err(ConfigError::Stopped)?;
        let old = self.version();
        let record = ConfigRecord {
            version: old.record.version + 1,
            name: name.to_string(),
            text: text.to_string(),
            at: now().0,
        };
        let result = async {
            let mut v = Version::compile(record.clone())
                .map_err(|e| ConfigError::Stopped(Stopped::Version(e)))?;
            let grants = || {
                paused
                    .iter()
                    .flat_map(|p| &p.grants)
                    .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str()))
            };
            let mut plan = Plan::new(old.catalog(), v.catalog());
            plan.check_grants(v.catalog(), grants());
            if !plan.refusals.is_empty() {
                return Err(ConfigError::Unsafe(Box::new(plan)));
            }
            v.restore_pools(grants())
                .map_err(|e| ConfigError::Stopped(Stopped::Version(e)))?;
            let per_partition: crate::escrow::PartitionGrants<'_> = paused
                .iter()
                .enumerate()
                .map(|(p, g)| {
                    let g = g
                        .grants
                        .iter()
                        .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str()))
                        .collect();
                    (p as u32, g)
                })
                .collect();
            crate::escrow::switch(&old, &mut v, &per_partition)
                .await
                .map_err(ConfigError::PoolsUnavailable)?;
            let ticket = self
                .log
                .submit(NODE, vec![(KIND_CONFIG, encode_config(&record))])
                .await
                .map_err(|e| ConfigError::Stopped(e.into()))?;
            ticket.await.map_err(|e| ConfigError::Stopped(e.into()))?;
            Ok((Arc::new(v), plan))
        }
        .await;
        let next = match &result {
            Ok((v, _)) => v.clone(),
            Err(_) => old,
        };
        *self.version.write() = next.clone();
        for r in resumes {
            let _ = r.send(next.clone());
        }
        match result {
            Ok((_, plan)) => {
                tracing::info!(
                    version = record.version,
                    name,
                    changes = plan.changes.len(),
                    "hunts file version in force"
                );
                self.notifier.configure(&self.version());
                let markers = Markers {
                    partitions: self.partitions.len() as u32,
                    pending: Vec::new(),
                };
                Ok(ConfigAnswer::Switched(record, Box::new(plan), markers))
            }
            Err(e) => {
                if let ConfigError::Stopped(why) = &e {
                    self.fail(&why.to_string());
                }
                Err(e)
            }
        }
    }
}

impl Service {
    /// A version switch on a cluster (ADR 0015): nothing pauses. The plan is counted
    /// by each partition between its rounds; the new version's pools' accounts are
    /// started, waiting for each partition's seed; the version is recorded; then each
    /// partition puts it in force at a marker in its own log, between two of its
    /// rounds. The answer comes once every partition has, or after [`SWITCH_WAIT`]
    /// with those still pending, which are asked again until they have.
    async fn switch_by_markers(&self, name: &str, text: &str) -> Result<ConfigAnswer, ConfigError> {
        let _one = self.coordinator.lock().await;
        if self.version().record.text == text {
            return self.unchanged(ConfigOptions::default());
        }
        // Nodes that share the partitions share the node records: this version goes
        // right after their end as it is now, and only if this node has put in force
        // every version recorded up to there (else its number would be taken).
        let shared = self
            .log
            .append_after_end(NODE)
            .await
            .map_err(|e| ConfigError::Stopped(e.into()))?;
        if shared {
            let log = self.log.clone();
            let newest = tokio::task::spawn_blocking(move || newest_version(&*log, 1))
                .await
                .map_err(|e| ConfigError::Internal(e.to_string()))?
                .map_err(ConfigError::Internal)?
                .0
                .map_or(0, |r| r.version);
            let here = self.version().record.version;
            if newest > here {
                return Err(ConfigError::Raced(format!(
                    "version {newest} was put on another node a moment ago and is not in force here yet (this node has {here}); nothing changed, send the file again"
                )));
            }
        }
        let old = self.version();
        let record = ConfigRecord {
            version: old.record.version + 1,
            name: name.to_string(),
            text: text.to_string(),
            at: now().0,
        };
        let mut v = Version::compile(record.clone()).map_err(ConfigError::Internal)?;
        let (plan, grants) = self
            .count_plan(old.catalog(), v.catalog(), Some(text))
            .await?;
        if !plan.refusals.is_empty() {
            return Err(ConfigError::Unsafe(Box::new(plan)));
        }
        let all = || {
            grants
                .iter()
                .flat_map(|(_, g)| g)
                .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str()))
        };
        v.restore_pools(all()).map_err(ConfigError::Internal)?;
        let per_partition = borrowed(&grants);
        crate::escrow::prepare(&old, &mut v, &per_partition)
            .await
            .map_err(ConfigError::PoolsUnavailable)?;
        let written = async {
            self.log
                .submit(NODE, vec![(KIND_VERSION, encode_config(&record))])
                .await?
                .await
        }
        .await;
        match written {
            Err(LogError::Fenced { .. }) if shared => {
                // Another node's version went first; this node's writer of the node
                // records is ready again for the next one.
                let _ = self.log.append_after_end(NODE).await;
                return Err(ConfigError::Raced(format!(
                    "another node put version {} at the same time; nothing changed, send the file again",
                    record.version
                )));
            }
            Err(e) => {
                let why = Stopped::from(e);
                self.fail(&why.to_string());
                return Err(ConfigError::Stopped(why));
            }
            Ok(_) => {}
        }
        let v = Arc::new(v);
        *self.version.write() = v.clone();
        self.notifier.configure(&v);
        // This node's partitions only: each writes its marker in its own log, which
        // only its owner may append to.
        let mine: Vec<u32> = (0..self.partitions.len() as u32)
            .filter(|p| self.owns(*p as usize))
            .collect();
        let started = tokio::time::Instant::now();
        let mut pending = self.put_in_force(&v, &mine, SWITCH_WAIT).await;
        if !pending.is_empty() {
            self.keep_switching(v.clone(), pending.clone());
        }
        // The other nodes' partitions: they read the version from the log and put it
        // in force on theirs; the answer waits for them too.
        if let Some(spread) = &self.config.spread {
            let n = v.record.version;
            let all = self.partitions.len() as u32;
            loop {
                let gathered = spread.router.gather(&crate::route::Ask::default()).await;
                let mut reached: std::collections::BTreeSet<u32> = mine
                    .iter()
                    .filter(|p| !pending.contains(p))
                    .copied()
                    .collect();
                for share in gathered.shares {
                    reached.extend(
                        share
                            .in_force
                            .into_iter()
                            .filter(|(_, at)| *at >= n)
                            .map(|(p, _)| p),
                    );
                }
                let waiting: Vec<u32> = (0..all).filter(|p| !reached.contains(p)).collect();
                if waiting.is_empty() || started.elapsed() >= SWITCH_WAIT {
                    pending = waiting;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        tracing::info!(
            version = record.version,
            name,
            changes = plan.changes.len(),
            pending = pending.len(),
            "hunts file version recorded; partitions put it in force at their markers"
        );
        let markers = Markers {
            partitions: self.partitions.len() as u32,
            pending,
        };
        Ok(ConfigAnswer::Switched(record, Box::new(plan), markers))
    }

    /// Asks `partitions` to put `v` in force at their markers and waits up to `wait`;
    /// those that have not (yet) are given back.
    pub(super) async fn put_in_force(
        &self,
        v: &Arc<Version>,
        partitions: &[u32],
        wait: std::time::Duration,
    ) -> Vec<u32> {
        let mut asked = Vec::new();
        let (order, late) = asking_order(partitions);
        for (i, &p) in order.iter().enumerate() {
            if let Some((from, pause)) = late
                && i == from
            {
                tokio::time::sleep(pause).await;
            }
            let (reply, rx) = oneshot::channel();
            let msg = Msg::Switch {
                version: v.clone(),
                reply,
            };
            match self.partitions.get(p as usize) {
                Some(h) if h.tx.send(msg).await.is_ok() => asked.push((p, rx)),
                _ => {}
            }
        }
        let until = tokio::time::Instant::now() + wait;
        let mut done = std::collections::BTreeSet::new();
        for (p, rx) in asked {
            match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(Ok(()))) => {
                    done.insert(p);
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(partition = p, version = v.record.version, error = %e, "a partition did not put the new version in force yet")
                }
                _ => {}
            }
        }
        partitions
            .iter()
            .copied()
            .filter(|p| !done.contains(p))
            .collect()
    }

    /// Asks `pending` partitions again, every second, until each has put `v` in force
    /// (or a newer version took over, or the service stops).
    pub(super) fn keep_switching(&self, v: Arc<Version>, mut pending: Vec<u32>) {
        let Some(me) = self.self_arc() else { return };
        tokio::spawn(async move {
            while !pending.is_empty() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if me.closed.load(Ordering::Acquire)
                    || me.version().record.version != v.record.version
                {
                    return;
                }
                pending = me
                    .put_in_force(&v, &pending, std::time::Duration::from_secs(5))
                    .await;
            }
            tracing::info!(
                version = v.record.version,
                "every partition has put the version in force"
            );
        });
    }
}

/// The order in which a switch asks `partitions`, and where to pause first: in order,
/// except for the test of partitions reaching their markers at different times
/// (failpoint `service::odd_partitions_switch_late`, `return(MS)`), where the odd ones
/// are asked MS after the even ones, and apply the old version meanwhile.
fn asking_order(partitions: &[u32]) -> (Vec<u32>, Option<(usize, std::time::Duration)>) {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = fail::eval("service::odd_partitions_switch_late", |a| {
        a.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0)
    }) {
        let (even, odd): (Vec<u32>, Vec<u32>) = partitions.iter().partition(|p| *p % 2 == 0);
        let from = even.len();
        let order = even.into_iter().chain(odd).collect();
        return (order, Some((from, std::time::Duration::from_millis(ms))));
    }
    (partitions.to_vec(), None)
}

impl Service {
    /// On a node sharing the partitions with others (ADR 0015): every version another
    /// node records is put in force on this node's partitions, each at its marker.
    /// Reads the node's own records of the log after `from`, every 100 ms.
    pub(super) fn follow_versions(&self, mut from: hunt_store::Lsn) {
        let Some(me) = self.self_arc() else { return };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if me.closed.load(Ordering::Acquire) {
                    return;
                }
                let log = me.log.clone();
                let read = tokio::task::spawn_blocking(move || newest_version(&*log, from)).await;
                let (newest, last) = match read {
                    Ok(Ok(found)) => found,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reading the hunts file's versions");
                        continue;
                    }
                    Err(_) => continue,
                };
                from = from.max(last + 1);
                if let Some(record) = newest
                    && record.version > me.version().record.version
                    && let Err(e) = me.take_version(record).await
                {
                    tracing::warn!(error = %e, "a version another node recorded is not in force here yet");
                }
            }
        });
    }

    /// Puts `record`, recorded by another node, in force on this node's partitions.
    async fn take_version(&self, record: ConfigRecord) -> Result<(), String> {
        let _one = self.coordinator.lock().await;
        if record.version <= self.version().record.version {
            return Ok(());
        }
        let mut v = Version::compile(record)?;
        if let Some(p) = &self.config.provided_log
            && let Some(backend) = &p.escrow
        {
            // This node's partitions' grants, for the pools' figures.
            let old = self.version();
            let (_, grants) = self
                .count_plan(old.catalog(), v.catalog(), None)
                .await
                .map_err(|e| e.to_string())?;
            let per_partition = borrowed(&grants);
            crate::escrow::attach_recorded(
                backend.clone(),
                &mut v,
                &per_partition,
                p.escrow_grants.clone(),
            )
            .await?;
        }
        let v = Arc::new(v);
        *self.version.write() = v.clone();
        self.notifier.configure(&v);
        let mine: Vec<u32> = (0..self.partitions.len() as u32)
            .filter(|p| self.owns(*p as usize))
            .collect();
        let pending = self.put_in_force(&v, &mine, SWITCH_WAIT).await;
        tracing::info!(
            version = v.record.version,
            pending = pending.len(),
            "a version another node recorded is put in force on this node's partitions"
        );
        if !pending.is_empty() {
            self.keep_switching(v, pending);
        }
        Ok(())
    }
}

/// The newest hunts-file version among the node's own records at or after `from`,
/// and the last position read.
pub(super) fn newest_version(
    log: &dyn PartitionLog,
    from: hunt_store::Lsn,
) -> Result<(Option<ConfigRecord>, hunt_store::Lsn), String> {
    let mut newest: Option<ConfigRecord> = None;
    let mut last = from.saturating_sub(1);
    let records = log
        .read(hunt_store::Partitions::One(NODE), from)
        .map_err(|e| e.to_string())?;
    for r in records {
        let r = r.map_err(|e| e.to_string())?;
        last = last.max(r.lsn);
        if r.kind == KIND_CONFIG || r.kind == KIND_VERSION {
            let c = crate::records::decode_config(&r.payload)?;
            if newest.as_ref().is_none_or(|n| c.version > n.version) {
                newest = Some(c);
            }
        }
    }
    Ok((newest, last))
}

/// Each partition's grants, as the escrow takes them: (hunt, pool, code) borrowed.
fn borrowed(grants: &[(u32, crate::partition::Grants)]) -> crate::escrow::PartitionGrants<'_> {
    grants
        .iter()
        .map(|(p, g)| {
            let g = g
                .iter()
                .map(|(h, pool, c)| (h.as_str(), pool.as_str(), c.as_str()))
                .collect();
            (*p, g)
        })
        .collect()
}
