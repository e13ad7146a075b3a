//! What changed in the notification sinks.

use crate::catalog::{Catalog, Sink};

use super::{Change, ChangeKind};

fn sink_text(s: &Sink) -> String {
    format!(
        "{} (timeout {}, max_attempts {}, concurrency {})",
        s.url, s.timeout, s.max_attempts, s.concurrency
    )
}

pub(super) fn sinks(old: &Catalog, new: &Catalog, out: &mut Vec<Change>) {
    for s in &new.sinks {
        match old.sinks.iter().find(|o| o.id == s.id) {
            None => out.push(
                Change::new(
                    ChangeKind::SinkAdded,
                    format!("sink {} added: {}", s.id, sink_text(s)),
                    "outcomes from now on are sent to it",
                )
                .sink(&s.id),
            ),
            Some(o)
                if sink_text(o) != sink_text(s)
                    || o.secret_env != s.secret_env
                    || o.max_age != s.max_age
                    || o.breaker_failures != s.breaker_failures
                    || o.breaker_open_for != s.breaker_open_for =>
            {
                out.push(
                    Change::new(
                        ChangeKind::SinkChanged,
                        format!("sink {}: {} → {}", s.id, sink_text(o), sink_text(s)),
                        "deliveries waiting and new ones use the new settings",
                    )
                    .sink(&s.id),
                )
            }
            Some(_) => {}
        }
    }
    for o in &old.sinks {
        if !new.sinks.iter().any(|s| s.id == o.id) {
            out.push(
                Change::new(
                    ChangeKind::SinkRemoved,
                    format!("sink {} removed", o.id),
                    "deliveries waiting for it stay in the queue and the dead-letter queue",
                )
                .sink(&o.id),
            );
        }
    }
}
