//! `/metrics`: the ingest path's counters plus figures read at scrape time from the
//! projections — backlog per partition, per-hunt finds, completions and grants, and
//! what each pool has left.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::metrics::label;
use crate::service::Service;

pub async fn render(service: &Service) -> String {
    let mut out = String::with_capacity(8 << 10);
    service.metrics.render(&mut out);
    if let Some(m) = service
        .config
        .provided_log
        .as_ref()
        .and_then(|p| p.metrics.as_ref())
    {
        m.render(&mut out);
    }
    // Only the partitions this node applies: on a cluster whose partitions are spread
    // over nodes, each owner writes its share.
    let _ = writeln!(
        out,
        "# HELP hunt_partition_backlog_events Events queued for a partition, not yet applied.\n# TYPE hunt_partition_backlog_events gauge"
    );
    for (p, n) in service.backlog().iter().enumerate() {
        if service.owns(p) {
            let _ = writeln!(
                out,
                "hunt_partition_backlog_events{{partition=\"{p}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP hunt_partition_applied_total Events a partition has taken from its queue since the start: with the backlog, how long it needs to clear it.\n# TYPE hunt_partition_applied_total counter"
    );
    for (p, n) in service.applied_per_partition().iter().enumerate() {
        if service.owns(p) {
            let _ = writeln!(out, "hunt_partition_applied_total{{partition=\"{p}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP hunt_log_durable_lsn The last LSN known durable.\n# TYPE hunt_log_durable_lsn gauge\nhunt_log_durable_lsn {}",
        service.durable_lsn()
    );
    let v = service.version();
    let _ = writeln!(
        out,
        "# HELP hunt_config_version The hunts file version in force.\n# TYPE hunt_config_version gauge\nhunt_config_version {}",
        v.record.version
    );
    let (stats, _, _) = service.stats(None).await;
    let _ = writeln!(
        out,
        "# HELP hunt_steps_found_total Steps found, per hunt and step.\n# TYPE hunt_steps_found_total counter"
    );
    for (hunt, c) in &stats {
        for (step, n) in &c.found {
            let _ = writeln!(
                out,
                "hunt_steps_found_total{{hunt=\"{}\",step=\"{}\"}} {n}",
                label(hunt),
                label(step)
            );
        }
    }
    for (name, help, get) in [
        (
            "hunt_participants_total",
            "Customers who made progress in a hunt.",
            (|c: &crate::state::HuntCounters| c.participants) as fn(&_) -> u64,
        ),
        ("hunt_completions_total", "Hunts completed.", |c| {
            c.completions
        }),
        ("hunt_rewards_granted_total", "Reward codes granted.", |c| {
            c.granted
        }),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (hunt, c) in &stats {
            let _ = writeln!(out, "{name}{{hunt=\"{}\"}} {}", label(hunt), get(c));
        }
    }
    let _ = writeln!(
        out,
        "# HELP hunt_rewards_denied_total Rewards denied, per hunt and reason.\n# TYPE hunt_rewards_denied_total counter"
    );
    for (hunt, c) in &stats {
        for (reason, n) in &c.denied {
            let _ = writeln!(
                out,
                "hunt_rewards_denied_total{{hunt=\"{}\",reason=\"{reason}\"}} {n}",
                label(hunt)
            );
        }
    }
    let pools = service.pools();
    let _ = writeln!(
        out,
        "# HELP hunt_pool_remaining Codes a pool has left (with partitions spread over nodes, the cluster's, gathered every 5 s).\n# TYPE hunt_pool_remaining gauge"
    );
    for (pool, _, remaining) in &pools {
        let _ = writeln!(
            out,
            "hunt_pool_remaining{{pool=\"{}\"}} {remaining}",
            label(pool)
        );
    }
    let _ = writeln!(
        out,
        "# HELP hunt_pool_size Codes a pool holds.\n# TYPE hunt_pool_size gauge"
    );
    for (pool, size, _) in &pools {
        let _ = writeln!(out, "hunt_pool_size{{pool=\"{}\"}} {size}", label(pool));
    }
    sinks(service, &mut out);
    out
}

/// Per sink: deliveries by result, attempt latency, queue depth, in flight, breaker
/// state and dead letters.
fn sinks(service: &Service, out: &mut String) {
    let sinks = service.notifier.sinks();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        out,
        "hunt_sink_deliveries_total",
        "counter",
        "Deliveries by result: delivered, failed (tried again later), dead_lettered, evicted (from a full dead-letter queue).",
    );
    for rt in &sinks {
        let m = &rt.metrics;
        for (result, n) in [
            ("delivered", &m.delivered),
            ("failed", &m.failed),
            ("dead_lettered", &m.dead_lettered),
            ("evicted", &m.evicted),
        ] {
            let _ = writeln!(
                out,
                "hunt_sink_deliveries_total{{sink=\"{}\",result=\"{result}\"}} {}",
                label(&rt.id),
                n.load(Ordering::Relaxed)
            );
        }
    }
    head(
        out,
        "hunt_sink_attempt_seconds",
        "histogram",
        "Time of each delivery attempt, to an answer, a timeout or an error.",
    );
    for rt in &sinks {
        rt.metrics.attempt_seconds.render_series(
            out,
            "hunt_sink_attempt_seconds",
            &format!("sink=\"{}\"", label(&rt.id)),
        );
    }
    let counts: Vec<(usize, usize)> = sinks
        .iter()
        .map(|rt| service.notifier.counts(&rt.id))
        .collect();
    let now = std::time::Instant::now();
    for (name, help, get) in [
        (
            "hunt_sink_queue_depth",
            "Deliveries waiting for the sink, in flight included.",
            (|_: &crate::notify::deliver::LiveSink, c: (usize, usize), _| c.0 as f64)
                as fn(&_, (usize, usize), std::time::Instant) -> f64,
        ),
        (
            "hunt_sink_in_flight",
            "Delivery attempts under way.",
            |rt, _, _| rt.metrics.in_flight.load(Ordering::Relaxed) as f64,
        ),
        (
            "hunt_sink_breaker_state",
            "The sink's circuit breaker: 0 closed, 1 half-open (probing), 2 open.",
            |rt, _, _| f64::from(rt.breaker_state().gauge()),
        ),
        (
            "hunt_sink_breaker_open_seconds",
            "How long the breaker has been open or probing without closing (0 when closed).",
            |rt, _, now| rt.open_for(now).map_or(0.0, |d| d.as_secs_f64()),
        ),
        (
            "hunt_sink_dead_letters",
            "Deliveries in the dead-letter queue.",
            |_, c, _| c.1 as f64,
        ),
    ] {
        head(out, name, "gauge", help);
        for (rt, c) in sinks.iter().zip(&counts) {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\"}} {}",
                label(&rt.id),
                get(rt, *c, now)
            );
        }
    }
}
