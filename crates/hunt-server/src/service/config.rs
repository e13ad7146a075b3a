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
    /// Recorded and in force, with the changes it made.
    Switched(ConfigRecord, Box<Plan>),
}

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
        let template = Plan::new(old.catalog(), &new);
        let mut waits = Vec::new();
        for h in &self.partitions {
            let (reply, rx) = oneshot::channel();
            h.tx.send(Msg::Plan {
                new: new.clone(),
                plan: template.clone(),
                reply,
            })
            .await
            .map_err(|_| ConfigError::Stopped(Stopped::Partitions))?;
            waits.push(rx);
        }
        let mut plan = template.clone();
        let mut grants = Vec::new();
        for rx in waits {
            let (part, g) = rx
                .await
                .map_err(|_| ConfigError::Stopped(Stopped::Partition))?
                .map_err(ConfigError::Internal)?;
            plan.add_counts(&part);
            grants.extend(g);
        }
        plan.check_grants(
            &new,
            grants
                .iter()
                .map(|(h, p, c)| (h.as_str(), p.as_str(), c.as_str())),
        );
        if plan.refusals.is_empty() {
            Ok(ConfigAnswer::Planned(Box::new(plan)))
        } else {
            Err(ConfigError::Unsafe(Box::new(plan)))
        }
    }

    async fn switch_version(&self, name: &str, text: &str) -> Result<ConfigAnswer, ConfigError> {
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
                Ok(ConfigAnswer::Switched(record, Box::new(plan)))
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
