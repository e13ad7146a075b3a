//! Rebuilding every projection from the newest snapshot and the log after it: on start,
//! and offline for `hunt replay`.
//!
//! Each event is applied again by the engine of the version in force at its record,
//! with the reward answers the record holds, and the outcomes are compared with the
//! recorded ones: a difference means the log and this build disagree, and is reported.

use hunt_core::engine::Outcome;
use hunt_store::{Lsn, PartitionLog, Partitions, Snapshots};

use crate::notify::cloudevent::{Origin, deliveries_unbuilt, notifies};
use crate::notify::outbox::{self, Outbox};
use crate::records::{RecordKind, decode_config, decode_event};
use crate::state::{DedupeConfig, PartitionState, ReplayAllocator, Version, partition_of};

/// What a rebuild did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The LSN of the snapshot started from, if any.
    pub snapshot_lsn: Option<Lsn>,
    /// Records read after it.
    pub records: u64,
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
    pub states: Vec<PartitionState>,
    /// Every pending delivery and dead letter.
    pub outbox: Outbox,
    pub report: Report,
}

/// Rebuilds from `snapshots` (if given) and `log`. `progress` is called with each LSN
/// read. Errors name the record.
pub fn recover(
    log: &dyn PartitionLog,
    snapshots: Option<&Snapshots>,
    partitions: usize,
    dedupe: DedupeConfig,
    progress: &mut dyn FnMut(Lsn),
) -> Result<Recovered, String> {
    let mut report = Report::default();
    let mut version = None;
    // A start without a snapshot picks a new secret for the dedupe window's
    // identities; a snapshot brings back the one its entries were made with.
    let secret = crate::state::dedupe_secret();
    let mut states: Vec<PartitionState> = (0..partitions)
        .map(|_| PartitionState::new(dedupe, secret))
        .collect();
    let mut from = 1;
    let mut outbox = Outbox::default();
    if let Some(snaps) = snapshots {
        let (latest, warnings) = snaps.latest().map_err(|e| e.to_string())?;
        report.warnings.extend(warnings);
        if let Some(snap) = latest {
            match crate::snapshot::decode(&snap.payload, partitions, dedupe) {
                Ok(d) => {
                    version = Some(Version::compile(d.version)?);
                    states = d.states;
                    for e in d.outbox {
                        outbox.restore(e);
                    }
                    from = snap.lsn + 1;
                    report.snapshot_lsn = Some(snap.lsn);
                    report.last_lsn = snap.lsn;
                }
                // The log is the truth: without a readable snapshot, replay all of it.
                Err(e) => report.warnings.push(format!(
                    "the snapshot at LSN {} cannot be read ({e}); rebuilding from the whole log",
                    snap.lsn
                )),
            }
        }
    }
    let reader = log.read(Partitions::All, from).map_err(|e| e.to_string())?;
    for rec in reader {
        let rec = rec.map_err(|e| e.to_string())?;
        if report.records == 0 && rec.lsn > from {
            return Err(format!(
                "the log starts at LSN {} but the rebuild needs LSN {from}: older segments \
                 were removed and no readable snapshot covers them",
                rec.lsn
            ));
        }
        report.records += 1;
        report.last_lsn = rec.lsn;
        match RecordKind::of(rec.kind) {
            Some(RecordKind::Event) => {
                let e =
                    decode_event(&rec.payload).map_err(|e| format!("record {}: {e}", rec.lsn))?;
                let v: &Version = version.as_ref().ok_or_else(|| {
                    format!("record {}: an event before any hunts file version", rec.lsn)
                })?;
                let state = &mut states[partition_of(&e.event.user, partitions)];
                let mut alloc = ReplayAllocator::new(&e.outcomes);
                let answer = match state.apply(&v.engine, &e.event, e.received, &mut alloc) {
                    Ok(a) => a,
                    Err(panicked) => {
                        // A bug the event did not meet when it was accepted: the
                        // customer misses its progress, but keeps the codes it granted;
                        // its answer stays for duplicates, and the rebuild goes on
                        // instead of failing every start.
                        state.keep_recorded_grants(&e.event, e.received, &e.outcomes);
                        let key = state.dedupe.key(&e.event.user, &e.event.id);
                        let _ = state.dedupe.insert_key(
                            key,
                            e.received,
                            crate::state::answer_of(&e.outcomes),
                        );
                        report
                            .warnings
                            .push(format!("record {}: {panicked}", rec.lsn));
                        crate::state::answer_of(&[])
                    }
                };
                report.events += 1;
                if notifies(v.catalog(), &e.outcomes) {
                    let origin = Origin::of(&e.event, e.received, e.outcomes.clone().into());
                    // Most are delivered further on: bodies are built at the end,
                    // for those still waiting.
                    for d in deliveries_unbuilt(v.catalog(), rec.lsn, &origin) {
                        outbox.queue(d, e.received);
                    }
                }
                if alloc.unanswered > 0 || answer[..] != e.outcomes[..] {
                    report.mismatches += 1;
                    if report.first_mismatch.is_none() {
                        report.first_mismatch = Some(describe(rec.lsn, &e.outcomes, &answer));
                    }
                }
            }
            Some(RecordKind::Config) => {
                let c =
                    decode_config(&rec.payload).map_err(|e| format!("record {}: {e}", rec.lsn))?;
                version =
                    Some(Version::compile(c).map_err(|e| format!("record {}: {e}", rec.lsn))?);
                report.config_versions += 1;
            }
            Some(RecordKind::Delivery) => {
                let d =
                    outbox::decode(&rec.payload).map_err(|e| format!("record {}: {e}", rec.lsn))?;
                report.delivery_changes += 1;
                // A change that does not fit (two operators retrying one dead letter
                // at once, say) changes nothing; it must not stop a restart.
                if let Err(e) = outbox.apply(&d) {
                    report.delivery_misfits += 1;
                    if report.delivery_misfits <= 3 {
                        report.warnings.push(format!("record {}: {e}", rec.lsn));
                    }
                }
            }
            None => return Err(format!("record {}: unknown kind {}", rec.lsn, rec.kind)),
        }
        progress(rec.lsn);
    }
    // Deliveries still waiting get their bodies, read back from their events' records.
    let missing = outbox.missing_bodies();
    if !missing.is_empty() {
        for (key, body) in crate::notify::deliver::load_bodies(log, missing)? {
            outbox.set_body(&key, body);
        }
    }
    if let Some(v) = &mut version {
        v.restore_pools(states.iter().flat_map(|s| s.grants()))
            .map_err(|e| format!("rebuilding reward pools: {e}"))?;
    }
    Ok(Recovered {
        version,
        states,
        outbox,
        report,
    })
}

fn describe(lsn: Lsn, recorded: &[Outcome], produced: &[Outcome]) -> String {
    let show = |o: &[Outcome]| serde_json::to_string(o).unwrap_or_default();
    format!(
        "record {lsn}: recorded {} but applying it again gives {}",
        show(recorded),
        show(produced)
    )
}
