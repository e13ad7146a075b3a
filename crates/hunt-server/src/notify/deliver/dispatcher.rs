//! The dispatcher: rounds handed over by the partitions, queued as deliveries once durable.

use super::*;

impl Notifier {
    pub(super) async fn dispatcher(self: Arc<Notifier>, mut rx: mpsc::Receiver<Dispatch>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Dispatch::Barrier(tx) => {
                    let _ = tx.send(());
                }
                Dispatch::Round(r) => {
                    // A failed log stops the server (fail-stop); nothing to queue.
                    let Ok(span) = r.ticket.await else {
                        self.in_flight.done(r.partition, None);
                        continue;
                    };
                    self.queue_round(r.partition, span, &r.version, r.items)
                        .await;
                }
            }
        }
    }

    pub(super) async fn queue_round(
        &self,
        partition: u32,
        span: Span,
        version: &Version,
        items: Vec<(usize, Origin)>,
    ) {
        let gate = self.gate.read().await;
        let at = (self.clock)().0;
        // Decided against the queues' sizes at the start (only this task adds to them),
        // bodies built outside the lock, inserted in short spans: the senders and the
        // recorder, on the same runtime threads, never wait long for the outbox.
        let mut sizes: HashMap<Arc<str>, usize> = {
            let o = self.outbox.lock();
            version
                .catalog()
                .sinks
                .iter()
                .map(|s| (s.id.clone(), o.pending_count(&s.id)))
                .collect()
        };
        let mut planned = Vec::new();
        let mut overflow = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for (i, origin) in items {
            let lsn = span.at(i);
            for mut d in deliveries_unbuilt(version.catalog(), lsn, partition, &origin) {
                let size = sizes.entry(d.sink_id.clone()).or_default();
                if *size >= self.queue_max {
                    // Over the sink's bound: held (never sent, its body never built)
                    // and recorded as a dead letter.
                    overflow.push((
                        d.key.clone(),
                        format!(
                            "not sent: sink `{}` already had {} deliveries waiting (its bound)",
                            d.sink_id, self.queue_max
                        ),
                    ));
                    planned.push((d, origin.received, true));
                    continue;
                }
                *size += 1;
                if !touched.contains(&d.sink_id) {
                    touched.push(d.sink_id.clone());
                }
                d.body = body_of(&d.key, &origin, d.outcome).unwrap_or_default();
                planned.push((d, origin.received, false));
            }
        }
        let mut planned = planned.into_iter().peekable();
        while planned.peek().is_some() {
            let mut o = self.outbox.lock();
            for (d, received, held) in planned.by_ref().take(512) {
                if held {
                    o.queue_held(d, received);
                } else {
                    o.queue(d, received);
                }
            }
        }
        // Queued, under the gate: a snapshot sees the round either in flight or queued.
        self.in_flight.done(partition, Some(span.last));
        // Let go of the gate before waiting for room at the recorder: the recorder
        // takes the gate too, and a snapshot waiting for it would stop both.
        drop(gate);
        for (key, error) in overflow {
            let _ = self
                .recorder
                .send(Recorded::Change(
                    key,
                    Change::DeadLettered { error },
                    None,
                    at,
                ))
                .await;
        }
        let sinks = self.sinks.read();
        for id in touched {
            if let Some(rt) = sinks.get(&id) {
                rt.wake.notify_one();
            }
        }
    }
}
