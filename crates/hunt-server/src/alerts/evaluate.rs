//! Evaluating the rules: a reading per (rule, subject), the state changes, the pool
//! forecast, and the alert webhook.

use super::*;

/// A figure one rule sees for one subject.
struct Reading {
    subject: String,
    holds: bool,
    value: f64,
}

impl Alerts {
    fn readings(&self, service: &Service, rule: &Rule, now: Instant) -> Vec<Reading> {
        let sinks = service.notifier.sinks();
        let in_scope = |scope: &Option<String>, id: &str| scope.as_deref().is_none_or(|s| s == id);
        match &rule.condition {
            Condition::Backlog { over } => {
                let n = service.backlog_total();
                vec![Reading {
                    subject: String::new(),
                    holds: n > *over,
                    value: n as f64,
                }]
            }
            Condition::DeadLetters { over, sink } => sinks
                .iter()
                .filter(|rt| in_scope(sink, &rt.id))
                .map(|rt| {
                    let dead = service.dead_letter_count(&rt.id);
                    Reading {
                        subject: rt.id.to_string(),
                        holds: dead > *over as u64,
                        value: dead as f64,
                    }
                })
                .collect(),
            Condition::BreakerOpen { at_least, sink } => sinks
                .iter()
                .filter(|rt| in_scope(sink, &rt.id))
                .map(|rt| {
                    let open = rt.open_for(now);
                    Reading {
                        subject: rt.id.to_string(),
                        holds: open.is_some_and(|d| d >= *at_least),
                        value: open.map_or(0.0, |d| d.as_secs_f64()),
                    }
                })
                .collect(),
            Condition::PoolBelow { percent, pool } => service
                .pools()
                .into_iter()
                .filter(|(id, size, _)| in_scope(pool, id) && *size > 0)
                .map(|(id, size, left)| {
                    let p = left as f64 * 100.0 / size as f64;
                    Reading {
                        subject: id.to_string(),
                        holds: p < *percent,
                        value: p,
                    }
                })
                .collect(),
            Condition::PoolRunsOut {
                within,
                window,
                pool,
            } => {
                let samples = self.samples.lock();
                service
                    .pools()
                    .into_iter()
                    .filter(|(id, _, _)| in_scope(pool, id))
                    .map(|(id, _, left)| {
                        let eta = samples
                            .get(&*id)
                            .and_then(|s| forecast(s, now, *window, left));
                        Reading {
                            subject: id.to_string(),
                            holds: eta.is_some_and(|e| e <= *within),
                            value: eta.map_or(-1.0, |e| e.as_secs_f64()),
                        }
                    })
                    .collect()
            }
            Condition::ApplyPanics { within } => {
                let n = service
                    .metrics
                    .apply_panics
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut seen = self.panics_seen.lock();
                if n > seen.0 {
                    *seen = (n, Some(now));
                }
                vec![Reading {
                    subject: String::new(),
                    holds: seen
                        .1
                        .is_some_and(|t| now.saturating_duration_since(t) <= *within),
                    value: n as f64,
                }]
            }
        }
    }

    /// One evaluation at `now`.
    pub fn evaluate(&self, service: &Service, now: Instant) {
        self.sample_pools(service, now);
        let wall = crate::service::now();
        let mut changes = Vec::new();
        let mut states = self.states.lock();
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.config.rules {
            for r in self.readings(service, rule, now) {
                seen.insert((rule.name.clone(), r.subject.clone()));
                let st = states
                    .entry((rule.name.clone(), r.subject.clone()))
                    .or_insert_with(|| AlertState {
                        alert: rule.name.clone(),
                        subject: r.subject.clone(),
                        state: Phase::Ok,
                        description: rule.describe(),
                        value: 0.0,
                        since: None,
                        holds_since: None,
                    });
                let before = st.state;
                st.read(&r, rule.hold, now, wall);
                if (before == Phase::Firing) != (st.state == Phase::Firing) {
                    changes.push(st.clone());
                }
            }
        }
        // A pool or sink no longer in the hunts file: its alerts go (resolved first,
        // if they were firing).
        states.retain(|k, st| {
            let keep = seen.contains(k);
            if !keep && st.state == Phase::Firing {
                st.state = Phase::Ok;
                changes.push(st.clone());
            }
            keep
        });
        drop(states);
        for c in changes {
            self.tell(c, wall);
        }
    }

    /// Pool samples for the forecasts, kept for the longest window asked.
    fn sample_pools(&self, service: &Service, now: Instant) {
        let longest = self
            .config
            .rules
            .iter()
            .filter_map(|r| match r.condition {
                Condition::PoolRunsOut { window, .. } => Some(window),
                _ => None,
            })
            .max();
        let Some(longest) = longest else { return };
        let mut samples = self.samples.lock();
        for (id, _, left) in service.pools() {
            let s = samples.entry(id.to_string()).or_default();
            s.push_back((now, left));
            while s
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > longest)
            {
                s.pop_front();
            }
        }
    }

    /// An alert that started or stopped firing: logged, and sent to the webhook.
    fn tell(&self, c: AlertState, wall: hunt_core::time::Timestamp) {
        let firing = c.state == Phase::Firing;
        if firing {
            tracing::warn!(
                alert = %c.alert,
                subject = %c.subject,
                value = c.value,
                "alert firing: {}",
                c.description
            );
        } else {
            tracing::info!(alert = %c.alert, subject = %c.subject, value = c.value, "alert resolved");
        }
        if let Some(w) = &self.config.webhook {
            let body = json!({
                "alert": c.alert,
                "subject": c.subject,
                "status": if firing { "firing" } else { "resolved" },
                "description": c.description,
                "value": c.value,
                "since": c.since,
                "at": wall,
            });
            tokio::spawn(post_alert(self.client.clone(), w.clone(), body));
        }
    }
}

impl AlertState {
    /// Takes a reading: pending while the condition holds, firing once it has held for
    /// `hold`, ok as soon as it does not.
    fn read(
        &mut self,
        r: &Reading,
        hold: Duration,
        now: Instant,
        wall: hunt_core::time::Timestamp,
    ) {
        self.value = r.value;
        if r.holds {
            let since = *self.holds_since.get_or_insert(now);
            if self.since.is_none() {
                self.since = Some(wall);
            }
            self.state = if now.duration_since(since) >= hold {
                Phase::Firing
            } else {
                Phase::Pending
            };
        } else {
            self.state = Phase::Ok;
            self.holds_since = None;
            self.since = None;
        }
    }
}

/// When a pool with `left` codes runs out at the rate its samples over `window` show;
/// `None` without a falling rate over at least a tenth of the window.
pub(super) fn forecast(
    samples: &VecDeque<(Instant, u64)>,
    now: Instant,
    window: Duration,
    left: u64,
) -> Option<Duration> {
    let rate = grant_rate(samples, now, window, left)?;
    Some(Duration::from_secs_f64(left as f64 / rate))
}

/// Codes granted per second over `window`, by the samples: `None` without a falling
/// count over at least a tenth of the window.
pub(super) fn grant_rate(
    samples: &VecDeque<(Instant, u64)>,
    now: Instant,
    window: Duration,
    left: u64,
) -> Option<f64> {
    let (t0, first) = samples
        .iter()
        .find(|(t, _)| now.duration_since(*t) <= window)?;
    let span = now.duration_since(*t0);
    if span < window / 10 || span.is_zero() {
        return None;
    }
    let used = first.checked_sub(left).filter(|u| *u > 0)?;
    Some(used as f64 / span.as_secs_f64())
}

/// POSTs one alert change, three tries at most; alerts also stand in `/metrics`.
async fn post_alert(client: reqwest::Client, w: AlertWebhook, body: serde_json::Value) {
    let bytes = body.to_string();
    for attempt in 0..3u32 {
        let mut req = client
            .post(&w.url)
            .timeout(w.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(s) = &w.secret {
            let t = now().0.div_euclid(1000);
            req = req.header(
                crate::notify::signature::HEADER,
                crate::notify::signature::sign(s, t, bytes.as_bytes()),
            );
        }
        match req.body(bytes.clone()).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::warn!(status = %r.status(), attempt, "the alert webhook refused an alert")
            }
            Err(e) => tracing::warn!(error = %e, attempt, "the alert webhook did not answer"),
        }
        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
    }
}
