//! The senders: one task per sink, each attempt signed and sent, its result recorded.

use super::*;

impl Notifier {
    pub(super) async fn sender_loop(self: Arc<Notifier>, rt: Arc<LiveSink>) {
        let mut inflight = JoinSet::new();
        loop {
            while inflight.try_join_next().is_some() {}
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let cfg = rt.config();
            if inflight.len() >= cfg.concurrency.max(1) {
                inflight.join_next().await;
                continue;
            }
            let now = Instant::now();
            let job = self.outbox.lock().take(&rt.id, now);
            let Some(job) = job else {
                let due = self.outbox.lock().next_due(&rt.id);
                let sleep =
                    tokio::time::sleep_until(due.unwrap_or(now + Duration::from_secs(3600)).into());
                tokio::select! {
                    _ = rt.wake.notified() => {}
                    _ = sleep => {}
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                }
                continue;
            };
            let removed = *rt.removed.lock();
            if let Some(v) = removed {
                let error = format!(
                    "not sent: sink `{}` is not in the hunts file in force (version {v})",
                    rt.id
                );
                let at = (self.clock)().0;
                let _ = self
                    .recorder
                    .send(Recorded::Change(
                        job.key,
                        Change::DeadLettered { error },
                        None,
                        at,
                    ))
                    .await;
                continue;
            }
            let permit = rt.breaker.lock().permit(now);
            match permit {
                Permit::WaitUntil(t) => {
                    // Waiting spends no attempt: the delivery goes back as it was.
                    self.outbox.lock().put_back(&job.key, None);
                    let sleep = tokio::time::sleep_until(t.into());
                    tokio::select! {
                        _ = sleep => {}
                        Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                    }
                }
                Permit::Send | Permit::Probe => {
                    inflight.spawn(self.clone().attempt(rt.clone(), cfg, job));
                }
            }
        }
    }

    pub(super) async fn attempt(
        self: Arc<Notifier>,
        rt: Arc<LiveSink>,
        cfg: Arc<SinkConfig>,
        mut job: Job,
    ) {
        if job.body.is_none() && !self.read_back_body(&mut job).await {
            return;
        }
        rt.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let body = job.body.clone().unwrap_or_else(|| Arc::from(Vec::new()));
        let result = send(
            &self.client,
            &cfg,
            &job.key,
            job.attempts,
            &body,
            (self.clock)(),
        )
        .await;
        let now = Instant::now();
        rt.metrics
            .attempt_seconds
            .observe(now.duration_since(started).as_secs_f64());
        rt.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let change = match result {
            Ok(()) => {
                rt.success();
                (job.key, Change::Delivered, None)
            }
            Err(f) => {
                if f.permanent {
                    rt.success();
                } else {
                    rt.failure(now);
                }
                let attempts = job.attempts + 1;
                let age_ms = ((self.clock)().0 - job.since.0).max(0) as u64;
                let delay = if f.permanent {
                    None
                } else {
                    cfg.retry
                        .next_delay(attempts, Duration::from_millis(age_ms), self.draw())
                        .map(|d| d.max(f.retry_after.unwrap_or_default()))
                };
                match delay {
                    Some(d) => (job.key, Change::Failed { error: f.error }, Some(now + d)),
                    None => {
                        let why = if f.unsent {
                            "not retried: set the variable and restart, then retry this dead letter"
                                .to_string()
                        } else if f.permanent {
                            "not retried: the receiver refused this delivery".to_string()
                        } else if attempts >= cfg.retry.attempts_max {
                            format!(
                                "no attempts left ({attempts} of {})",
                                cfg.retry.attempts_max
                            )
                        } else {
                            "too old to try again (`max_age`)".to_string()
                        };
                        (
                            job.key,
                            Change::DeadLettered {
                                error: format!("{}; {why}", f.error),
                            },
                            None,
                        )
                    }
                }
            }
        };
        let (key, change, again) = change;
        let _ = self
            .recorder
            .send(Recorded::Change(key, change, again, (self.clock)().0))
            .await;
        rt.wake.notify_one();
    }

    /// Not expected (bodies are read back before a retry and on start), but never send
    /// an empty body: reads it back now; without it the delivery is dead-lettered.
    async fn read_back_body(&self, job: &mut Job) -> bool {
        let log = self.log.clone();
        let wanted = vec![(job.lsn, job.outcome, job.key.clone())];
        let got = tokio::task::spawn_blocking(move || load_bodies(&*log, wanted)).await;
        match got {
            Ok(Ok(mut b)) if !b.is_empty() => {
                let body = b.remove(0).1;
                self.outbox.lock().set_body(&job.key, body.clone());
                job.body = Some(body);
                true
            }
            _ => {
                let error =
                    "not sent: its event's record cannot be read back from the log".to_string();
                let change = Change::DeadLettered { error };
                let at = (self.clock)().0;
                let _ = self
                    .recorder
                    .send(Recorded::Change(job.key.clone(), change, None, at))
                    .await;
                false
            }
        }
    }
}

/// One attempt: POST the CloudEvent, signed when the sink has a secret.
pub(super) async fn send(
    client: &reqwest::Client,
    cfg: &SinkConfig,
    key: &str,
    attempts: u32,
    body: &Arc<[u8]>,
    now: Timestamp,
) -> Result<(), Failure> {
    let secret = cfg.secret.as_ref().map_err(|var| Failure {
        error: format!("not sent: the signing secret's variable {var} is not set"),
        permanent: true,
        unsent: true,
        retry_after: None,
    })?;
    let mut req = client
        .post(&cfg.url)
        .timeout(cfg.timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/cloudevents+json; charset=utf-8",
        )
        .header("Idempotency-Key", key)
        .header("Hunt-Attempt", (attempts + 1).to_string());
    if let Some(s) = secret {
        req = req.header(
            signature::HEADER,
            signature::sign(s, now.0.div_euclid(1000), body),
        );
    }
    let resp = req.body(body.to_vec()).send().await.map_err(|e| Failure {
        error: describe(&e, cfg.timeout),
        permanent: false,
        unsent: false,
        retry_after: None,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    // A little of what the receiver said helps whoever reads the dead letter.
    let said = match tokio::time::timeout(Duration::from_millis(500), resp.bytes()).await {
        Ok(Ok(b)) if !b.is_empty() => {
            let text = String::from_utf8_lossy(&b[..b.len().min(200)])
                .trim()
                .to_string();
            format!(": {text}")
        }
        _ => String::new(),
    };
    let code = status.as_u16();
    let permanent = status.is_client_error() && !matches!(code, 408 | 425 | 429);
    let error = if status.is_redirection() {
        format!("HTTP {status}: redirects are not followed; point the sink at the final URL")
    } else {
        format!("HTTP {status}{said}")
    };
    Err(Failure {
        error,
        permanent: permanent || status.is_redirection(),
        unsent: false,
        retry_after,
    })
}

pub(super) fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {} ms (the sink's timeout)",
            timeout.as_millis()
        );
    }
    let mut s = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
