//! A reference model of the engine: deliberately simple (no type index, no bit sets,
//! no fast path — every condition through the CEL interpreter, state in plain maps),
//! compared with the engine on random hunts files and random event streams.
//!
//! CI runs a few thousand cases; `HUNT_MODEL_CASES=200000` runs a long one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hunt_core::catalog::Catalog;
use hunt_core::cond::{EventView, Input, ProgressView};
use hunt_core::engine::{Engine, Event, LocalAllocator, Outcome, UserState, merge_traits};
use hunt_core::spec::Order;
use hunt_core::time::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

#[derive(Default, Clone)]
struct ModelProgress {
    counts: BTreeMap<usize, u32>,
    found: Vec<usize>,
    last: Option<Timestamp>,
    done: bool,
}

struct Model {
    catalog: Arc<Catalog>,
    traits: HashMap<String, hunt_core::engine::Traits>,
    progress: HashMap<(String, usize), ModelProgress>,
    held: HashMap<(String, usize), u32>,
    taken: HashMap<usize, u64>,
    winners: HashMap<usize, u64>,
    /// Conditions compiled once per text (the model's own compile, run interpreted).
    compiled: std::cell::RefCell<HashMap<(String, bool), Arc<hunt_core::cond::Condition>>>,
}

impl Model {
    fn new(catalog: Arc<Catalog>) -> Model {
        Model {
            catalog,
            traits: HashMap::new(),
            progress: HashMap::new(),
            held: HashMap::new(),
            taken: HashMap::new(),
            winners: HashMap::new(),
            compiled: Default::default(),
        }
    }

    fn holds(
        &self,
        text: &str,
        user: &str,
        ev: Option<EventView>,
        p: Option<&ModelProgress>,
        h: usize,
    ) -> bool {
        let hunt = &self.catalog.hunts[h];
        let empty = hunt_core::engine::Traits::default();
        let counts: Vec<u32> = (0..hunt.steps.len())
            .map(|s| p.and_then(|p| p.counts.get(&s).copied()).unwrap_or(0))
            .collect();
        let input = Input {
            event: ev,
            user_id: user,
            traits: self.traits.get(user).unwrap_or(&empty),
            progress: ev.map(|_| ProgressView {
                found: p.map_or(0, |p| p.found.len() as u32),
                step_ids: &hunt.step_ids,
                counts: &counts,
            }),
        };
        let scope = if ev.is_some() {
            hunt_core::cond::Scope::Step
        } else {
            hunt_core::cond::Scope::Audience
        };
        let cond = self
            .compiled
            .borrow_mut()
            .entry((text.to_string(), ev.is_some()))
            .or_insert_with(|| {
                Arc::new(
                    hunt_core::cond::Condition::compile(text, scope)
                        .expect("the catalog compiled it"),
                )
            })
            .clone();
        cond.eval_interpreted(&input).unwrap_or(false)
    }

    fn apply(&mut self, e: &Event, received: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        merge_traits(self.traits.entry(e.user.clone()).or_default(), &e.traits);
        let t = e
            .time
            .map_or(received, |t| if t > received { received } else { t });
        if received.0 - t.0 > self.catalog.max_lateness.0 {
            return out;
        }
        let ev = EventView {
            id: &e.id,
            kind: &e.kind,
            time: t,
            data: &e.data,
        };
        let catalog = self.catalog.clone();
        for (h, hunt) in catalog.hunts.iter().enumerate() {
            let active = hunt.from.is_none_or(|f| t >= f) && hunt.until.is_none_or(|u| t < u);
            if !active {
                continue;
            }
            let key = (e.user.clone(), h);
            let existing = self.progress.get(&key).cloned();
            if existing.as_ref().is_some_and(|p| p.done) {
                continue;
            }
            if existing.is_none()
                && let Some(a) = &hunt.audience
                && !self.holds(a.source(), &e.user, None, None, h)
            {
                continue;
            }
            let mut matched = Vec::new();
            for (s, step) in hunt.steps.iter().enumerate() {
                if step.on != e.kind {
                    continue;
                }
                let found = existing.as_ref().is_some_and(|p| p.found.contains(&s));
                let is_next = existing.as_ref().map_or(0, |p| p.found.len()) == s;
                let in_order = match hunt.order {
                    Order::Any => !found,
                    Order::Sequence => {
                        is_next
                            && existing
                                .as_ref()
                                .and_then(|p| p.last)
                                .is_none_or(|l| t >= l)
                    }
                };
                if in_order
                    && self.holds(step.when.source(), &e.user, Some(ev), existing.as_ref(), h)
                {
                    matched.push(s);
                }
            }
            if matched.is_empty() {
                continue;
            }
            let mut p = existing.unwrap_or_default();
            let before = p.found.len();
            for s in matched {
                let step = &hunt.steps[s];
                if hunt.order == Order::Sequence
                    && let (Some(last), Some(within)) = (p.last, step.within)
                    && t.0 > last.0 + within.0
                {
                    out.push(format!("{} cold {}/{}", e.user, hunt.id, step.id));
                    p = ModelProgress::default();
                    if hunt.steps[0].on == e.kind
                        && self.holds(hunt.steps[0].when.source(), &e.user, Some(ev), Some(&p), h)
                    {
                        self.count(&mut p, 0, t, h, &e.user, &mut out);
                    }
                    continue;
                }
                self.count(&mut p, s, t, h, &e.user, &mut out);
            }
            let completes = p.found.len() > before && p.found.len() as u32 >= hunt.complete_after;
            if completes {
                p.done = true;
                out.push(format!("{} completed {}", e.user, hunt.id));
            }
            self.progress.insert(key, p);
            if completes && let Some(r) = hunt.reward {
                out.push(self.reward(&e.user, h, r.pool, r.per_user));
            }
        }
        out
    }

    fn count(
        &self,
        p: &mut ModelProgress,
        s: usize,
        t: Timestamp,
        h: usize,
        user: &str,
        out: &mut Vec<String>,
    ) {
        let step = &self.catalog.hunts[h].steps[s];
        let c = p.counts.entry(s).or_default();
        *c += 1;
        if *c >= step.count {
            p.found.push(s);
            p.last = Some(t);
            out.push(format!(
                "{user} found {}/{}",
                self.catalog.hunts[h].id, step.id
            ));
        }
    }

    fn reward(&mut self, user: &str, h: usize, pool: usize, per_user: u32) -> String {
        let hunt = &self.catalog.hunts[h];
        if let Some(a) = &hunt.audience
            && !self.holds(a.source(), user, None, None, h)
        {
            return format!("{user} denied {} not_in_audience", hunt.id);
        }
        let held = self.held.entry((user.to_string(), pool)).or_default();
        if *held >= per_user {
            return format!("{user} denied {} per_user_limit", hunt.id);
        }
        let winners = self.winners.entry(h).or_default();
        if hunt.max_winners.is_some_and(|cap| *winners >= cap) {
            return format!("{user} denied {} winners_cap", hunt.id);
        }
        let taken = self.taken.entry(pool).or_default();
        match self.catalog.pools[pool].code(*taken) {
            None => format!("{user} denied {} pool_empty", hunt.id),
            Some(code) => {
                *taken += 1;
                *winners += 1;
                *held += 1;
                format!("{user} granted {} {code}", hunt.id)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Random hunts files and events.

const CONDITIONS: &[&str] = &[
    "",
    "event.data.x == 1",
    "event.data.x >= 2",
    "event.data.y == 'p'",
    "event.data.y in ['p', 'r']",
    "event.data.y.startsWith('q')",
    "event.data.x > 0 || event.data.y == 'q'",
    "!(event.data.x == 0) && has(event.data.y)",
    "size(event.data.y) > 0 && event.data.x != 3",
    "progress.found >= 1",
    "user.traits.tier == 'gold' || event.data.x == 2",
];
const AUDIENCES: &[&str] = &[
    "",
    "user.traits.tier == 'gold'",
    "user.traits.tier != 'bronze'",
    "has(user.traits.tier)",
];
const TYPES: &[&str] = &["a", "b", "c"];

#[derive(Debug, Clone)]
struct StepGen {
    on: usize,
    when: usize,
    count: u32,
    within_s: Option<u32>,
}

#[derive(Debug, Clone)]
struct HuntGen {
    sequence: bool,
    steps: Vec<StepGen>,
    complete_after: Option<u32>,
    reward: Option<(usize, u32)>,
    max_winners: Option<u32>,
    audience: usize,
    window: Option<(i64, i64)>,
}

fn step_gen() -> impl Strategy<Value = StepGen> {
    (
        0..TYPES.len(),
        0..CONDITIONS.len(),
        1u32..4,
        proptest::option::of(30u32..600),
    )
        .prop_map(|(on, when, count, within_s)| StepGen {
            on,
            when,
            count,
            within_s,
        })
}

fn hunt_gen() -> impl Strategy<Value = HuntGen> {
    (
        any::<bool>(),
        proptest::collection::vec(step_gen(), 1..5),
        proptest::option::of(1u32..5),
        proptest::option::of((0usize..2, 1u32..3)),
        proptest::option::of(1u32..4),
        0..AUDIENCES.len(),
        proptest::option::of((0i64..1200, 600i64..3600)),
    )
        .prop_map(
            |(sequence, steps, ca, reward, max_winners, audience, window)| {
                let n = steps.len() as u32;
                HuntGen {
                    sequence,
                    complete_after: ca.map(|c| c.min(n)),
                    steps,
                    reward,
                    max_winners: reward.and(max_winners),
                    audience,
                    window,
                }
            },
        )
}

fn yaml_of(hunts: &[HuntGen], pool_sizes: (u32, u32)) -> String {
    let mut y = format!(
        "version: 1\nsettings: {{ max_lateness: 10m }}\npools:\n  - {{ id: p0, generate: {{ prefix: A, count: {} }} }}\n  - {{ id: p1, codes: [{}] }}\nhunts:\n",
        pool_sizes.0,
        (0..pool_sizes.1)
            .map(|i| format!("B{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, h) in hunts.iter().enumerate() {
        y += &format!(
            "  - id: h{i}\n    order: {}\n",
            if h.sequence { "sequence" } else { "any" }
        );
        if !AUDIENCES[h.audience].is_empty() {
            y += &format!("    audience: \"{}\"\n", AUDIENCES[h.audience]);
        }
        if let Some((from, len)) = h.window {
            let f = Timestamp(T0 + from * 1000);
            let u = Timestamp(T0 + (from + len) * 1000);
            y += &format!("    active: {{ from: \"{f}\", until: \"{u}\" }}\n");
        }
        if let Some(c) = h.complete_after {
            y += &format!("    complete_after: {c}\n");
        }
        if let Some((pool, per_user)) = h.reward {
            y += &format!("    reward: {{ pool: p{pool}, per_user: {per_user} }}\n");
        }
        if let Some(m) = h.max_winners {
            y += &format!("    max_winners: {m}\n");
        }
        y += "    steps:\n";
        for (s, st) in h.steps.iter().enumerate() {
            y += &format!(
                "      - id: s{s}\n        on: {}\n        count: {}\n",
                TYPES[st.on], st.count
            );
            if !CONDITIONS[st.when].is_empty() {
                y += &format!("        when: \"{}\"\n", CONDITIONS[st.when]);
            }
            if h.sequence
                && s > 0
                && let Some(w) = st.within_s
            {
                y += &format!("        within: {w}s\n");
            }
        }
    }
    y
}

const T0: i64 = 1_795_766_400_000;

#[derive(Debug, Clone)]
struct EventGen {
    user: u8,
    kind: usize,
    x: Option<i64>,
    y: Option<&'static str>,
    tier: Option<Option<&'static str>>,
    gap_s: i64,
    /// Event time relative to its receipt: none, earlier (late), or later (future).
    skew_s: Option<i64>,
}

fn event_gen() -> impl Strategy<Value = EventGen> {
    (
        0u8..3,
        0..TYPES.len(),
        proptest::option::of(0i64..4),
        proptest::option::of(prop_oneof![
            Just("p"),
            Just("q"),
            Just("qq"),
            Just("r"),
            Just("#5")
        ]),
        proptest::option::weighted(
            0.2,
            proptest::option::weighted(
                0.8,
                prop_oneof![Just("gold"), Just("silver"), Just("bronze")],
            ),
        ),
        prop_oneof![3 => 0i64..120, 1 => 120i64..900],
        proptest::option::weighted(0.4, prop_oneof![4 => -300i64..0, 1 => -900i64..120]),
    )
        .prop_map(|(user, kind, x, y, tier, gap_s, skew_s)| EventGen {
            user,
            kind,
            x,
            y,
            tier,
            gap_s,
            skew_s,
        })
}

fn events_of(gens: &[EventGen]) -> Vec<(Event, Timestamp)> {
    let mut clock = T0;
    gens.iter()
        .enumerate()
        .map(|(i, g)| {
            clock += g.gap_s * 1000;
            let mut data = Map::new();
            if let Some(x) = g.x {
                data.insert("x".into(), json!(x));
            }
            match g.y {
                // A number where the conditions compare with strings.
                Some("#5") => {
                    data.insert("y".into(), json!(5));
                }
                Some(y) => {
                    data.insert("y".into(), json!(y));
                }
                None => {}
            }
            let mut traits = Map::new();
            if let Some(t) = g.tier {
                traits.insert("tier".into(), t.map_or(Json::Null, |t| json!(t)));
            }
            let e = Event {
                id: format!("e{i}"),
                kind: TYPES[g.kind].into(),
                user: format!("u{}", g.user),
                time: g.skew_s.map(|s| Timestamp(clock + s * 1000)),
                data,
                traits,
            };
            (e, Timestamp(clock))
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("HUNT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The engine and the model give the same outcomes, event by event.
    #[test]
    fn engine_matches_the_reference_model(
        hunts in proptest::collection::vec(hunt_gen(), 1..4),
        pool_sizes in (1u32..5, 1u32..4),
        gens in proptest::collection::vec(event_gen(), 1..80),
    ) {
        let yaml = yaml_of(&hunts, pool_sizes);
        let catalog = match Catalog::load("gen.yaml", &yaml) {
            Ok((c, _)) => Arc::new(c),
            Err(r) => return Err(TestCaseError::fail(format!("generated file invalid: {:#?}\n{yaml}", r.problems))),
        };
        let engine = Engine::new(catalog.clone());
        let mut alloc = LocalAllocator::new(&catalog);
        let mut users: HashMap<String, UserState> = HashMap::new();
        let mut model = Model::new(catalog.clone());
        let mut out: Vec<Outcome> = Vec::new();
        for (i, (e, received)) in events_of(&gens).iter().enumerate() {
            out.clear();
            engine.apply(users.entry(e.user.clone()).or_default(), e, *received, &mut alloc, &mut out);
            let got: Vec<String> = out.iter().map(|o| hunt_core::testing::describe(&e.user, o)).collect();
            let want = model.apply(e, *received);
            prop_assert_eq!(&got, &want, "event {} {:?}\nfile:\n{}", i, e, yaml);
        }
    }
}
