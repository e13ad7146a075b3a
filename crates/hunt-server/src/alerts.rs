//! Alerts: rules over the server's own figures, evaluated every second.
//!
//! A rule watches the backlog, a sink's dead letters, a sink's circuit breaker, or a
//! pool (its share left, or when it will run out at the recent grant rate). A rule
//! that names no sink or pool applies to each. Each (rule, subject) is `ok`, `pending`
//! (its condition holds, but not yet for the rule's `for`) or `firing`; a change to or
//! from `firing` is logged, counted in `hunt_alert_firing{alert,subject}`, shown by
//! `GET /v1/alerts`, and POSTed to the alert webhook when one is configured.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hunt_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::service::{Service, now};

/// What a rule watches, and its threshold.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Events queued for the partitions over `over`.
    Backlog { over: usize },
    /// Dead letters of a sink over `over`.
    DeadLetters { over: usize, sink: Option<String> },
    /// A sink's breaker open (or probing) for at least this long.
    BreakerOpen {
        at_least: Duration,
        sink: Option<String>,
    },
    /// A pool with less than `percent` % of its codes left.
    PoolBelow { percent: f64, pool: Option<String> },
    /// A pool that, at its grant rate over `window`, runs out within `within`.
    PoolRunsOut {
        within: Duration,
        window: Duration,
        pool: Option<String>,
    },
    /// An event whose applying panicked (a bug) within the last `within`.
    ApplyPanics { within: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    pub hold: Duration,
}

impl Rule {
    /// The condition in words.
    pub fn describe(&self) -> String {
        let d = |d: &Duration| fmt_duration(*d);
        let scope = |what: &str, s: &Option<String>| match s {
            Some(s) => format!("{what} `{s}`"),
            None => format!("any {what}"),
        };
        let base = match &self.condition {
            Condition::Backlog { over } => format!("backlog over {over} events"),
            Condition::DeadLetters { over, sink } => {
                format!("{} has over {over} dead letters", scope("sink", sink))
            }
            Condition::BreakerOpen { at_least, sink } => {
                format!("{}'s breaker open for {}", scope("sink", sink), d(at_least))
            }
            Condition::PoolBelow { percent, pool } => {
                format!("{} below {percent} % of its codes", scope("pool", pool))
            }
            Condition::PoolRunsOut {
                within,
                window,
                pool,
            } => format!(
                "{} runs out within {} at the grant rate of the last {}",
                scope("pool", pool),
                d(within),
                d(window)
            ),
            Condition::ApplyPanics { within } => {
                format!(
                    "an event failed to apply (a bug) within the last {}",
                    d(within)
                )
            }
        };
        if self.hold.is_zero() {
            base
        } else {
            format!("{base}, for {}", d(&self.hold))
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Where firing and resolved alerts are POSTed.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertWebhook {
    pub url: String,
    /// The signing secret (Stripe scheme, as for sinks), read from its variable.
    pub secret: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub rules: Vec<Rule>,
    pub webhook: Option<AlertWebhook>,
    /// How often the rules are evaluated.
    pub every: Duration,
}

impl AlertsConfig {
    /// The rules used without an alerts file: half the backlog bound for a minute, any
    /// dead letter, a breaker open for five minutes, a pool under 10 %, a pool running
    /// out within the hour at the last quarter hour's rate, an event that failed to
    /// apply within the last quarter hour.
    pub fn defaults(backlog_max: usize) -> AlertsConfig {
        let rule = |name: &str, condition, hold| Rule {
            name: name.into(),
            condition,
            hold,
        };
        AlertsConfig {
            rules: vec![
                rule(
                    "backlog_high",
                    Condition::Backlog {
                        over: backlog_max / 2,
                    },
                    Duration::from_secs(60),
                ),
                rule(
                    "dead_letters",
                    Condition::DeadLetters {
                        over: 0,
                        sink: None,
                    },
                    Duration::ZERO,
                ),
                rule(
                    "sink_down",
                    Condition::BreakerOpen {
                        at_least: Duration::from_secs(300),
                        sink: None,
                    },
                    Duration::ZERO,
                ),
                rule(
                    "pool_low",
                    Condition::PoolBelow {
                        percent: 10.0,
                        pool: None,
                    },
                    Duration::ZERO,
                ),
                rule(
                    "pool_running_out",
                    Condition::PoolRunsOut {
                        within: Duration::from_secs(3600),
                        window: Duration::from_secs(900),
                        pool: None,
                    },
                    Duration::ZERO,
                ),
                rule(
                    "engine_panics",
                    Condition::ApplyPanics {
                        within: Duration::from_secs(900),
                    },
                    Duration::ZERO,
                ),
            ],
            webhook: None,
            every: Duration::from_secs(1),
        }
    }

    /// Reads an alerts file (YAML). Errors name the rule and the field.
    pub fn parse(text: &str) -> Result<AlertsConfig, String> {
        let file: FileSpec =
            serde_saphyr::from_str(text).map_err(|e| format!("not an alerts file: {e}"))?;
        let dur = |v: &str, what: &str| -> Result<Duration, String> {
            let d = hunt_core::time::Duration::parse(v).map_err(|e| format!("{what}: {e}"))?;
            Ok(Duration::from_millis(d.0.max(0) as u64))
        };
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let name = r.name.clone().unwrap_or_default();
            let at = if name.is_empty() {
                format!("rule {}", i + 1)
            } else {
                format!("rule `{name}`")
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "{at}: `name` is required: letters, digits, `_` or `-`"
                ));
            }
            if rules.iter().any(|x: &Rule| x.name == name) {
                return Err(format!("{at}: the name is used twice"));
            }
            let mut conditions = Vec::new();
            if let Some(over) = r.backlog_over {
                conditions.push(Condition::Backlog { over });
            }
            if let Some(over) = r.dead_letters_over {
                conditions.push(Condition::DeadLetters {
                    over,
                    sink: r.sink.clone(),
                });
            }
            if let Some(t) = &r.breaker_open_for {
                conditions.push(Condition::BreakerOpen {
                    at_least: dur(t, &format!("{at}: `breaker_open_for`"))?,
                    sink: r.sink.clone(),
                });
            }
            if let Some(percent) = r.pool_below_percent {
                if !(0.0..=100.0).contains(&percent) {
                    return Err(format!(
                        "{at}: `pool_below_percent` must be 0 to 100, got {percent}"
                    ));
                }
                conditions.push(Condition::PoolBelow {
                    percent,
                    pool: r.pool.clone(),
                });
            }
            if let Some(t) = &r.pool_runs_out_within {
                let window = match &r.window {
                    Some(w) => dur(w, &format!("{at}: `window`"))?,
                    None => Duration::from_secs(900),
                };
                conditions.push(Condition::PoolRunsOut {
                    within: dur(t, &format!("{at}: `pool_runs_out_within`"))?,
                    window,
                    pool: r.pool.clone(),
                });
            }
            if let Some(t) = &r.apply_panics_within {
                conditions.push(Condition::ApplyPanics {
                    within: dur(t, &format!("{at}: `apply_panics_within`"))?,
                });
            }
            let kinds = "backlog_over, dead_letters_over, breaker_open_for, pool_below_percent, \
                         pool_runs_out_within or apply_panics_within";
            let condition = match conditions.len() {
                1 => conditions.remove(0),
                0 => return Err(format!("{at}: give one condition: {kinds}")),
                _ => return Err(format!("{at}: give one condition, not several: {kinds}")),
            };
            let sinky = matches!(
                condition,
                Condition::DeadLetters { .. } | Condition::BreakerOpen { .. }
            );
            let pooly = matches!(
                condition,
                Condition::PoolBelow { .. } | Condition::PoolRunsOut { .. }
            );
            if r.sink.is_some() && !sinky {
                return Err(format!(
                    "{at}: `sink` only scopes dead-letter and breaker rules"
                ));
            }
            if r.pool.is_some() && !pooly {
                return Err(format!("{at}: `pool` only scopes pool rules"));
            }
            if r.window.is_some() && !matches!(condition, Condition::PoolRunsOut { .. }) {
                return Err(format!(
                    "{at}: `window` only goes with `pool_runs_out_within`"
                ));
            }
            let hold = match &r.hold {
                Some(t) => dur(t, &format!("{at}: `for`"))?,
                None => Duration::ZERO,
            };
            rules.push(Rule {
                name,
                condition,
                hold,
            });
        }
        let webhook = match file.webhook {
            None => None,
            Some(w) => {
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    return Err(format!(
                        "webhook: `url` must be an http:// or https:// URL, got `{}`",
                        w.url
                    ));
                }
                let secret = match &w.secret_env {
                    None => None,
                    Some(var) => Some(
                        std::env::var(var)
                            .ok()
                            .filter(|v| !v.is_empty())
                            .ok_or_else(|| {
                                format!("webhook: the variable {var} (`secret_env`) is not set")
                            })?
                            .into_bytes(),
                    ),
                };
                Some(AlertWebhook {
                    url: w.url,
                    secret,
                    timeout: match &w.timeout {
                        Some(t) => dur(t, "webhook: `timeout`")?,
                        None => Duration::from_secs(5),
                    },
                })
            }
        };
        let every = match &file.every {
            Some(t) => dur(t, "`every`")?,
            None => Duration::from_secs(1),
        };
        if every.is_zero() {
            return Err("`every` must be longer than zero".into());
        }
        Ok(AlertsConfig {
            rules,
            webhook,
            every,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rules: Vec<RuleSpec>,
    webhook: Option<WebhookSpec>,
    every: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: Option<String>,
    backlog_over: Option<usize>,
    dead_letters_over: Option<usize>,
    breaker_open_for: Option<String>,
    pool_below_percent: Option<f64>,
    pool_runs_out_within: Option<String>,
    apply_panics_within: Option<String>,
    window: Option<String>,
    sink: Option<String>,
    pool: Option<String>,
    #[serde(rename = "for")]
    hold: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    url: String,
    secret_env: Option<String>,
    timeout: Option<String>,
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Ok,
    Pending,
    Firing,
}

/// One (rule, subject).
#[derive(Debug, Clone, Serialize)]
pub struct AlertState {
    pub alert: String,
    /// The sink or pool it is about (empty for the backlog).
    pub subject: String,
    pub state: Phase,
    pub description: String,
    /// The figure last seen (backlog, dead letters, seconds open, percent left, seconds
    /// to run out).
    pub value: f64,
    /// Since when the condition holds (pending or firing).
    pub since: Option<Timestamp>,
    #[serde(skip)]
    holds_since: Option<Instant>,
}

/// The alerts' state, shared with the API and `/metrics`.
pub struct Alerts {
    pub config: AlertsConfig,
    states: Mutex<BTreeMap<(String, String), AlertState>>,
    /// Remaining codes per pool over time, for the forecast.
    samples: Mutex<BTreeMap<String, VecDeque<(Instant, u64)>>>,
    /// Events that failed to apply, as last seen, and when that count last grew.
    panics_seen: Mutex<(u64, Option<Instant>)>,
    client: reqwest::Client,
}

/// A figure one rule sees for one subject.
struct Reading {
    subject: String,
    holds: bool,
    value: f64,
}

impl Alerts {
    pub fn new(config: AlertsConfig) -> Arc<Alerts> {
        crate::notify::install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(Alerts {
            config,
            states: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(BTreeMap::new()),
            panics_seen: Mutex::new((0, None)),
            client,
        })
    }

    /// Every alert known so far, firing first.
    pub fn states(&self) -> Vec<AlertState> {
        let mut v: Vec<AlertState> = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|a| (a.state != Phase::Firing, a.alert.clone(), a.subject.clone()));
        v
    }

    /// Evaluates every rule every `every` until the task is dropped.
    pub async fn run(self: Arc<Alerts>, service: Arc<Service>) {
        let mut tick = tokio::time::interval(self.config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.evaluate(&service, Instant::now());
        }
    }

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
                    let (_, dead) = service.notifier.counts(&rt.id);
                    Reading {
                        subject: rt.id.to_string(),
                        holds: dead > *over,
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
                let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
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
                let mut seen = self.panics_seen.lock().unwrap_or_else(|e| e.into_inner());
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
        // Pool samples for the forecasts, kept for the longest window asked.
        let longest = self
            .config
            .rules
            .iter()
            .filter_map(|r| match r.condition {
                Condition::PoolRunsOut { window, .. } => Some(window),
                _ => None,
            })
            .max();
        if let Some(longest) = longest {
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
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
        let wall = crate::service::now();
        let mut changes = Vec::new();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
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
                st.value = r.value;
                let before = st.state;
                if r.holds {
                    let since = *st.holds_since.get_or_insert(now);
                    if st.since.is_none() {
                        st.since = Some(wall);
                    }
                    st.state = if now.duration_since(since) >= rule.hold {
                        Phase::Firing
                    } else {
                        Phase::Pending
                    };
                } else {
                    st.state = Phase::Ok;
                    st.holds_since = None;
                    st.since = None;
                }
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

    /// `hunt_alert_firing{alert,subject}` for every alert known.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP hunt_alert_firing 1 while an alert fires, else 0.\n# TYPE hunt_alert_firing gauge"
        );
        for s in self.states() {
            let _ = writeln!(
                out,
                "hunt_alert_firing{{alert=\"{}\",subject=\"{}\"}} {}",
                crate::metrics::label(&s.alert),
                crate::metrics::label(&s.subject),
                u8::from(s.state == Phase::Firing)
            );
        }
    }
}

/// When a pool with `left` codes runs out at the rate its samples over `window` show;
/// `None` without a falling rate over at least a tenth of the window.
fn forecast(
    samples: &VecDeque<(Instant, u64)>,
    now: Instant,
    window: Duration,
    left: u64,
) -> Option<Duration> {
    let (t0, first) = samples
        .iter()
        .find(|(t, _)| now.duration_since(*t) <= window)?;
    let span = now.duration_since(*t0);
    if span < window / 10 || span.is_zero() {
        return None;
    }
    let used = first.checked_sub(left).filter(|u| *u > 0)?;
    let rate = used as f64 / span.as_secs_f64();
    Some(Duration::from_secs_f64(left as f64 / rate))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_and_bad_rules_are_named() {
        let c = AlertsConfig::parse(
            r#"
every: 2s
rules:
  - { name: backlog, backlog_over: 1000, for: 1m }
  - { name: crm-dlq, dead_letters_over: 10, sink: crm }
  - { name: down, breaker_open_for: 5m }
  - { name: low, pool_below_percent: 5, pool: bf }
  - { name: soon, pool_runs_out_within: 30m, window: 5m }
"#,
        )
        .unwrap();
        assert_eq!(c.every, Duration::from_secs(2));
        assert_eq!(c.rules.len(), 5);
        assert_eq!(c.rules[0].hold, Duration::from_secs(60));
        assert_eq!(
            c.rules[1].condition,
            Condition::DeadLetters {
                over: 10,
                sink: Some("crm".into())
            }
        );
        assert_eq!(
            c.rules[4].describe(),
            "any pool runs out within 30m at the grant rate of the last 5m"
        );
        assert_eq!(c.rules[0].describe(), "backlog over 1000 events, for 1m");
        for (text, says) in [
            ("rules: [{ backlog_over: 1 }]", "rule 1: `name` is required"),
            ("rules: [{ name: a }]", "rule `a`: give one condition"),
            (
                "rules: [{ name: a, backlog_over: 1, dead_letters_over: 2 }]",
                "not several",
            ),
            (
                "rules: [{ name: a, backlog_over: 1, sink: crm }]",
                "`sink` only",
            ),
            ("rules: [{ name: a, pool_below_percent: 150 }]", "0 to 100"),
            (
                "rules: [{ name: a, breaker_open_for: soon }]",
                "`breaker_open_for`",
            ),
            (
                "rules: [{ name: a, backlog_over: 1 }, { name: a, backlog_over: 2 }]",
                "used twice",
            ),
            ("rules: [{ name: a, backlog_ovr: 1 }]", "backlog_ovr"),
            ("webhook: { url: ops.example }", "http:// or https://"),
            (
                "webhook: { url: 'https://ops.example', secret_env: HUNT_TEST_NO_SUCH_VAR }",
                "HUNT_TEST_NO_SUCH_VAR",
            ),
        ] {
            let e = AlertsConfig::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_forecast_follows_the_grant_rate() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let window = Duration::from_secs(600);
        let samples: VecDeque<(Instant, u64)> =
            (0..=60).map(|i| (s(i * 10), 1000 - i * 5)).collect();
        // 300 codes in 600 s: 0.5 a second; 700 left last: 1400 s to go.
        let eta = forecast(&samples, s(600), window, 700).unwrap();
        assert_eq!(eta.as_secs(), 1400);
        // No grants: no forecast.
        let flat: VecDeque<(Instant, u64)> = (0..=60).map(|i| (s(i * 10), 500)).collect();
        assert_eq!(forecast(&flat, s(600), window, 500), None);
        // Too short a history to say.
        let short: VecDeque<(Instant, u64)> = [(s(0), 10), (s(1), 5)].into();
        assert_eq!(forecast(&short, s(1), window, 5), None);
    }
}
