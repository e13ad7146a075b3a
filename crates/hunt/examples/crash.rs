//! The crash harness's long mode: `hunt serve` killed with SIGKILL under load, again and
//! again, with every promise checked after each start (see tests/harness/crash.rs).
//!
//! ```sh
//! cargo build --release -p hunt
//! cargo run --release -p hunt --example crash -- --cycles 500 [--seed N] [--clients N] [--hunt PATH]
//! cargo run --release -p hunt --example crash -- --cluster --cycles 200
//! cargo run --release -p hunt --example crash -- --spread --cycles 150
//! ```
//!
//! With `--cluster`, on three NATS servers (`nats-server` 2.12, installed by
//! `.ci/install-nats-server`) and two nodes, killing the owner node and a NATS server
//! in turn; it then prints the failovers' times too.
//! With `--spread`, three nodes share the partitions, and a node killed, a node
//! stopped gracefully and a NATS server killed take turns; the failover time is then
//! from a node's kill until its partitions have their new owners.
//!
//! Prints one line per cycle, then `cycles=… acked=… lost=0 duplicate_grants=0
//! overgrants=0 …`; exits 1 if any promise was broken (the data directory is kept).

#[path = "../tests/harness/crash.rs"]
mod crash;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut cfg = crash::Config {
        hunt: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("hunt")))
            .unwrap_or_else(|| "hunt".into()),
        cycles: 100,
        seed: 1,
        clients: 4,
        verbose: true,
        sabotage: None,
        cluster: false,
        spread: false,
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        let number = |name: &str, v: String| -> u64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name} must be a whole number, got {v:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--cycles" => cfg.cycles = number("--cycles", value("--cycles")) as usize,
            "--seed" => cfg.seed = number("--seed", value("--seed")),
            "--clients" => cfg.clients = number("--clients", value("--clients")).max(1) as usize,
            "--hunt" => cfg.hunt = value("--hunt").into(),
            "--quiet" => cfg.verbose = false,
            "--cluster" => cfg.cluster = true,
            "--spread" => (cfg.cluster, cfg.spread) = (true, true),
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: crash [--cycles N] [--seed N] [--clients N] [--hunt PATH] [--cluster] [--spread] [--quiet]"
                );
                std::process::exit(2)
            }
        }
    }
    if !cfg.hunt.is_file() {
        eprintln!(
            "no hunt binary at {}: build it first (cargo build --release -p hunt) or pass --hunt PATH",
            cfg.hunt.display()
        );
        std::process::exit(2)
    }
    let t = std::time::Instant::now();
    let report = crash::run(&cfg);
    for p in &report.problems {
        eprintln!("problem: {p}");
    }
    println!(
        "{} seed={} seconds={:.0}",
        report.line(),
        cfg.seed,
        t.elapsed().as_secs_f64()
    );
    if cfg.cluster {
        println!("{}", report.cluster_line());
    }
    std::process::exit(if report.failures() == 0 { 0 } else { 1 })
}
