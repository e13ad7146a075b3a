//! `/metrics`: the ingest path's counters plus figures read at scrape time from the
//! projections — backlog per partition, per-hunt finds, completions and grants, and
//! what each pool has left.

use std::fmt::Write as _;

use crate::metrics::label;
use crate::service::Service;

pub async fn render(service: &Service) -> String {
    let mut out = String::with_capacity(8 << 10);
    service.metrics.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP hunt_partition_backlog_events Events queued for a partition, not yet applied.\n# TYPE hunt_partition_backlog_events gauge"
    );
    for (p, n) in service.backlog().iter().enumerate() {
        let _ = writeln!(
            out,
            "hunt_partition_backlog_events{{partition=\"{p}\"}} {n}"
        );
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
            "hunt_participants",
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
    let _ = writeln!(
        out,
        "# HELP hunt_pool_remaining Codes a pool has left.\n# TYPE hunt_pool_remaining gauge"
    );
    let _ = writeln!(
        out,
        "# HELP hunt_pool_size Codes a pool holds.\n# TYPE hunt_pool_size gauge"
    );
    for (pool, size, remaining) in service.pools() {
        let _ = writeln!(
            out,
            "hunt_pool_remaining{{pool=\"{}\"}} {remaining}",
            label(&pool)
        );
        let _ = writeln!(out, "hunt_pool_size{{pool=\"{}\"}} {size}", label(&pool));
    }
    out
}
