//! Alerts: rules over the server's own figures, evaluated every second.
//!
//! A rule watches the backlog, a sink's dead letters, a sink's circuit breaker, a pool
//! (its share left, or when it will run out at the recent grant rate), or events that
//! failed to apply. A rule
//! that names no sink or pool applies to each. Each (rule, subject) is `ok`, `pending`
//! (its condition holds, but not yet for the rule's `for`) or `firing`; a change to or
//! from `firing` is logged, counted in `hunt_alert_firing{alert,subject}`, shown by
//! `GET /v1/alerts`, and POSTed to the alert webhook when one is configured.
//!
//! Here: the alerts' state and its rendering for `/metrics`. `config.rs`: the rules and
//! the alerts file. `evaluate.rs`: readings, state changes, the forecast, the webhook.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hunt_core::time::Timestamp;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

use crate::service::{Service, now};

mod config;
mod evaluate;

pub use config::{AlertWebhook, AlertsConfig, Condition, Rule};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Ok,
    Pending,
    Firing,
}

/// One (rule, subject).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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

/// A pool's forecast, as the `pool_runs_out_within` rule reads it.
#[derive(Debug, Clone, Copy)]
pub struct PoolForecast {
    /// The history the rate is taken over.
    pub window: Duration,
    /// Codes granted per second over the window; `None` until the window holds a tenth
    /// of its length of history with a falling count.
    pub rate_per_s: Option<f64>,
    /// When the pool runs out at that rate.
    pub runs_out_in: Option<Duration>,
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
        let mut v: Vec<AlertState> = self.states.lock().values().cloned().collect();
        v.sort_by_key(|a| (a.state != Phase::Firing, a.alert.clone(), a.subject.clone()));
        v
    }

    /// A pool's forecast as the first `pool_runs_out_within` rule for it sees it: the
    /// rule's window, the grant rate over it and when the pool runs out at that rate.
    /// `None` when no such rule applies to the pool.
    pub fn pool_forecast(&self, pool: &str, left: u64, now: Instant) -> Option<PoolForecast> {
        let window = self.config.rules.iter().find_map(|r| match &r.condition {
            Condition::PoolRunsOut {
                window, pool: p, ..
            } if p.as_deref().is_none_or(|p| p == pool) => Some(*window),
            _ => None,
        })?;
        let samples = self.samples.lock();
        let rate = samples
            .get(pool)
            .and_then(|s| evaluate::grant_rate(s, now, window, left));
        Some(PoolForecast {
            window,
            rate_per_s: rate,
            runs_out_in: rate.map(|r| Duration::from_secs_f64(left as f64 / r)),
        })
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

#[cfg(test)]
mod tests {
    use super::evaluate::forecast;
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

    /// The dashboard's forecast is the alert's: the same samples, window and rate.
    #[test]
    fn the_pool_forecast_is_the_alerts_own() {
        let alerts = Alerts::new(AlertsConfig::defaults(1000));
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let samples: VecDeque<(Instant, u64)> =
            (0..=60).map(|i| (s(i * 10), 1000 - i * 5)).collect();
        alerts.samples.lock().insert("bf".into(), samples.clone());
        let f = alerts.pool_forecast("bf", 700, s(600)).unwrap();
        assert_eq!(f.window, Duration::from_secs(15 * 60));
        assert_eq!(f.runs_out_in, forecast(&samples, s(600), f.window, 700));
        assert_eq!(f.runs_out_in.map(|d| d.as_secs()), Some(1400));
        assert_eq!(f.rate_per_s, Some(0.5));
        // A pool with no samples yet: the rule applies, no rate yet.
        let none = alerts.pool_forecast("other", 10, s(600)).unwrap();
        assert_eq!((none.rate_per_s, none.runs_out_in), (None, None));
        // No pool_runs_out_within rule: no forecast at all.
        let mut config = AlertsConfig::defaults(1000);
        config
            .rules
            .retain(|r| !matches!(r.condition, Condition::PoolRunsOut { .. }));
        assert!(
            Alerts::new(config)
                .pool_forecast("bf", 700, s(600))
                .is_none()
        );
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
