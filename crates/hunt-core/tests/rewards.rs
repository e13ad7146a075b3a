//! Shared reward pools under concurrency: never over-granted, each code once, nothing
//! lost to a failed append or a crash.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use hunt_core::engine::{DenyReason, Engine, Event, Outcome, UserState};
use hunt_core::rewards::{Allocation, SharedPools};
use hunt_core::time::Timestamp;

const RACE: &str = r#"
version: 1
pools:
  - { id: ten, generate: { prefix: "T-", count: 10 } }
  - { id: listed, codes: [A, B, C, D, E, F, G, H, I, J] }
hunts:
  - { id: open, steps: [{ id: s, on: buy }], reward: { pool: ten } }
  - { id: capped, steps: [{ id: s, on: win }], reward: { pool: listed }, max_winners: 5 }
"#;

#[test]
fn many_customers_racing_for_ten_codes_get_exactly_ten_grants() {
    // Many rounds, so that the threads really interleave on a small machine.
    for _ in 0..50 {
        race_once();
    }
}

fn race_once() {
    let catalog = crate::load(RACE);
    let pools = Arc::new(SharedPools::new(&catalog));
    let engine = Engine::new(catalog.clone());
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (engine, pools, barrier) = (engine.clone(), pools.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Each thread is a partition with its own customers.
                barrier.wait();
                let mut outcomes = Vec::new();
                for u in 0..40 {
                    let mut state = UserState::default();
                    let e = Event {
                        id: "e".into(),
                        kind: "buy".into(),
                        user: format!("p{t}-u{u}"),
                        time: None,
                        data: Default::default(),
                        traits: Default::default(),
                    };
                    let mut alloc = Allocation::new(&pools);
                    let mut out = Vec::new();
                    engine.apply(&mut state, &e, Timestamp(0), &mut alloc, &mut out);
                    alloc.commit();
                    outcomes.extend(out);
                }
                outcomes
            })
        })
        .collect();
    let all: Vec<Outcome> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let codes: Vec<&String> = all
        .iter()
        .filter_map(|o| match o {
            Outcome::RewardGranted { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    let denied = all
        .iter()
        .filter(|o| {
            matches!(
                o,
                Outcome::RewardDenied {
                    reason: DenyReason::PoolEmpty,
                    ..
                }
            )
        })
        .count();
    assert_eq!(codes.len(), 10, "exactly the pool's size is granted");
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        10,
        "each code once"
    );
    assert_eq!(denied, threads * 40 - 10);
    assert_eq!(pools.taken(0), 10);
}

#[test]
fn the_winner_cap_holds_under_concurrency_and_spares_the_pool() {
    let catalog = crate::load(RACE);
    let pools = Arc::new(SharedPools::new(&catalog));
    let results: Vec<Result<u64, DenyReason>> = (0..8)
        .map(|_| {
            let pools = pools.clone();
            std::thread::spawn(move || (0..20).map(|_| pools.allocate(1, 1)).collect::<Vec<_>>())
        })
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(DenyReason::WinnersCap)))
    );
    assert_eq!(
        (pools.winners(1), pools.taken(1)),
        (5, 5),
        "capped winners take no codes"
    );
}

#[test]
fn a_rolled_back_allocation_frees_its_code_and_slot() {
    let catalog = crate::load(RACE);
    let pools = SharedPools::new(&catalog);
    let mut a = Allocation::new(&pools);
    use hunt_core::engine::Allocator;
    assert_eq!(a.allocate(&catalog, 1, 1).unwrap(), "A");
    assert_eq!(a.allocate(&catalog, 1, 1).unwrap(), "B");
    a.rollback(); // the append failed: nothing was granted
    assert_eq!((pools.winners(1), pools.taken(1)), (0, 0));
    let mut b = Allocation::new(&pools);
    assert_eq!(
        b.allocate(&catalog, 1, 1).unwrap(),
        "A",
        "the lowest free code goes out first"
    );
    b.commit();
    // Dropped without a decision (a panic on the way): given back too.
    {
        let mut c = Allocation::new(&pools);
        c.allocate(&catalog, 1, 1).unwrap();
    }
    assert_eq!(pools.taken(1), 1);
}

#[test]
fn restore_frees_codes_that_were_allocated_but_never_recorded() {
    let catalog = crate::load(RACE);
    // The log holds grants of codes 0, 1 and 3 of `ten`: 2 was allocated before a crash
    // and never recorded.
    let pools = SharedPools::restore(&catalog, [(0, 0, 0), (0, 0, 1), (0, 0, 3)]).unwrap();
    assert_eq!(pools.winners(0), 3);
    let got: Vec<u64> = (0..4).map(|_| pools.allocate(0, 0).unwrap()).collect();
    assert_eq!(got, vec![2, 4, 5, 6]);
    assert!(
        SharedPools::restore(&catalog, [(0, 0, 10)])
            .unwrap_err()
            .contains("holds 10")
    );
}

#[test]
fn codes_map_back_to_their_index() {
    let catalog = crate::load(RACE);
    for pool in &catalog.pools {
        for i in 0..pool.size() {
            assert_eq!(pool.index_of(&pool.code(i).unwrap()), Some(i));
        }
    }
    assert_eq!(catalog.pools[0].index_of("T-11"), None);
    assert_eq!(catalog.pools[0].index_of("X-01"), None);
    assert_eq!(catalog.pools[1].index_of("Z"), None);
}

#[test]
fn grants_by_id_keep_their_codes_taken_even_in_a_renamed_pool() {
    let src = |pool: &str| {
        format!(
            "version: 1\npools:\n  - {{ id: {pool}, codes: [X1, X2, X3] }}\n  - {{ id: other, codes: [X2, Y1] }}\nhunts:\n  - id: h\n    reward: {{ pool: {pool}, per_user: 1 }}\n    max_winners: 2\n    steps: [{{ id: s, on: a }}]\n"
        )
    };
    // Same pool id: X2 is taken there, not in `other`, which holds a code of that text.
    let catalog = crate::load(&src("p"));
    let pools = SharedPools::from_grants(&catalog, [("h", "p", "X2")]).unwrap();
    assert_eq!((pools.taken(0), pools.taken(1)), (1, 0));
    assert_eq!(pools.winners(0), 1);
    // `p` renamed `q`: its granted codes stay taken wherever they are held, and the
    // hunt's winners still count.
    let catalog = crate::load(&src("q"));
    let pools = SharedPools::from_grants(&catalog, [("h", "p", "X2"), ("h", "p", "X1")]).unwrap();
    assert_eq!((pools.taken(0), pools.taken(1)), (2, 1));
    assert_eq!(pools.winners(0), 2);
    assert_eq!(
        pools.allocate(0, 0),
        Err(hunt_core::engine::DenyReason::WinnersCap)
    );
}
