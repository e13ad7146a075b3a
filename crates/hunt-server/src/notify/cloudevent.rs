//! What a webhook receives: one CloudEvent 1.0 (structured JSON) per outcome and sink.
//!
//! The CloudEvent `id` is the delivery's idempotency key, `<lsn>.<outcome index>.<sink>`:
//! stable across retries, restarts and re-deliveries from the dead-letter queue, and
//! different for every (outcome, sink), so a receiver that keeps the ids it has seen
//! processes each outcome once.

use hunt_core::catalog::Catalog;
use hunt_core::engine::{Event, Outcome};
use hunt_core::time::Timestamp;
use hunt_store::Lsn;
use serde_json::{Value, json};

/// One outcome for one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Index into the catalog's sinks.
    pub sink: usize,
    pub sink_id: std::sync::Arc<str>,
    pub hunt: std::sync::Arc<str>,
    /// The event record's LSN and the outcome's index in it.
    pub lsn: Lsn,
    pub outcome: u32,
    /// The partition of the event (its customer's): the changes of the delivery's
    /// state go to its rounds.
    pub partition: u32,
    pub key: String,
    /// The CloudEvent, serialized.
    pub body: Vec<u8>,
}

/// What a delivery tells of the event behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub user: String,
    pub id: String,
    pub kind: String,
    pub received: Timestamp,
    pub outcomes: std::sync::Arc<[Outcome]>,
}

impl Origin {
    pub fn of(event: &Event, received: Timestamp, outcomes: std::sync::Arc<[Outcome]>) -> Origin {
        Origin {
            user: event.user.clone(),
            id: event.id.clone(),
            kind: event.kind.clone(),
            received,
            outcomes,
        }
    }
}

/// Whether any of `outcomes` goes to a sink.
pub fn notifies(catalog: &Catalog, outcomes: &[Outcome]) -> bool {
    !catalog.sinks.is_empty()
        && outcomes.iter().any(|o| {
            catalog
                .hunt_index(o.hunt())
                .is_some_and(|h| !catalog.hunts[h].notify.is_empty())
        })
}

/// The CloudEvent `type` of an outcome.
pub fn event_type(o: &Outcome) -> &'static str {
    match o {
        Outcome::StepFound { .. } => "hunt.step.found",
        Outcome::HuntCompleted { .. } => "hunt.completed",
        Outcome::RewardGranted { .. } => "hunt.reward.granted",
        Outcome::RewardDenied { .. } => "hunt.reward.denied",
        Outcome::TrailCold { .. } => "hunt.trail.cold",
    }
}

/// The deliveries owed for the outcomes of the event recorded at `lsn`: each outcome to
/// every sink its hunt notifies, in outcome order, then sink order. Bodies are left
/// empty: [`body_of`] builds one when its delivery is about to be sent.
pub fn deliveries_unbuilt(
    catalog: &Catalog,
    lsn: Lsn,
    partition: u32,
    origin: &Origin,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    for (i, o) in origin.outcomes.iter().enumerate() {
        let Some(h) = catalog.hunt_index(o.hunt()) else {
            continue;
        };
        for &sink in &catalog.hunts[h].notify {
            out.push(Delivery {
                sink,
                sink_id: catalog.sinks[sink].id.clone(),
                hunt: o.hunt().clone(),
                lsn,
                outcome: i as u32,
                partition,
                key: format!("{lsn}.{i}.{}", catalog.sinks[sink].id),
                body: Vec::new(),
            });
        }
    }
    out
}

/// The body of outcome `index` of the event in `origin`, for the delivery `key` (as
/// [`deliveries_unbuilt`] made it); also to read a dead letter's body back from its
/// event's record.
pub fn body_of(key: &str, origin: &Origin, index: u32) -> Option<Vec<u8>> {
    let o = origin.outcomes.get(index as usize)?;
    Some(serde_json::to_vec(&cloudevent(key, origin, o)).expect("a JSON value serializes"))
}

fn cloudevent(key: &str, origin: &Origin, o: &Outcome) -> Value {
    let mut data = serde_json::to_value(o).expect("an outcome serializes");
    data["user"] = json!(origin.user);
    data["event_id"] = json!(origin.id);
    data["event_type"] = json!(origin.kind);
    json!({
        "specversion": "1.0",
        "id": key,
        "source": format!("/hunts/{}", o.hunt()),
        "type": event_type(o),
        "subject": origin.user,
        "time": origin.received,
        "datacontenttype": "application/json",
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
version: 1
pools: [{ id: p, codes: [C-1] }]
sinks:
  - { id: crm, url: "https://crm.example/hook" }
  - { id: audit, url: "https://audit.example/hook" }
hunts:
  - id: h
    steps: [{ id: s, on: claim }]
    reward: { pool: p }
    notify: [crm, audit]
  - id: quiet
    steps: [{ id: s, on: claim }]
"#;

    #[test]
    fn each_outcome_goes_to_each_sink_of_its_hunt_with_a_stable_key() {
        let (catalog, _) = Catalog::load("f.yaml", FILE).unwrap();
        let event: Event =
            serde_json::from_value(json!({"id": "e9", "type": "claim", "user": "ann"})).unwrap();
        let outcomes = vec![
            Outcome::StepFound {
                hunt: "h".into(),
                step: "s".into(),
                found: 1,
                next_clue: None,
            },
            Outcome::StepFound {
                hunt: "quiet".into(),
                step: "s".into(),
                found: 1,
                next_clue: None,
            },
            Outcome::RewardGranted {
                hunt: "h".into(),
                pool: "p".into(),
                code: "C-1".into(),
            },
        ];
        let origin = Origin::of(&event, Timestamp(1_795_766_400_000), outcomes.into());
        assert!(notifies(&catalog, &origin.outcomes));
        assert!(
            !notifies(&catalog, &origin.outcomes[1..2]),
            "`quiet` has no sinks"
        );
        let mut d = deliveries_unbuilt(&catalog, 77, 0, &origin);
        for x in &mut d {
            x.body = body_of(&x.key, &origin, x.outcome).unwrap();
        }
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["77.0.crm", "77.0.audit", "77.2.crm", "77.2.audit"]);
        let ce: Value = serde_json::from_slice(&d[2].body).unwrap();
        assert_eq!(ce["id"], "77.2.crm");
        assert_eq!(ce["type"], "hunt.reward.granted");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["subject"], "ann");
        assert_eq!(ce["time"], "2026-11-27T08:00:00Z");
        assert_eq!(ce["data"]["code"], "C-1");
        assert_eq!(ce["data"]["event_id"], "e9");
        // The same inputs give the same bytes: a retry sends what the first try sent.
        let again = deliveries_unbuilt(&catalog, 77, 0, &origin);
        assert_eq!(again.len(), d.len());
        // A dead letter's body, rebuilt from the record, is the body first sent.
        assert_eq!(body_of("77.2.crm", &origin, 2).unwrap(), d[2].body);
        assert_eq!(body_of("77.9.crm", &origin, 9), None);
    }
}
