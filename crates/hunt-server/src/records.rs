//! What the server writes to the log: one record per accepted event (the event, when it
//! was received, and the outcomes it had), and one per hunts-file version.
//!
//! Payloads are postcard. An event's `data` and `traits` are kept as JSON text inside
//! it, because postcard cannot carry self-describing values. A record is decoded
//! whole or refused with the reason; the log's checksum already guarantees the bytes
//! are the ones written.

use std::sync::Arc;

use hunt_core::engine::{DenyReason, Event, Outcome};
use hunt_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The kinds of record the server writes: the byte the log stores beside each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An accepted event and its outcomes.
    Event = 1,
    /// A hunts-file version put in force.
    Config = 2,
    /// A change of a delivery's state (`notify::outbox`).
    Delivery = 3,
    /// A hunts-file version that each partition puts in force at its own marker (on a
    /// cluster, ADR 0015), not at this record's position.
    Version = 4,
    /// A partition puts a version in force: its events after this record are applied
    /// with it ([`Marker`]).
    Marker = 5,
}

impl RecordKind {
    /// The kind of a stored byte, if it is one.
    pub fn of(byte: u8) -> Option<RecordKind> {
        [
            RecordKind::Event,
            RecordKind::Config,
            RecordKind::Delivery,
            RecordKind::Version,
            RecordKind::Marker,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// Record kind: an accepted event and its outcomes.
pub const KIND_EVENT: u8 = RecordKind::Event as u8;
/// Record kind: a hunts-file version put in force.
pub const KIND_CONFIG: u8 = RecordKind::Config as u8;
/// Record kind: a change of a delivery's state.
pub const KIND_DELIVERY: u8 = RecordKind::Delivery as u8;
/// Record kind: a hunts-file version put in force partition by partition.
pub const KIND_VERSION: u8 = RecordKind::Version as u8;
/// Record kind: a partition's marker.
pub const KIND_MARKER: u8 = RecordKind::Marker as u8;

/// An outcome as written: one definition for writing (borrowed strings) and reading
/// (owned), so that the variant order, which is the format, cannot drift between the
/// two. `S` holds ids, `C` codes and reasons.
#[derive(Serialize, Deserialize)]
pub(crate) enum OutcomeRecord<S, C> {
    StepFound {
        hunt: S,
        step: S,
        found: u32,
        next_clue: Option<S>,
    },
    HuntCompleted {
        hunt: S,
    },
    RewardGranted {
        hunt: S,
        pool: S,
        code: C,
    },
    RewardDenied {
        hunt: S,
        pool: S,
        reason: C,
    },
    TrailCold {
        hunt: S,
        step: S,
    },
}

/// An outcome borrowed for encoding.
pub(crate) type OutcomeRef<'a> = OutcomeRecord<&'a str, &'a str>;
/// An outcome as read back.
pub(crate) type OutcomeOwned = OutcomeRecord<Arc<str>, String>;

#[derive(Serialize)]
struct EventRef<'a> {
    received: i64,
    id: &'a str,
    kind: &'a str,
    user: &'a str,
    time: Option<i64>,
    data: &'a str,
    traits: &'a str,
    outcomes: Vec<OutcomeRef<'a>>,
}

#[derive(Deserialize)]
struct EventOwned {
    received: i64,
    id: String,
    kind: String,
    user: String,
    time: Option<i64>,
    data: String,
    traits: String,
    outcomes: Vec<OutcomeOwned>,
}

/// An accepted event as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub event: Event,
    pub received: Timestamp,
    pub outcomes: Vec<Outcome>,
}

fn json_text(map: &serde_json::Map<String, serde_json::Value>) -> String {
    if map.is_empty() {
        String::new()
    } else {
        serde_json::to_string(map).unwrap_or_default()
    }
}

fn json_map(text: &str, field: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if text.is_empty() {
        return Ok(serde_json::Map::new());
    }
    serde_json::from_str(text).map_err(|e| format!("`{field}` is not a JSON object: {e}"))
}

/// The payload of an event record.
pub fn encode_event(event: &Event, received: Timestamp, outcomes: &[Outcome]) -> Vec<u8> {
    let data = json_text(&event.data);
    let traits = json_text(&event.traits);
    let rec = EventRef {
        received: received.0,
        id: &event.id,
        kind: &event.kind,
        user: &event.user,
        time: event.time.map(|t| t.0),
        data: &data,
        traits: &traits,
        outcomes: outcomes.iter().map(outcome_ref).collect(),
    };
    postcard::to_allocvec(&rec).expect("serializing to memory cannot fail")
}

pub(crate) fn outcome_ref(o: &Outcome) -> OutcomeRef<'_> {
    match o {
        Outcome::StepFound {
            hunt,
            step,
            found,
            next_clue,
        } => OutcomeRef::StepFound {
            hunt,
            step,
            found: *found,
            next_clue: next_clue.as_deref(),
        },
        Outcome::HuntCompleted { hunt } => OutcomeRef::HuntCompleted { hunt },
        Outcome::RewardGranted { hunt, pool, code } => {
            OutcomeRef::RewardGranted { hunt, pool, code }
        }
        Outcome::RewardDenied { hunt, pool, reason } => OutcomeRef::RewardDenied {
            hunt,
            pool,
            reason: reason.as_str(),
        },
        Outcome::TrailCold { hunt, step } => OutcomeRef::TrailCold { hunt, step },
    }
}

/// An outcome as read back, checked.
pub(crate) fn outcome_owned(o: OutcomeOwned) -> Result<Outcome, String> {
    Ok(match o {
        OutcomeOwned::StepFound {
            hunt,
            step,
            found,
            next_clue,
        } => Outcome::StepFound {
            hunt,
            step,
            found,
            next_clue,
        },
        OutcomeOwned::HuntCompleted { hunt } => Outcome::HuntCompleted { hunt },
        OutcomeOwned::RewardGranted { hunt, pool, code } => {
            Outcome::RewardGranted { hunt, pool, code }
        }
        OutcomeOwned::RewardDenied { hunt, pool, reason } => Outcome::RewardDenied {
            hunt,
            pool,
            reason: DenyReason::parse(&reason)
                .ok_or_else(|| format!("unknown denial reason `{reason}`"))?,
        },
        OutcomeOwned::TrailCold { hunt, step } => Outcome::TrailCold { hunt, step },
    })
}

/// Reads an event record's payload.
pub fn decode_event(payload: &[u8]) -> Result<EventRecord, String> {
    let rec: EventOwned =
        postcard::from_bytes(payload).map_err(|e| format!("not an event record: {e}"))?;
    let outcomes = rec
        .outcomes
        .into_iter()
        .map(outcome_owned)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(EventRecord {
        event: Event {
            id: rec.id,
            kind: rec.kind,
            user: rec.user,
            time: rec.time.map(Timestamp),
            data: json_map(&rec.data, "data")?,
            traits: json_map(&rec.traits, "traits")?,
        },
        received: Timestamp(rec.received),
        outcomes,
    })
}

/// A hunts-file version, as recorded when it was put in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// 1 for the first file, one more for each change.
    pub version: u64,
    /// The file's name as given (for reports only).
    pub name: String,
    pub text: String,
    /// When it was put in force (ms since the epoch).
    pub at: i64,
}

pub fn encode_config(c: &ConfigRecord) -> Vec<u8> {
    postcard::to_allocvec(c).expect("serializing to memory cannot fail")
}

pub fn decode_config(payload: &[u8]) -> Result<ConfigRecord, String> {
    postcard::from_bytes(payload).map_err(|e| format!("not a config record: {e}"))
}

/// A partition puts `version` in force here: written in its own rounds, so that its
/// events before it were applied with the version before, and those after with this
/// one, whatever other partitions do meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub partition: u32,
    pub version: u64,
}

pub fn encode_marker(m: &Marker) -> Vec<u8> {
    postcard::to_allocvec(m).expect("serializing to memory cannot fail")
}

pub fn decode_marker(payload: &[u8]) -> Result<Marker, String> {
    postcard::from_bytes(payload).map_err(|e| format!("not a marker: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_round_trip_with_every_outcome() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "e1", "type": "product_view", "user": "u-1", "time": "2026-11-27T10:00:00Z",
            "data": {"product": "sku-1", "price": 59.5, "tags": ["a", {"b": null}]},
            "traits": {"country": "US"}
        }))
        .unwrap();
        let h: Arc<str> = Arc::from("eggs");
        let outcomes = vec![
            Outcome::StepFound {
                hunt: h.clone(),
                step: "s1".into(),
                found: 1,
                next_clue: Some("look up".into()),
            },
            Outcome::StepFound {
                hunt: h.clone(),
                step: "s2".into(),
                found: 2,
                next_clue: None,
            },
            Outcome::HuntCompleted { hunt: h.clone() },
            Outcome::RewardGranted {
                hunt: h.clone(),
                pool: "p".into(),
                code: "C-1".into(),
            },
            Outcome::RewardDenied {
                hunt: h.clone(),
                pool: "p".into(),
                reason: DenyReason::WinnersCap,
            },
            Outcome::TrailCold {
                hunt: h,
                step: "s2".into(),
            },
        ];
        let bytes = encode_event(&event, Timestamp(1234), &outcomes);
        let back = decode_event(&bytes).unwrap();
        assert_eq!(back.event, event);
        assert_eq!(back.received, Timestamp(1234));
        assert_eq!(back.outcomes, outcomes);
    }

    /// The bytes of every outcome and record kind are the log's and the snapshot's
    /// format: a change here must be a new format, not an accident.
    #[test]
    fn outcome_records_and_kinds_keep_their_bytes() {
        let h: Arc<str> = Arc::from("h");
        let outcomes = [
            Outcome::StepFound {
                hunt: h.clone(),
                step: "s".into(),
                found: 2,
                next_clue: Some("c".into()),
            },
            Outcome::HuntCompleted { hunt: h.clone() },
            Outcome::RewardGranted {
                hunt: h.clone(),
                pool: "p".into(),
                code: "X".into(),
            },
            Outcome::RewardDenied {
                hunt: h.clone(),
                pool: "p".into(),
                reason: DenyReason::PoolEmpty,
            },
            Outcome::TrailCold {
                hunt: h,
                step: "s".into(),
            },
        ];
        let hex = |o: &Outcome| {
            postcard::to_allocvec(&outcome_ref(o))
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let got: Vec<String> = outcomes.iter().map(hex).collect();
        assert_eq!(
            got,
            [
                // variant, then each field: strings as length and bytes, `found` as a
                // varint, an option as 0 or 1 and its value.
                "000168017302010163",
                "010168",
                "02016801700158",
                "03016801700a706f6f6c5f656d707479",
                "0401680173",
            ]
            .map(|s| s.to_string()),
        );
        for o in &outcomes {
            let bytes = postcard::to_allocvec(&outcome_ref(o)).unwrap();
            let back: OutcomeOwned = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(&outcome_owned(back).unwrap(), o);
        }
        assert_eq!(
            (
                KIND_EVENT,
                KIND_CONFIG,
                KIND_DELIVERY,
                KIND_VERSION,
                KIND_MARKER
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(RecordKind::of(3), Some(RecordKind::Delivery));
        assert_eq!(RecordKind::of(5), Some(RecordKind::Marker));
        assert_eq!(RecordKind::of(6), None);
        let m = Marker {
            partition: 3,
            version: 7,
        };
        assert_eq!(encode_marker(&m), [3, 7], "two varints");
        assert_eq!(decode_marker(&encode_marker(&m)), Ok(m));
    }

    #[test]
    fn damaged_payloads_are_refused_with_a_reason() {
        let event = Event {
            id: "e".into(),
            kind: "t".into(),
            user: "u".into(),
            time: None,
            data: Default::default(),
            traits: Default::default(),
        };
        let bytes = encode_event(&event, Timestamp(1), &[]);
        for cut in 0..bytes.len() {
            assert!(decode_event(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_config(&[0xff; 3]).is_err());
    }
}
