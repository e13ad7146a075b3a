//! The cluster's log against real `nats-server`s (three, on free 127.0.0.1 ports).

use std::time::Duration;

use hunt_cluster::testing::NatsCluster;
use hunt_cluster::{Cluster, ClusterConfig, ClusterError, JetStreamLog};
use hunt_store::partition_log::NODE;
use hunt_store::{LogError, PartitionLog, Partitions, Record};

fn config(nats: &NatsCluster, name: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(nats.urls(), name);
    c.monitor = nats.monitor_urls();
    c.partitions = Some(4);
    c
}

async fn read(log: &JetStreamLog, p: Partitions, from: u64) -> Vec<Record> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || {
        log.read(p, from)
            .expect("read")
            .collect::<Result<Vec<_>, _>>()
            .expect("records")
    })
    .await
    .expect("reader")
}

fn round(p: u32, i: u32, n: u32) -> Vec<(u8, Vec<u8>)> {
    (0..n)
        .map(|k| (1u8, format!("p{p} r{i} k{k}").into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_are_read_back_in_order_with_the_positions_their_tickets_gave() {
    let nats = NatsCluster::start(3, false);
    let cluster = Cluster::connect(&config(&nats, "order")).await.unwrap();
    assert_eq!(cluster.partitions(), 4);
    let log = JetStreamLog::new(cluster, tokio::runtime::Handle::current());
    for p in 0..4 {
        assert_eq!(log.last_sequence(p).await.unwrap(), 0);
        log.own(p, 0);
    }
    log.own(NODE, 0);
    // Rounds of every partition, submitted without waiting, so that several go in one
    // message; and now and then one of the node's own (a hunts-file version).
    let mut tickets = Vec::new();
    for i in 0..30u32 {
        let also_node = (i % 7 == 3).then_some(NODE);
        for p in (0..4u32).chain(also_node) {
            let t = log.submit(p, round(p, i, 1 + i % 4)).await.unwrap();
            tickets.push((p, i, t));
        }
    }
    let mut expected: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    for (p, i, t) in tickets {
        let span = t.await.unwrap();
        assert_eq!(
            span.last - span.first,
            u64::from(i % 4),
            "a round's records are consecutive"
        );
        for (k, rec) in round(p, i, 1 + i % 4).into_iter().enumerate() {
            expected.push((p, span.at(k), rec.1));
        }
    }
    expected.sort_by_key(|e| e.1);
    let all = read(&log, Partitions::All, 0).await;
    let got: Vec<(u64, Vec<u8>)> = all.iter().map(|r| (r.lsn, r.payload.clone())).collect();
    let want: Vec<(u64, Vec<u8>)> = expected.iter().map(|e| (e.1, e.2.clone())).collect();
    assert_eq!(got, want, "the whole stream, in position order");
    assert_eq!(log.durable(), want.last().unwrap().0);

    let two: Vec<(u64, Vec<u8>)> = expected
        .iter()
        .filter(|e| e.0 == 2)
        .map(|e| (e.1, e.2.clone()))
        .collect();
    let got: Vec<(u64, Vec<u8>)> = read(&log, Partitions::One(2), 0)
        .await
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    assert_eq!(got, two, "one partition's subject");
    // From inside a message: only what is at or after the position.
    let from = two[5].0;
    let got = read(&log, Partitions::One(2), from).await;
    assert_eq!(got.len(), two.len() - 5);
    assert_eq!(got[0].lsn, from);
    // One partition with the versions: its subject and the node's, in one order.
    let two_and_node: Vec<(u64, Vec<u8>)> = expected
        .iter()
        .filter(|e| e.0 == 2 || e.0 == NODE)
        .map(|e| (e.1, e.2.clone()))
        .collect();
    assert!(two_and_node.len() > two.len());
    let got: Vec<(u64, Vec<u8>)> = read(&log, Partitions::WithVersions(2), 0)
        .await
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    assert_eq!(got, two_and_node, "a partition's subject and the node's");

    // Joining the same cluster again takes the stored partition count; another is refused.
    let mut join = config(&nats, "order");
    join.partitions = None;
    assert_eq!(Cluster::connect(&join).await.unwrap().partitions(), 4);
    join.partitions = Some(8);
    let e = Cluster::connect(&join).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClusterError::Partitions {
                stored: 4,
                asked: 8,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_fences_the_old_one_at_its_next_append() {
    let nats = NatsCluster::start(3, false);
    let rt = tokio::runtime::Handle::current();
    let old = JetStreamLog::new(
        Cluster::connect(&config(&nats, "fence")).await.unwrap(),
        rt.clone(),
    );
    old.own(0, 0);
    old.own(1, 0);
    old.submit(0, round(0, 0, 2)).await.unwrap().await.unwrap();

    // A second node reads partition 0 to its end and appends after it.
    let new = JetStreamLog::new(Cluster::connect(&config(&nats, "fence")).await.unwrap(), rt);
    let last = new.last_sequence(0).await.unwrap();
    assert!(last > 0);
    // A marker after a stale end is refused; after the true end it is taken.
    let e = new.take_over(0, last - 1, "new/1").await.unwrap_err();
    assert!(matches!(e, LogError::Fenced { partition: 0, .. }), "{e}");
    let marker = new.take_over(0, last, "new/1").await.unwrap();
    assert!(marker > last);
    new.submit(0, vec![(9, b"takeover".to_vec())])
        .await
        .unwrap()
        .await
        .unwrap();

    // The old owner's next append to partition 0 is refused by the stream.
    let e = old
        .submit(0, round(0, 1, 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::Fenced { partition: 0, .. }), "{e}");
    assert!(!old.owns(0));
    // And every later one, without reaching the stream.
    let Err(e) = old.submit(0, round(0, 2, 1)).await else {
        panic!("a fenced partition took a round");
    };
    assert!(matches!(e, LogError::Fenced { partition: 0, .. }), "{e}");
    // Its other partition goes on.
    old.submit(1, round(1, 0, 1)).await.unwrap().await.unwrap();
    assert!(old.owns(1));
    // Released, it takes no more rounds.
    old.release(1);
    assert!(!old.owns(1));
    let Err(e) = old.submit(1, round(1, 1, 1)).await else {
        panic!("a released partition took a round");
    };
    assert!(matches!(e, LogError::Fenced { partition: 1, .. }), "{e}");
    // Taken back by the same log (a partition given away and taken again): its
    // messages are new to the stream, never taken for ones sent again and dropped.
    let last1 = old.last_sequence(1).await.unwrap();
    let marker1 = old.take_over(1, last1, "old/2").await.unwrap();
    assert!(
        marker1 > last1,
        "the marker is stored: {marker1} after {last1}"
    );
    old.submit(1, round(1, 1, 1)).await.unwrap().await.unwrap();
    let again: Vec<Vec<u8>> = read(&new, Partitions::One(1), 0)
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(again, vec![b"p1 r0 k0".to_vec(), b"p1 r1 k0".to_vec()]);

    let kept: Vec<Vec<u8>> = read(&new, Partitions::One(0), 0)
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(
        kept,
        vec![
            b"p0 r0 k0".to_vec(),
            b"p0 r0 k1".to_vec(),
            b"takeover".to_vec()
        ],
        "the fenced round is not on the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_break_a_promise_are_refused_at_start() {
    // One server that syncs every two minutes.
    let lazy = NatsCluster::start(1, true);
    let mut c = config(&lazy, "lazy");
    c.replicas = 1;
    let e = Cluster::connect(&c).await.unwrap_err();
    assert!(matches!(e, ClusterError::LazyFsync(_)), "{e}");
    assert!(e.to_string().contains("120 s"), "{e}");
    c.monitor.clear();
    let e = Cluster::connect(&c).await.unwrap_err();
    assert!(matches!(e, ClusterError::LazyFsync(_)), "{e}");

    // Accepting lazy syncs, three replicas cannot be had from one server.
    c.accept_lazy_fsync = true;
    c.replicas = 3;
    let e = Cluster::connect(&c).await.unwrap_err();
    assert!(e.to_string().contains("replicas"), "{e}");

    // With one asked, it runs.
    c.replicas = 1;
    Cluster::connect(&c).await.unwrap();

    let e = Cluster::connect(&ClusterConfig::new(lazy.urls(), "a.b"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::BadName(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_when_a_nats_server_is_killed_and_none_is_stored_twice() {
    let mut nats = NatsCluster::start(3, false);
    let mut c = config(&nats, "lose");
    c.ack_timeout = Duration::from_secs(20);
    let log = JetStreamLog::new(
        Cluster::connect(&c).await.unwrap(),
        tokio::runtime::Handle::current(),
    );
    for p in 0..4 {
        log.own(p, 0);
    }
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(8) {
                let mut ts = Vec::new();
                for p in 0..4 {
                    ts.push(log.submit(p, round(p, n, 3)).await.unwrap());
                }
                for t in ts {
                    t.await.expect("every round confirmed");
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill each server in turn is too much for a quorum; kill one, the first.
    nats.kill(0);
    let rounds = writer.await.unwrap();
    assert!(rounds > 10, "only {rounds} rounds");
    let all = read(&log, Partitions::All, 0).await;
    assert_eq!(all.len() as u32, rounds * 4 * 3, "each record once");
    let mut seen = std::collections::HashSet::new();
    for r in &all {
        assert!(seen.insert(r.payload.clone()), "stored twice: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_by_one_node_renewed_and_taken_over_only_once_lapsed() {
    use hunt_cluster::{Lapses, Leases};
    use std::time::Instant;

    let nats = NatsCluster::start(3, false);
    let cluster = Cluster::connect(&config(&nats, "lease")).await.unwrap();
    let a = Leases::open(&cluster, "a", 3).await.unwrap();
    let b = Leases::open(&cluster, "b", 3).await.unwrap();
    let c = Leases::open(&cluster, "c", 3).await.unwrap();

    // Never taken: both try at once from what they read; exactly one gets it.
    let seen = a.read(0).await.unwrap();
    assert_eq!(seen.revision, 0);
    let (ha, hb) = tokio::join!(a.take(0, &seen), b.take(0, &seen));
    let (ha, hb) = (ha.unwrap(), hb.unwrap());
    assert!(ha.is_some() != hb.is_some(), "one winner: {ha:?} {hb:?}");
    let (owner, other, mut held) = match (ha, hb) {
        (Some(h), None) => (&a, &b, h),
        (None, Some(h)) => (&b, &a, h),
        _ => unreachable!(),
    };
    assert_eq!(held.epoch, 1);

    // Renewed, it does not lapse in the other's eyes.
    let lease = Duration::from_millis(600);
    let mut lapses = Lapses::new(lease);
    for _ in 0..6 {
        assert!(owner.renew(&mut held).await.unwrap());
        let s = other.read(0).await.unwrap();
        assert!(!lapses.free(0, &s, Instant::now()), "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A renewal stored but whose answer was lost: the next one, made on the revision
    // before it, finds the key still this node's with its epoch, and renews.
    let mut unanswered = held.clone();
    assert!(owner.renew(&mut unanswered).await.unwrap());
    assert!(
        owner.renew(&mut held).await.unwrap(),
        "a lost answer is not a lost lease"
    );
    // A take judged on a read from before a renewal is refused.
    let stale = other.read(0).await.unwrap();
    assert!(owner.renew(&mut held).await.unwrap());
    let renewed = Instant::now();
    assert_eq!(other.take(0, &stale).await.unwrap(), None);
    // The owner stops renewing: the other sees the same revision past the lease.
    let start = Instant::now();
    let seen = loop {
        let s = other.read(0).await.unwrap();
        if lapses.free(0, &s, Instant::now()) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(renewed.elapsed() >= lease, "taken before the lease ran out");
    // Two nodes take the lapsed lease at once: one wins, with the next epoch.
    let (t1, t2) = tokio::join!(other.take(0, &seen), c.take(0, &seen));
    let (t1, t2) = (t1.unwrap(), t2.unwrap());
    assert!(t1.is_some() != t2.is_some(), "one winner: {t1:?} {t2:?}");
    let winner = if t1.is_some() { other } else { &c };
    let new = t1.or(t2).unwrap();
    assert_eq!(new.epoch, 2);
    // The old owner's renewal is refused: it lost the lease.
    assert!(!owner.renew(&mut held).await.unwrap());

    // A release frees a lease at once, for anyone.
    assert!(winner.release(&new).await.unwrap());
    let s = a.read(0).await.unwrap();
    assert!(Lapses::new(Duration::from_secs(3600)).free(0, &s, Instant::now()));
    let h = a.take(0, &s).await.unwrap().expect("free after a release");
    assert_eq!(h.epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_the_object_store_is_replaced_whole_and_a_damaged_one_is_skipped() {
    use hunt_cluster::ObjectSnapshots;
    use hunt_store::SnapshotStore;
    let nats = NatsCluster::start(3, false);
    let cluster = Cluster::connect(&config(&nats, "snaps")).await.unwrap();
    let snaps = std::sync::Arc::new(
        ObjectSnapshots::open(&cluster, 3, tokio::runtime::Handle::current())
            .await
            .unwrap(),
    );
    // The blocking calls, as the server makes them: from a thread of their own.
    let blocking = |f: Box<dyn FnOnce(&ObjectSnapshots) -> _ + Send>| {
        let snaps = snaps.clone();
        tokio::task::spawn_blocking(move || f(&snaps))
    };
    let none = blocking(Box::new(|s| s.latest().unwrap())).await.unwrap();
    assert_eq!(none, (None, vec![]), "a new cluster has no snapshot");

    // Bigger than a chunk (1 MB here): several chunks, read back whole.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let small = b"the newer state".to_vec();
    let (b, s) = (big.clone(), small.clone());
    blocking(Box::new(move |x| {
        x.save(41, &b).unwrap();
        let (got, warnings) = x.latest().unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let got = got.expect("the snapshot");
        assert_eq!((got.lsn, got.payload.len()), (41, b.len()));
        assert!(got.payload == b, "the payload read back differs");
        x.save(97, &s).unwrap();
        (None, vec![])
    }))
    .await
    .unwrap();
    let (got, _) = blocking(Box::new(|s| s.latest().unwrap())).await.unwrap();
    let got = got.expect("the newer snapshot");
    assert_eq!((got.lsn, got.payload), (97, small.clone()));
    // An older one (from an owner deposed meanwhile) does not replace it.
    let refused = blocking(Box::new(|s| {
        let e = s.save(60, b"older").unwrap_err();
        (None, vec![e.to_string()])
    }))
    .await
    .unwrap();
    assert!(refused.1[0].contains("newer snapshot"), "{refused:?}");
    let (got, _) = blocking(Box::new(|s| s.latest().unwrap())).await.unwrap();
    assert_eq!(got.map(|g| g.lsn), Some(97));

    // Partitions' own snapshots: objects of their own, beside the whole one.
    let parts = blocking(Box::new(|s| {
        use hunt_store::PartSnapshots;
        assert_eq!(s.latest_part(3).unwrap(), (None, vec![]));
        s.save_part(3, 120, b"partition three").unwrap();
        s.save_part(5, 80, b"partition five").unwrap();
        assert!(
            s.save_part(3, 100, b"older").is_err(),
            "an older one is refused"
        );
        let three = s.latest_part(3).unwrap().0.unwrap();
        let five = s.latest_part(5).unwrap().0.unwrap();
        (
            None,
            vec![format!(
                "{} {:?} {} {:?}",
                three.lsn, three.payload, five.lsn, five.payload
            )],
        )
    }))
    .await
    .unwrap();
    assert_eq!(
        parts.1[0],
        format!(
            "120 {:?} 80 {:?}",
            b"partition three".to_vec(),
            b"partition five".to_vec()
        )
    );
    let (got, _) = blocking(Box::new(|s| s.latest().unwrap())).await.unwrap();
    assert_eq!(
        got.map(|g| g.lsn),
        Some(97),
        "the whole snapshot is untouched"
    );

    // Not a snapshot (written past the engine): skipped with a warning, so that the
    // rebuild reads the whole stream.
    let js =
        async_nats::jetstream::new(async_nats::connect(nats.urls()[0].as_str()).await.unwrap());
    js.get_object_store(snaps.bucket())
        .await
        .unwrap()
        .put(
            hunt_cluster::snapshots::OBJECT,
            &mut &b"HSNP not a snapshot"[..],
        )
        .await
        .unwrap();
    let (got, warnings) = blocking(Box::new(|s| s.latest().unwrap())).await.unwrap();
    assert_eq!(got, None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("skipped") && warnings[0].contains("whole stream"),
        "{warnings:?}"
    );
}

/// One partition's owner granting codes from its escrow holding, one customer at a
/// time: a code it holds unused if any, else a refill (dropping what it granted), and
/// when nothing is left, a wait for codes given back before it denies.
struct Granter {
    escrow: hunt_cluster::Escrow,
    partition: u32,
    epoch: u64,
    free: Vec<u64>,
    granted_since: Vec<u64>,
}

const POOL_KEY: &str = "v1.pool.0";

impl Granter {
    async fn grant(&mut self, size: u64) -> Option<u64> {
        use hunt_cluster::Used;
        for attempt in 0..3 {
            if let Some(i) = self.free.pop() {
                self.granted_since.push(i);
                return Some(i);
            }
            if attempt == 2 {
                break;
            }
            let r = self
                .escrow
                .refill(
                    POOL_KEY,
                    "gold",
                    size,
                    self.partition,
                    self.epoch,
                    Used::Indexes(&self.granted_since),
                    4,
                )
                .await
                .unwrap();
            self.granted_since.clear();
            self.free = r.holding.iter().flat_map(|&(a, b)| a..b).rev().collect();
            if self.free.is_empty()
                && !self
                    .escrow
                    .wait_left(POOL_KEY, Duration::from_millis(300))
                    .await
                    .unwrap()
            {
                return None;
            }
        }
        None
    }

    /// Gives back what it holds unused if some partition is waiting.
    async fn give_back_if_wanted(&mut self, size: u64) -> bool {
        use hunt_cluster::Used;
        let (account, _) = self.escrow.read(POOL_KEY).await.unwrap().unwrap();
        if account.wanted.iter().all(|p| *p == self.partition) || self.free.is_empty() {
            return false;
        }
        let unused: Vec<(u64, u64)> = self.free.drain(..).map(|i| (i, i + 1)).collect();
        self.escrow
            .give_back(
                POOL_KEY,
                "gold",
                size,
                self.partition,
                self.epoch,
                Used::Indexes(&self.granted_since),
                &unused,
            )
            .await
            .unwrap();
        self.granted_since.clear();
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_seven_codes_is_granted_once_across_three_nodes() {
    use hunt_cluster::Escrow;

    let nats = NatsCluster::start(3, false);
    let cfg = config(&nats, "escrow");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let c = Cluster::connect(&cfg).await.unwrap();
        nodes.push(Escrow::open(&c, 3, 64).await.unwrap());
    }
    // Four partitions on three nodes, 300 customers asking, 75 per partition, all at
    // once.
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let escrow = nodes[p as usize % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut g = Granter {
                escrow,
                partition: p,
                epoch: 1,
                free: Vec::new(),
                granted_since: Vec::new(),
            };
            let mut got = Vec::new();
            for _ in 0..75 {
                if let Some(i) = g.grant(7).await {
                    got.push(i);
                }
                g.give_back_if_wanted(7).await;
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..7).collect::<Vec<_>>(), "each of the 7 codes once");
    let (account, _) = nodes[0].read(POOL_KEY).await.unwrap().unwrap();
    account.check().unwrap();
    assert_eq!(account.cursor, 7);
    assert_eq!(account.left(), 0);
    let ops: u64 = nodes.iter().map(|n| n.ops()).sum();
    assert!(ops > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partitions_codes_come_back_and_a_new_owner_inherits_and_fences() {
    use hunt_cluster::{Escrow, EscrowError, Used};

    let nats = NatsCluster::start(3, false);
    let cfg = config(&nats, "escrow2");
    let a = Escrow::open(&Cluster::connect(&cfg).await.unwrap(), 3, 64)
        .await
        .unwrap();
    let b = Escrow::open(&Cluster::connect(&cfg).await.unwrap(), 3, 64)
        .await
        .unwrap();
    let c = Escrow::open(&Cluster::connect(&cfg).await.unwrap(), 3, 64)
        .await
        .unwrap();
    let size = 40;
    // Partition 0 on node a takes a block (40 left over 4 partitions: 5) and idles.
    let r = a
        .refill(POOL_KEY, "gold", size, 0, 1, Used::Count(0), 8)
        .await
        .unwrap();
    assert_eq!(r.got, vec![(0, 5)], "the block is shrunk to 40 / (2 x 4)");
    // Partition 1 on node b takes the rest, block by shrinking block.
    let mut took = 0;
    loop {
        let r = b
            .refill(POOL_KEY, "gold", size, 1, 1, Used::Count(0), 8)
            .await
            .unwrap();
        if r.got.is_empty() {
            assert!(r.wanted.contains(&1));
            break;
        }
        took += hunt_cluster::escrow::count(&r.got);
    }
    assert_eq!(took, 35);
    // It waits for codes; partition 0's owner sees it wanted, drops code 0 (granted)
    // and gives back two of the four it holds unused.
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_left(POOL_KEY, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (account, _) = a.read(POOL_KEY).await.unwrap().unwrap();
    assert!(account.wanted.contains(&1));
    a.give_back(POOL_KEY, "gold", size, 0, 1, Used::Indexes(&[0]), &[(1, 3)])
        .await
        .unwrap();
    assert!(waiter.await.unwrap().unwrap(), "the waiter is woken");
    let r = b
        .refill(POOL_KEY, "gold", size, 1, 1, Used::Count(0), 8)
        .await
        .unwrap();
    assert_eq!(
        r.got,
        vec![(1, 2)],
        "the given-back codes go to the one who asks, one at a time near the end"
    );
    let r = b
        .refill(POOL_KEY, "gold", size, 1, 1, Used::Count(0), 8)
        .await
        .unwrap();
    assert_eq!(r.got, vec![(2, 3)]);
    // Partition 0's owner dies holding codes 3 and 4; node c takes the partition over
    // with epoch 2 and inherits them.
    let h = c.claim(POOL_KEY, "gold", size, 0, 2).await.unwrap();
    assert_eq!(h.spans, vec![(3, 5)]);
    assert_eq!(h.used, 1);
    // The deposed owner can neither give them back nor drop them.
    let err = a
        .give_back(POOL_KEY, "gold", size, 0, 1, Used::Count(0), &[(3, 5)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EscrowError::Fenced {
                epoch: 1,
                holder: 2,
                ..
            }
        ),
        "{err}"
    );
    let (account, _) = c.read(POOL_KEY).await.unwrap().unwrap();
    account.check().unwrap();
    assert_eq!(account.held[&0].spans, vec![(3, 5)]);
    assert_eq!(account.left(), 0);
    // A larger size raises it (codes appended to the pool); one asking with the
    // smaller size (still on the version before) is handed nothing past it.
    c.claim(POOL_KEY, "gold", 41, 0, 2).await.unwrap();
    assert_eq!(c.read(POOL_KEY).await.unwrap().unwrap().0.left(), 1);
    let r = c
        .refill(POOL_KEY, "gold", 40, 0, 2, Used::Count(0), 5)
        .await
        .unwrap();
    assert!(r.got.is_empty(), "{r:?}");
    let r = c
        .refill(POOL_KEY, "gold", 41, 0, 2, Used::Count(0), 5)
        .await
        .unwrap();
    assert_eq!(r.got, vec![(40, 41)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_beat_are_assigned_partitions_and_a_leaving_one_is_gone_at_once() {
    use hunt_cluster::assign::assignment;
    use hunt_cluster::{Liveness, Member, Members};
    use std::time::Instant;

    let nats = NatsCluster::start(3, false);
    let cfg = config(&nats, "members");
    let a = Members::open(&Cluster::connect(&cfg).await.unwrap(), 3)
        .await
        .unwrap();
    let b = Members::open(&Cluster::connect(&cfg).await.unwrap(), 3)
        .await
        .unwrap();
    let member = |node: &str| Member {
        node: node.into(),
        http: format!("127.0.0.1:{}", 8080 + node.len()),
        owned: Vec::new(),
        positions: Default::default(),
        draining: false,
        beat_at_ms: 0,
    };
    a.beat(&member("a")).await.unwrap();
    b.beat(&member("node.b")).await.unwrap();
    let mut live = Liveness::new(Duration::from_secs(60));
    let seen = a.read().await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].member.node, "node.b",
        "an id with a dot is kept whole"
    );
    assert!(seen[0].member.beat_at_ms > 0);
    let ids = live.live(&seen, Instant::now());
    assert_eq!(ids, vec!["a", "node.b"]);
    let nodes: Vec<&str> = ids.iter().map(String::as_str).collect();
    let owners = assignment(4, &nodes);
    assert!(owners.iter().all(Option::is_some));
    // b leaves: a owns every partition.
    b.leave("node.b").await.unwrap();
    let ids = live.live(&a.read().await.unwrap(), Instant::now());
    assert_eq!(ids, vec!["a"]);
    let nodes: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(assignment(4, &nodes).iter().all(|o| *o == Some("a")));
}
