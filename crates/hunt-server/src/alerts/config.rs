//! Alert rules: what each watches, the defaults, and reading an alerts file.

use std::time::Duration;

use serde::Deserialize;

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
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let rule = rule(i, r, &rules)?;
            rules.push(rule);
        }
        let webhook = file.webhook.map(webhook).transpose()?;
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

/// A duration of the file (`30s`, `5m`); `what` names it in the error.
fn dur(v: &str, what: &str) -> Result<Duration, String> {
    let d = hunt_core::time::Duration::parse(v).map_err(|e| format!("{what}: {e}"))?;
    Ok(Duration::from_millis(d.0.max(0) as u64))
}

/// The `i`-th rule of the file, checked (its name against the rules `before` it).
fn rule(i: usize, r: RuleSpec, before: &[Rule]) -> Result<Rule, String> {
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
    if before.iter().any(|x| x.name == name) {
        return Err(format!("{at}: the name is used twice"));
    }
    let condition = condition(&at, &r)?;
    check_scopes(&at, &r, &condition)?;
    let hold = match &r.hold {
        Some(t) => dur(t, &format!("{at}: `for`"))?,
        None => Duration::ZERO,
    };
    Ok(Rule {
        name,
        condition,
        hold,
    })
}

/// The one condition a rule gives.
fn condition(at: &str, r: &RuleSpec) -> Result<Condition, String> {
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
    match conditions.len() {
        1 => Ok(conditions.remove(0)),
        0 => Err(format!("{at}: give one condition: {kinds}")),
        _ => Err(format!("{at}: give one condition, not several: {kinds}")),
    }
}

/// `sink`, `pool` and `window` only go with the conditions they scope.
fn check_scopes(at: &str, r: &RuleSpec, condition: &Condition) -> Result<(), String> {
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
    Ok(())
}

/// Where alerts are sent, checked.
fn webhook(w: WebhookSpec) -> Result<AlertWebhook, String> {
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
                .ok_or_else(|| format!("webhook: the variable {var} (`secret_env`) is not set"))?
                .into_bytes(),
        ),
    };
    Ok(AlertWebhook {
        url: w.url,
        secret,
        timeout: match &w.timeout {
            Some(t) => dur(t, "webhook: `timeout`")?,
            None => Duration::from_secs(5),
        },
    })
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
