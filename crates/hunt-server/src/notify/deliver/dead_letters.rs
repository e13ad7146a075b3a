//! The dead-letter queue: listing, reading, retrying and dropping, as operators do.

use super::*;

impl Notifier {
    /// Dead letters matching `filter`, oldest first, at most `limit`; and how many match.
    pub fn dead_letters(&self, filter: &Filter, limit: usize) -> (Vec<Entry>, usize) {
        let o = self.outbox.lock();
        let all: Vec<&Entry> = o
            .dead_letters()
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        let n = all.len();
        (all.into_iter().take(limit).cloned().collect(), n)
    }

    /// A delivery, pending or dead-lettered, with its body (read back from the log for
    /// a dead letter).
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let mut e = self.outbox.lock().get(key).cloned()?;
        if e.body.is_none() {
            let log = self.log.clone();
            let wanted = vec![(e.lsn, e.outcome, e.key.clone())];
            if let Ok(Ok(mut b)) =
                tokio::task::spawn_blocking(move || load_bodies(&*log, wanted)).await
                && !b.is_empty()
            {
                e.body = Some(b.remove(0).1);
            }
        }
        Some(e)
    }

    /// Sends dead letters matching `filter` back to be delivered (same keys, a fresh
    /// attempt budget, history kept), or drops them. Returns the keys.
    pub async fn operate(&self, filter: &Filter, retry: bool) -> Result<Vec<String>, String> {
        let _one = self.ops.lock().await;
        let keys: Vec<String> = {
            let o = self.outbox.lock();
            o.dead_letters()
                .into_iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.key.clone())
                .collect()
        };
        if retry {
            // Bodies back first, so a retried delivery is ready to send.
            let wanted: Vec<(u64, u32, String)> = {
                let o = self.outbox.lock();
                keys.iter()
                    .filter_map(|k| o.get(k))
                    .filter(|e| e.body.is_none())
                    .map(|e| (e.lsn, e.outcome, e.key.clone()))
                    .collect()
            };
            let log = self.log.clone();
            let bodies = tokio::task::spawn_blocking(move || load_bodies(&*log, wanted))
                .await
                .map_err(|e| e.to_string())??;
            let mut o = self.outbox.lock();
            for (k, b) in bodies {
                o.set_body(&k, b);
            }
        }
        let change = if retry {
            Change::Retried
        } else {
            Change::Dropped
        };
        for chunk in keys.chunks(10_000) {
            self.record(
                chunk
                    .iter()
                    .map(|k| (k.clone(), change.clone(), None))
                    .collect(),
            )
            .await?;
        }
        if retry {
            for rt in self.sinks() {
                rt.wake.notify_one();
            }
        }
        Ok(keys)
    }
}
