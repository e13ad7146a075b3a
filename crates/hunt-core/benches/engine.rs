//! The engine on a realistic mix: 20 hunts × 5 steps, 1 M customers, generated shopper
//! traffic, events pre-parsed and in memory, one thread.
//!
//! `cargo bench -p hunt-core --bench engine` prints events/s ("thrpt") per group:
//! - `engine/apply_1m_customers`: `Engine::apply` with each customer looked up in a map
//!   of 1 M (the issue's configuration; bound by memory latency, see the closing note);
//! - `engine/lookup_only_1m_customers`: that lookup alone;
//! - `engine/apply_10k_customers`: the same, with a working set that fits in cache;
//! - `conditions/*`: one typical condition on the fast path and in the CEL interpreter.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hunt_core::catalog::Catalog;
use hunt_core::cond::{Condition, EventView, Input, Scope};
use hunt_core::engine::{Engine, Event, LocalAllocator, UserState};
use hunt_core::traffic::{TrafficSpec, bench_hunts_file, generate};

const CUSTOMERS: u64 = 1_000_000;
const EVENTS: u64 = 3_000_000;
/// Events applied per measured iteration.
const CHUNK: usize = 100_000;

/// Customers in a map, as a partition keeps them (foldhash: fast, seeded per process).
type Customers = foldhash::HashMap<String, UserState>;

/// Every customer known up front, with the traits their first event would bring.
fn customers(n: u64) -> Customers {
    let mut users = Customers::with_capacity_and_hasher(n as usize, Default::default());
    for u in 0..n {
        let mut state = UserState::default();
        state
            .traits
            .insert("country", ["US", "GB", "DE", "CA"][(u % 4) as usize].into());
        state.traits.insert(
            "tier",
            ["bronze", "silver", "gold"][(u % 3) as usize].into(),
        );
        users.insert(format!("u-{u:06}"), state);
    }
    users
}

/// Traffic for `users` customers, laid out in arrival order.
fn traffic(users: u64) -> Vec<Event> {
    let generated = generate(&TrafficSpec {
        users,
        events: EVENTS,
        seed: 42,
        ..TrafficSpec::default()
    });
    // The generator sorts by time, which scatters each event's data across the heap. A
    // server parses a batch in arrival order, so its events lie together: copy them so.
    generated.to_vec()
}

fn bench_engine(c: &mut Criterion) {
    let (catalog, _) =
        Catalog::load("bench.yaml", &bench_hunts_file(20)).expect("bench hunts file is valid");
    let catalog = Arc::new(catalog);
    let engine = Engine::new(catalog.clone());
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(20));
    for (name, n) in [
        ("apply_1m_customers", CUSTOMERS),
        ("apply_10k_customers", 10_000),
    ] {
        let events = traffic(n);
        let mut users = customers(n);
        let mut alloc = LocalAllocator::new(&catalog);
        let mut out = Vec::with_capacity(16);
        let mut next = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..CHUNK {
                    let e = &events[next];
                    next = (next + 1) % events.len();
                    // Received when it happened: recorded traffic replayed in order.
                    let received = e.time.unwrap_or_default();
                    let state = match users.get_mut(&e.user) {
                        Some(s) => s,
                        None => users.entry(e.user.clone()).or_default(),
                    };
                    out.clear();
                    engine.apply(state, e, received, &mut alloc, &mut out);
                    black_box(&out);
                }
            })
        });
        if n == CUSTOMERS {
            // The customer lookup alone, to show what share of the above it is.
            g.bench_function("lookup_only_1m_customers", |b| {
                b.iter(|| {
                    for _ in 0..CHUNK {
                        let e = &events[next];
                        next = (next + 1) % events.len();
                        black_box(users.get_mut(&e.user));
                    }
                })
            });
        }
        eprintln!(
            "{name}: {} customers, {} codes granted, 20 hunts x 5 steps",
            users.len(),
            alloc.used(0)
        );
    }
    g.finish();
}

fn bench_conditions(c: &mut Criterion) {
    let text = r#"event.data.category == "shoes" && event.data.price >= 50"#;
    let cond = Condition::compile(text, Scope::Step).unwrap();
    assert!(cond.is_fast());
    let data = serde_json::json!({"product": "sku-0101", "category": "shoes", "price": 59.0, "url": "/p/sku-0101"});
    let data = data.as_object().unwrap().clone();
    let traits = hunt_core::engine::Traits::from(
        serde_json::json!({"country": "US", "tier": "gold"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let input = Input {
        event: Some(EventView {
            id: "e-1",
            kind: "product_view",
            time: hunt_core::time::Timestamp(0),
            data: &data,
        }),
        user_id: "u-1",
        traits: &traits,
        progress: None,
    };
    let mut g = c.benchmark_group("conditions");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fast_path", |b| {
        b.iter(|| black_box(cond.eval_checked(black_box(&input))))
    });
    g.bench_function("cel_interpreter", |b| {
        b.iter(|| black_box(cond.eval_interpreted(black_box(&input))))
    });
    g.finish();
}

criterion_group!(benches, bench_conditions, bench_engine);
criterion_main!(benches);
