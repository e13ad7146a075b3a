//! Rebuilding every projection from the newest snapshot and the log after it: on start,
//! and offline for `hunt replay`.
//!
//! A snapshot takes each partition and the outbox at positions of their own
//! ([`Cover`]): the log is read from the least of them, and each record goes only to
//! what does not hold it yet.
//!
//! Each event is applied again by the engine of the version in force at its record,
//! with the reward answers the record holds, and the outcomes are compared with the
//! recorded ones: a difference means the log and this build disagree, and is reported.

use hunt_core::engine::Outcome;
use hunt_store::{Lsn, PartitionLog, Partitions, SnapshotStore};

use crate::notify::cloudevent::{Origin, deliveries_unbuilt, notifies};
use crate::notify::outbox::{self, Outbox};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::records::{RecordKind, decode_config, decode_event, decode_marker};
use crate::snapshot::Cover;
use crate::state::{DedupeConfig, PartitionState, ReplayAllocator, Version, partition_of};

/// What a rebuild did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The LSN of the snapshot started from, if any.
    pub snapshot_lsn: Option<Lsn>,
    /// Records read after it.
    pub records: u64,
    /// Events applied again (those the snapshot's state did not hold yet).
    pub events: u64,
    pub config_versions: u64,
    /// Events whose outcomes, applied again, differ from the recorded ones.
    pub mismatches: u64,
    pub first_mismatch: Option<String>,
    /// Damaged snapshots skipped, and the like.
    pub warnings: Vec<String>,
    pub last_lsn: Lsn,
    /// Delivery state changes read, and those that did not fit the delivery's state.
    pub delivery_changes: u64,
    pub delivery_misfits: u64,
}

pub struct Recovered {
    /// The version in force at the end of the log (`None`: the log holds none yet).
    pub version: Option<Version>,
    /// Partitions whose last marker names an older version than `version` (a switch
    /// by markers that did not reach them), with the version they apply: the service
    /// puts the newest in force on them before anything else.
    pub behind: BTreeMap<u32, Arc<Version>>,
    pub states: Vec<PartitionState>,
    /// Every pending delivery and dead letter.
    pub outbox: Outbox,
    pub report: Report,
}

/// Rebuilds from `snapshots` (if given) and `log`. `progress` is called with each LSN
/// read. Errors name the record.
pub fn recover(
    log: &dyn PartitionLog,
    snapshots: Option<&dyn SnapshotStore>,
    partitions: usize,
    dedupe: DedupeConfig,
    progress: &mut dyn FnMut(Lsn),
) -> Result<Recovered, String> {
    let mut r = Rebuild::new(partitions, dedupe);
    let from = match snapshots {
        Some(snaps) => r.load_snapshot(snaps, dedupe)?,
        None => 1,
    };
    r.read(log, Partitions::All, from, progress)?;
    r.finish(log)
}

/// One partition rebuilt, for a node that takes it over alone (ADR 0015): its state,
/// its deliveries, and the versions.
pub struct RecoveredPartition {
    /// The newest version the log holds.
    pub version: Option<Version>,
    /// The version the partition applies, if its last marker names an older one.
    pub behind: Option<Arc<Version>>,
    pub state: PartitionState,
    /// The partition's pending deliveries and dead letters.
    pub outbox: Outbox,
    pub report: Report,
}

/// Rebuilds `partition` alone from its newest snapshot of its own (if any readable)
/// and its own records and the node's (the versions) after it: the same state,
/// deliveries and versions as [`recover`] gives it.
pub fn recover_partition(
    log: &dyn PartitionLog,
    snapshots: Option<&dyn hunt_store::PartSnapshots>,
    partition: u32,
    partitions: usize,
    dedupe: DedupeConfig,
    progress: &mut dyn FnMut(Lsn),
) -> Result<RecoveredPartition, String> {
    let n = partition as usize;
    if n >= partitions {
        return Err(format!(
            "partition {partition} of a log of {partitions} partitions"
        ));
    }
    let mut r = Rebuild::new(partitions, dedupe);
    r.only = Some(n);
    let from = match snapshots {
        Some(snaps) => r.load_part_snapshot(snaps, n, dedupe)?,
        None => 1,
    };
    r.read(log, Partitions::WithVersions(partition), from, progress)?;
    let mut all = r.finish(log)?;
    Ok(RecoveredPartition {
        version: all.version,
        behind: all.behind.remove(&partition),
        state: all.states.swap_remove(n),
        outbox: all.outbox,
        report: all.report,
    })
}

impl Rebuild {
    /// Applies the records of `partitions` from `from` on.
    fn read(
        &mut self,
        log: &dyn PartitionLog,
        partitions: Partitions,
        from: Lsn,
        progress: &mut dyn FnMut(Lsn),
    ) -> Result<(), String> {
        let r = self;
        let reader = log.read(partitions, from).map_err(|e| e.to_string())?;
        for rec in reader {
            let rec = rec.map_err(|e| e.to_string())?;
            if r.report.records == 0 && rec.lsn > from && log.dense() {
                return Err(format!(
                    "the log starts at LSN {} but the rebuild needs LSN {from}: older segments \
                 were removed and no readable snapshot covers them",
                    rec.lsn
                ));
            }
            r.report.records += 1;
            r.report.last_lsn = rec.lsn;
            let at = |e: String| format!("record {}: {e}", rec.lsn);
            match RecordKind::of(rec.kind) {
                Some(RecordKind::Event) => r.event(rec.lsn, &rec.payload).map_err(at)?,
                Some(RecordKind::Config) => r.config(rec.lsn, &rec.payload).map_err(at)?,
                Some(RecordKind::Delivery) => r.delivery(rec.lsn, &rec.payload).map_err(at)?,
                Some(RecordKind::Version) => r.marked_version(&rec.payload).map_err(at)?,
                Some(RecordKind::Marker) => r.marker(rec.lsn, &rec.payload).map_err(at)?,
                None => return Err(at(format!("unknown kind {}", rec.kind))),
            }
            progress(rec.lsn);
        }
        Ok(())
    }
}

/// A rebuild in progress: what has been read so far.
struct Rebuild {
    partitions: usize,
    /// Every version read, by number.
    versions: BTreeMap<u64, Arc<Version>>,
    /// The newest version read.
    latest: Option<u64>,
    /// The version each partition applies (ADR 0015: a version recorded to be put in
    /// force by markers reaches a partition at its marker).
    in_force: Vec<Option<u64>>,
    states: Vec<PartitionState>,
    outbox: Outbox,
    /// How far the snapshot started from reaches (none: nothing is held yet).
    cover: Option<Cover>,
    /// Rebuilding this partition alone: the others' records are passed over.
    only: Option<usize>,
    report: Report,
}

impl Rebuild {
    fn new(partitions: usize, dedupe: DedupeConfig) -> Rebuild {
        // A start without a snapshot picks a new secret for the dedupe window's
        // identities; a snapshot brings back the one its entries were made with.
        let secret = crate::state::dedupe_secret();
        Rebuild {
            partitions,
            versions: BTreeMap::new(),
            latest: None,
            in_force: vec![None; partitions],
            states: (0..partitions)
                .map(|_| PartitionState::new(dedupe, secret))
                .collect(),
            outbox: Outbox::default(),
            cover: None,
            only: None,
            report: Report::default(),
        }
    }

    /// Starts from the newest readable snapshot; returns the LSN to read the log from.
    fn load_snapshot(
        &mut self,
        snaps: &dyn SnapshotStore,
        dedupe: DedupeConfig,
    ) -> Result<Lsn, String> {
        let (latest, warnings) = snaps.latest().map_err(|e| e.to_string())?;
        self.report.warnings.extend(warnings);
        let Some(snap) = latest else { return Ok(1) };
        match crate::snapshot::decode(&snap.payload, self.partitions, dedupe) {
            Ok(d) => {
                let n = d.version.version;
                self.versions
                    .insert(n, Arc::new(Version::compile(d.version)?));
                self.latest = Some(n);
                self.in_force = vec![Some(n); self.partitions];
                self.states = d.states;
                for e in d.outbox {
                    self.outbox.restore(e);
                }
                let least = d.cover.least();
                self.cover = Some(d.cover);
                self.report.snapshot_lsn = Some(least);
                self.report.last_lsn = least;
                Ok(least + 1)
            }
            // The log is the truth: without a readable snapshot, replay all of it.
            Err(e) => {
                self.report.warnings.push(format!(
                    "the snapshot at LSN {} cannot be read ({e}); rebuilding from the whole log",
                    snap.lsn
                ));
                Ok(1)
            }
        }
    }

    /// Starts partition `n` from its own newest readable snapshot; returns the position
    /// to read its records from. One that is not one partition's is skipped.
    fn load_part_snapshot(
        &mut self,
        snaps: &dyn hunt_store::PartSnapshots,
        n: usize,
        dedupe: DedupeConfig,
    ) -> Result<Lsn, String> {
        let (latest, warnings) = snaps.latest_part(n as u32).map_err(|e| e.to_string())?;
        self.report.warnings.extend(warnings);
        let Some(snap) = latest else { return Ok(1) };
        let decoded = crate::snapshot::decode(&snap.payload, 1, dedupe).and_then(|d| {
            if d.cover.parts.len() == 1 {
                Ok(d)
            } else {
                Err(format!(
                    "it holds {} partitions, not one",
                    d.cover.parts.len()
                ))
            }
        });
        match decoded {
            Ok(mut d) => {
                let v = d.version.version;
                self.versions
                    .insert(v, Arc::new(Version::compile(d.version)?));
                self.latest = Some(v);
                self.in_force = vec![Some(v); self.partitions];
                if let Some(state) = d.states.pop() {
                    self.states[n] = state;
                }
                for e in d.outbox {
                    self.outbox.restore(e);
                }
                let cover = d.cover.widen(n, self.partitions);
                let least = cover.least();
                self.cover = Some(cover);
                self.report.snapshot_lsn = Some(least);
                self.report.last_lsn = least;
                Ok(least + 1)
            }
            Err(e) => {
                self.report.warnings.push(format!(
                    "partition {n}'s snapshot at LSN {} cannot be read ({e}); rebuilding it from its whole log",
                    snap.lsn
                ));
                Ok(1)
            }
        }
    }

    /// Applies an event again, with the reward answers its record holds, and compares;
    /// queues its deliveries. Either is skipped where the snapshot holds it already.
    fn event(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        let e = decode_event(payload)?;
        let p = partition_of(&e.event.user, self.partitions);
        if self.only.is_some_and(|o| o != p) {
            return Ok(());
        }
        let v = self.in_force[p]
            .and_then(|n| self.versions.get(&n))
            .ok_or("an event before any hunts file version")?
            .clone();
        let (apply, deliver) = match &self.cover {
            Some(c) => {
                let p = c.partition_of(&e.event.user);
                (lsn > c.parts[p], lsn > c.deliveries[p])
            }
            None => (true, true),
        };
        if deliver && notifies(v.catalog(), &e.outcomes) {
            let origin = Origin::of(&e.event, e.received, e.outcomes.clone().into());
            // Most are delivered further on: bodies are built at the end, for those
            // still waiting.
            for d in deliveries_unbuilt(v.catalog(), lsn, p as u32, &origin) {
                self.outbox.queue(d, e.received);
            }
        }
        if !apply {
            return Ok(());
        }
        let state = &mut self.states[p];
        let mut alloc = ReplayAllocator::new(&e.outcomes);
        let answer = match state.apply(&v.engine, &e.event, e.received, &mut alloc) {
            Ok(a) => a,
            Err(panicked) => {
                // A bug the event did not meet when it was accepted: the customer misses
                // its progress, but keeps the codes it granted; its answer stays for
                // duplicates, and the rebuild goes on instead of failing every start.
                state.keep_recorded_grants(&e.event, e.received, &e.outcomes);
                let key = state.dedupe.key(&e.event.user, &e.event.id);
                let _ =
                    state
                        .dedupe
                        .insert_key(key, e.received, crate::state::answer_of(&e.outcomes));
                self.report
                    .warnings
                    .push(format!("record {lsn}: {panicked}"));
                crate::state::answer_of(&[])
            }
        };
        self.report.events += 1;
        if alloc.unanswered > 0 || answer[..] != e.outcomes[..] {
            self.report.mismatches += 1;
            if self.report.first_mismatch.is_none() {
                self.report.first_mismatch = Some(describe(lsn, &e.outcomes, &answer));
            }
        }
        Ok(())
    }

    /// A new version of the hunts file: in force from here on. A snapshot is taken with
    /// one version in force and after it was recorded, so every part of it is before
    /// a later version's record.
    fn config(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        if let Some(c) = &self.cover {
            // A partition's own snapshot holds nothing of the others (`Lsn::MAX`).
            let reach = c
                .parts
                .iter()
                .chain(&c.deliveries)
                .filter(|r| **r != Lsn::MAX)
                .max()
                .copied();
            if reach.is_some_and(|r| r >= lsn) {
                return Err(format!(
                    "a hunts file version recorded at {lsn}, inside the snapshot's span ({} to {})",
                    c.least(),
                    reach.unwrap_or(0)
                ));
            }
        }
        let c = decode_config(payload)?;
        let n = c.version;
        self.versions.insert(n, Arc::new(Version::compile(c)?));
        self.latest = Some(n);
        self.in_force = vec![Some(n); self.partitions];
        self.report.config_versions += 1;
        Ok(())
    }

    /// A version each partition puts in force at its own marker: known from here on,
    /// in force nowhere yet.
    fn marked_version(&mut self, payload: &[u8]) -> Result<(), String> {
        let c = decode_config(payload)?;
        let n = c.version;
        if self.latest.is_some_and(|l| l >= n) {
            // Held already (a snapshot taken after it, say).
            return Ok(());
        }
        self.versions.insert(n, Arc::new(Version::compile(c)?));
        self.latest = Some(n);
        self.report.config_versions += 1;
        Ok(())
    }

    /// A partition's marker: its events after it are applied with the version it
    /// names. One inside the snapshot's span is held by the snapshot's state.
    fn marker(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        let m = decode_marker(payload)?;
        let p = m.partition as usize;
        if self.only.is_some_and(|o| o != p) {
            return Ok(());
        }
        if p >= self.partitions {
            return Err(format!(
                "a marker of partition {p}, but the log has {} partitions",
                self.partitions
            ));
        }
        if self.cover.as_ref().is_some_and(|c| lsn <= c.parts[p]) {
            return Ok(());
        }
        if !self.versions.contains_key(&m.version) {
            return Err(format!(
                "partition {p}'s marker names version {}, which is not recorded before it",
                m.version
            ));
        }
        self.in_force[p] = Some(m.version);
        Ok(())
    }
    /// A delivery's change of state.
    fn delivery(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        if self.cover.as_ref().is_some_and(|c| lsn <= c.changes) {
            return Ok(());
        }
        let d = outbox::decode(payload)?;
        if self.only.is_some() && self.outbox.get(&d.key).is_none() {
            // Another partition's delivery (a log that keeps one stream).
            return Ok(());
        }
        self.report.delivery_changes += 1;
        // A change that does not fit (two operators retrying one dead letter at once,
        // say) changes nothing; it must not stop a restart.
        if let Err(e) = self.outbox.apply(&d) {
            self.report.delivery_misfits += 1;
            if self.report.delivery_misfits <= 3 {
                self.report.warnings.push(format!("record {lsn}: {e}"));
            }
        }
        Ok(())
    }

    /// Deliveries still waiting get their bodies, read back from their events' records;
    /// the pools take back every code granted.
    fn finish(mut self, log: &dyn PartitionLog) -> Result<Recovered, String> {
        let missing = self.outbox.missing_bodies();
        if !missing.is_empty() {
            for (key, body) in crate::notify::deliver::load_bodies(log, missing)? {
                self.outbox.set_body(&key, body);
            }
        }
        let mut version = match self.latest.and_then(|n| self.versions.get(&n)) {
            Some(v) => Some(Version::compile(v.record.clone())?),
            None => None,
        };
        if let Some(v) = &mut version {
            v.restore_pools(self.states.iter().flat_map(|s| s.grants()))
                .map_err(|e| format!("rebuilding reward pools: {e}"))?;
        }
        let behind = self
            .in_force
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != self.latest)
            .filter_map(|(p, n)| Some((p as u32, self.versions.get(&(*n)?)?.clone())))
            .collect();
        Ok(Recovered {
            version,
            behind,
            states: self.states,
            outbox: self.outbox,
            report: self.report,
        })
    }
}

fn describe(lsn: Lsn, recorded: &[Outcome], produced: &[Outcome]) -> String {
    let show = |o: &[Outcome]| serde_json::to_string(o).unwrap_or_default();
    format!(
        "record {lsn}: recorded {} but applying it again gives {}",
        show(recorded),
        show(produced)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hunt_store::fs::RealFs;
    use hunt_store::{Log, LogConfig};

    use super::*;
    use crate::records::{ConfigRecord, KIND_CONFIG, encode_config};
    use crate::snapshot::{Cover, encode};

    const HUNTS: &str = "version: 1\nhunts:\n  - id: h\n    steps: [{ id: s, on: claim }]\n";

    fn version(n: u64) -> ConfigRecord {
        ConfigRecord {
            version: n,
            name: "hunts.yaml".into(),
            text: HUNTS.into(),
            at: 0,
        }
    }

    /// A log of two versions' records (positions 1 and 2), and a snapshot whose parts
    /// reach `cover`.
    fn rebuild_with(cover: Cover) -> Result<Recovered, String> {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(RealFs);
        let (log, _) = Log::open(fs.clone(), LogConfig::new(dir.path())).unwrap();
        for n in [1, 2] {
            log.submit(vec![(KIND_CONFIG, encode_config(&version(n)))])
                .unwrap()
                .wait()
                .unwrap();
        }
        let dedupe = DedupeConfig {
            window: hunt_core::dedupe::WINDOW_DEFAULT,
            entries_max: 10,
        };
        let state = PartitionState::new(dedupe, [1, 2]).copy_for_snapshot();
        let snaps = hunt_store::Snapshots::open(fs, dir.path()).unwrap();
        snaps
            .save(cover.least(), &encode(&version(1), &[state], &[], &cover))
            .unwrap();
        recover(&log, Some(&snaps), 1, dedupe, &mut |_| {})
    }

    #[test]
    fn a_version_inside_the_snapshots_span_is_refused_not_guessed() {
        let at = |part, deliveries, changes| Cover {
            parts: vec![part],
            deliveries: vec![deliveries],
            changes,
        };
        // Every part before the second version: it is applied.
        let r = rebuild_with(at(1, 1, 1)).unwrap();
        assert_eq!(r.report.config_versions, 1);
        assert_eq!(r.version.unwrap().record.version, 2);
        // A partition's state or deliveries already past it: the rebuild stops and says
        // why.
        for cover in [at(2, 1, 1), at(1, 2, 1)] {
            let e = rebuild_with(cover.clone()).err().expect("refused");
            assert!(
                e.contains("inside the snapshot's span (1 to 2)"),
                "{cover:?}: {e}"
            );
        }
    }
}
