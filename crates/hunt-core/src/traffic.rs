//! Realistic, seeded shopper traffic: browse, search, cart and purchase mixes, with some
//! customers hunting. The same seed gives the same events, byte for byte.
//!
//! The shop it models has 500 products (`sku-0001`…) in ten categories, a few content
//! pages and a search box; the example hunts hide their treasures there.

use serde_json::{Map, Value as Json, json};

use crate::engine::Event;
use crate::time::{Duration, Timestamp};

/// A small, fast, seeded generator (SplitMix64); not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub const CATEGORIES: &[&str] = &[
    "shoes",
    "boots",
    "bags",
    "jackets",
    "hats",
    "toys",
    "books",
    "electronics",
    "home",
    "beauty",
];
const PAGES: &[&str] = &[
    "/",
    "/about",
    "/faq",
    "/stores",
    "/blog/gift-guide",
    "/blog/black-friday",
    "/sale",
];
const QUERIES: &[&str] = &[
    "shoes",
    "boots",
    "red dress",
    "gift",
    "gifts",
    "christmas",
    "headphones",
    "sale",
    "scarf",
    "red scarf",
    "golden egg",
    "jacket",
    "toys for kids",
    "lamp",
];
/// Places the example hunts hide treasure; hunters visit them more often.
const HUNTER_SKUS: &[u64] = &[42, 117, 256, 333, 404];
const COUNTRIES: &[&str] = &["US", "US", "US", "GB", "CA", "DE", "FR"];
const TIERS: &[&str] = &["bronze", "bronze", "bronze", "silver", "silver", "gold"];
pub const PRODUCTS: u64 = 500;

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub users: u64,
    pub events: u64,
    pub seed: u64,
    /// Sessions start at random within `[start, start + span)`.
    pub start: Timestamp,
    pub span: Duration,
    /// Share of customers who are hunting.
    pub hunters: f64,
}

impl Default for TrafficSpec {
    fn default() -> TrafficSpec {
        TrafficSpec {
            users: 1000,
            events: 10_000,
            seed: 1,
            start: Timestamp(1_795_766_400_000), // 2026-11-27T08:00:00Z
            span: Duration(12 * 3_600_000),
            hunters: 0.2,
        }
    }
}

fn product(n: u64) -> (String, &'static str, f64) {
    // A fixed catalogue: category and price follow from the number.
    let category = CATEGORIES[(n % CATEGORIES.len() as u64) as usize];
    let price = 5.0 + ((n * 37) % 296) as f64 + if n.is_multiple_of(2) { 0.99 } else { 0.0 };
    (format!("sku-{n:04}"), category, price)
}

/// A session's events: at least this many, and up to this many more (hunters browse
/// longer).
const SESSION_MIN: u64 = 3;
const SESSION_MORE: u64 = 12;
const SESSION_MORE_HUNTING: u64 = 25;

/// Whether customer `u` hunts, for a share `hunters` of all customers.
fn is_hunter(u: u64, hunters: f64) -> bool {
    (u.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 < hunters
}

/// How many events a session of this customer has.
fn session_len(rng: &mut Rng, hunter: bool) -> u64 {
    SESSION_MIN
        + rng.below(if hunter {
            SESSION_MORE_HUNTING
        } else {
            SESSION_MORE
        })
}

/// The time from one of a session's events to the next, in ms.
fn step_gap(rng: &mut Rng) -> i64 {
    5_000 + rng.below(85_000) as i64
}

/// The traits a customer's first event carries: country and tier, the same for the
/// customer on every run of this seed.
fn introduce(seed: u64, u: u64, traits: &mut Map<String, Json>) {
    let mut r = Rng::new(seed ^ u.wrapping_mul(0xA24B_AED4_963E_E407));
    traits.insert("country".into(), json!(r.pick(COUNTRIES)));
    traits.insert("tier".into(), json!(r.pick(TIERS)));
}

/// Generates `spec.events` events, in time order, with unique ids `e-00000001`…
pub fn generate(spec: &TrafficSpec) -> Vec<Event> {
    let mut rng = Rng::new(spec.seed);
    let users = spec.users.max(1);
    let mut events: Vec<Event> = Vec::with_capacity(spec.events as usize);
    while (events.len() as u64) < spec.events {
        // One session: a customer, a start time, a walk through the shop.
        let u = rng.below(users);
        let user = format!("u-{u:06}");
        let hunter = is_hunter(u, spec.hunters);
        let mut t = spec.start.0 + rng.below(spec.span.0.max(1) as u64) as i64;
        let session_len = session_len(&mut rng, hunter);
        let mut viewed: Option<(String, &'static str, f64)> = None;
        for _ in 0..session_len {
            if events.len() as u64 >= spec.events {
                break;
            }
            t += step_gap(&mut rng);
            let (kind, data) = next_action(&mut rng, hunter, &mut viewed);
            events.push(Event {
                id: String::new(),
                kind: kind.to_string(),
                user: user.clone(),
                time: Some(Timestamp(t)),
                data,
                traits: Map::new(),
            });
        }
    }
    // Recorded traffic arrives in time order; ties keep generation order.
    events.sort_by_key(|e| e.time);
    // A customer's first event, in time, introduces them: country and tier.
    let mut introduced = vec![false; users as usize];
    for (i, e) in events.iter_mut().enumerate() {
        e.id = format!("e-{:08}", i + 1);
        let u: usize = e.user[2..].parse().unwrap_or(0);
        if !introduced[u] {
            introduced[u] = true;
            introduce(spec.seed, u as u64, &mut e.traits);
        }
    }
    events
}

/// The same shoppers as [`generate`], made one event at a time as they are asked for:
/// for a load generator that must start sending at once, and go on for as long as it
/// is asked without holding its events.
///
/// Sessions start one after another at random gaps, as many per `span` as [`generate`]
/// makes for `spec.events` (so the same number of sessions are under way at once), and
/// their events come out in time order through a heap of the sessions under way, as
/// `generate`'s sort gives them. Ids are `e-00000001`… in that order, and a customer's
/// first event carries their traits. It never ends: past `span`, sessions keep coming
/// at the same pace.
pub struct Stream {
    rng: Rng,
    users: u64,
    hunters: f64,
    /// Mean time between two sessions' starts, in ms.
    gap_ms: f64,
    next_start: f64,
    sessions: Vec<Session>,
    free: Vec<usize>,
    /// (time of its next event, order of arrival, session).
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64, usize)>>,
    arrivals: u64,
    /// One bit per customer: introduced yet.
    introduced: Vec<u64>,
    seed: u64,
    made: u64,
}

struct Session {
    user: u64,
    hunter: bool,
    left: u64,
    t: i64,
    viewed: Option<(String, &'static str, f64)>,
}

impl Stream {
    pub fn new(spec: &TrafficSpec) -> Stream {
        let users = spec.users.max(1);
        // Mean events per session, as `session_len` draws them.
        let mean = |more: u64| SESSION_MIN as f64 + (more - 1) as f64 / 2.0;
        let share = spec.hunters.clamp(0.0, 1.0);
        let per_session = mean(SESSION_MORE) * (1.0 - share) + mean(SESSION_MORE_HUNTING) * share;
        let sessions = (spec.events.max(1) as f64 / per_session).max(1.0);
        Stream {
            rng: Rng::new(spec.seed),
            users,
            hunters: spec.hunters,
            gap_ms: spec.span.0.max(1) as f64 / sessions,
            next_start: spec.start.0 as f64,
            sessions: Vec::new(),
            free: Vec::new(),
            heap: std::collections::BinaryHeap::new(),
            arrivals: 0,
            introduced: vec![0; users.div_ceil(64) as usize],
            seed: spec.seed,
            made: 0,
        }
    }

    /// Starts the next session, at `next_start`; draws the start after it.
    fn start_session(&mut self) {
        let rng = &mut self.rng;
        let u = rng.below(self.users);
        let hunter = is_hunter(u, self.hunters);
        let left = session_len(rng, hunter);
        let t = self.next_start as i64 + step_gap(rng);
        // Exponential gaps: starts at random, at the mean pace.
        let uniform = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        self.next_start += -uniform.ln() * self.gap_ms;
        let s = Session {
            user: u,
            hunter,
            left,
            t,
            viewed: None,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.sessions[i] = s;
                i
            }
            None => {
                self.sessions.push(s);
                self.sessions.len() - 1
            }
        };
        self.arrivals += 1;
        self.heap.push(std::cmp::Reverse((t, self.arrivals, i)));
    }
}

impl Iterator for Stream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        // Sessions that start before the next event under way come first.
        while self
            .heap
            .peek()
            .is_none_or(|r| (self.next_start as i64) < r.0.0)
        {
            self.start_session();
        }
        let std::cmp::Reverse((t, _, i)) = self.heap.pop()?;
        let s = &mut self.sessions[i];
        let (kind, data) = next_action(&mut self.rng, s.hunter, &mut s.viewed);
        let (user, word, bit) = (s.user, (s.user / 64) as usize, 1u64 << (s.user % 64));
        s.left -= 1;
        if s.left > 0 {
            s.t += step_gap(&mut self.rng);
            self.arrivals += 1;
            self.heap.push(std::cmp::Reverse((s.t, self.arrivals, i)));
        } else {
            self.free.push(i);
        }
        self.made += 1;
        let mut traits = Map::new();
        if self.introduced[word] & bit == 0 {
            self.introduced[word] |= bit;
            introduce(self.seed, user, &mut traits);
        }
        Some(Event {
            id: format!("e-{:08}", self.made),
            kind: kind.to_string(),
            user: format!("u-{user:06}"),
            time: Some(Timestamp(t)),
            data,
            traits,
        })
    }
}

fn next_action(
    rng: &mut Rng,
    hunter: bool,
    viewed: &mut Option<(String, &'static str, f64)>,
) -> (&'static str, Map<String, Json>) {
    let roll = rng.below(100);
    let obj = |v: Json| match v {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    match roll {
        0..=24 => {
            let url = if hunter && rng.chance(0.3) {
                (*rng.pick(&["/blog/black-friday", "/blog/gift-guide"])).to_string()
            } else if rng.chance(0.4) {
                format!("/c/{}", rng.pick(CATEGORIES))
            } else {
                (*rng.pick(PAGES)).to_string()
            };
            ("page_view", obj(json!({ "url": url })))
        }
        25..=69 => {
            let n = if hunter && rng.chance(0.15) {
                *rng.pick(HUNTER_SKUS)
            } else {
                1 + rng.below(PRODUCTS)
            };
            let (sku, category, price) = product(n);
            let data = obj(
                json!({ "product": sku, "category": category, "price": price, "url": format!("/p/{sku}") }),
            );
            *viewed = Some((sku, category, price));
            ("product_view", data)
        }
        70..=82 => {
            let q = if hunter && rng.chance(0.25) {
                "golden egg"
            } else {
                rng.pick(QUERIES)
            };
            (
                "search",
                obj(json!({ "query": q, "results": rng.below(60) })),
            )
        }
        83..=94 => {
            let (sku, category, price) = viewed
                .clone()
                .unwrap_or_else(|| product(1 + rng.below(PRODUCTS)));
            (
                "cart_add",
                obj(
                    json!({ "product": sku, "category": category, "price": price, "quantity": 1 + rng.below(2) }),
                ),
            )
        }
        _ => {
            let total = viewed.as_ref().map_or(20.0, |v| v.2);
            (
                "purchase",
                obj(
                    json!({ "order": format!("o-{}", rng.below(1_000_000_000)), "total": total, "items": 1 }),
                ),
            )
        }
    }
}

/// A hunts file for benchmarks: `hunts` hunts of 5 steps over this generator's shop, in
/// the shapes real hunts use (an indexable equality, a count, `contains`, an `||`,
/// audiences, sequences), all drawing on one pool of 10 M codes.
pub fn bench_hunts_file(hunts: usize) -> String {
    let mut y = String::from(
        "version: 1\npools:\n  - { id: big, generate: { prefix: BIG-, count: 10000000 } }\nhunts:\n",
    );
    for h in 0..hunts {
        let cat = CATEGORIES[h % CATEGORIES.len()];
        let other = CATEGORIES[(h + 3) % CATEGORIES.len()];
        let order = if h % 4 == 3 { "sequence" } else { "any" };
        let audience = match h % 3 {
            0 => "    audience: user.traits.country in [\"US\", \"CA\", \"GB\"]\n",
            1 => "    audience: user.traits.tier != \"bronze\"\n",
            _ => "",
        };
        y += &format!(
            "  - id: hunt-{h}\n    order: {order}\n{audience}    reward: {{ pool: big, per_user: 20 }}\n    steps:\n\
             \x20     - {{ id: s1, on: product_view, when: 'event.data.product == \"sku-{:04}\"' }}\n\
             \x20     - {{ id: s2, on: product_view, when: 'event.data.category == \"{cat}\" && event.data.price >= {}', count: 2 }}\n\
             \x20     - {{ id: s3, on: search, when: 'event.data.query.contains(\"{}\")' }}\n\
             \x20     - {{ id: s4, on: page_view, when: 'event.data.url == \"/c/{other}\"' }}\n\
             \x20     - {{ id: s5, on: cart_add, when: 'event.data.price > {} || event.data.category in [\"{cat}\", \"{other}\"]' }}\n",
            1 + (h * 23) % 500,
            20 + h * 5,
            ["gift", "golden", "shoe", "red", "sale"][h % 5],
            50 + h * 10,
        );
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of action the shop's customers take.
    const KINDS: [&str; 5] = [
        "page_view",
        "product_view",
        "search",
        "cart_add",
        "purchase",
    ];

    #[test]
    fn same_seed_same_traffic_and_ordered() {
        let spec = TrafficSpec {
            users: 50,
            events: 2000,
            ..TrafficSpec::default()
        };
        let a = generate(&spec);
        let b = generate(&spec);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2000);
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(a.iter().all(|e| e.validate().is_ok()));
        // Every customer's earliest event carries their traits.
        let mut seen = std::collections::HashSet::new();
        for e in &a {
            if seen.insert(e.user.clone()) {
                assert!(
                    e.traits.contains_key("country"),
                    "{} introduced without traits",
                    e.user
                );
            } else {
                assert!(e.traits.is_empty());
            }
        }
        let c = generate(&TrafficSpec { seed: 2, ..spec });
        assert_ne!(a, c);
        // A realistic mix: every kind of action appears.
        for kind in KINDS {
            assert!(a.iter().any(|e| e.kind == kind), "{kind} missing");
        }
    }

    #[test]
    fn the_stream_makes_the_same_kind_of_traffic_as_it_goes() {
        let spec = TrafficSpec {
            users: 500,
            events: 20_000,
            hunters: 0.3,
            ..TrafficSpec::default()
        };
        let a: Vec<Event> = Stream::new(&spec).take(20_000).collect();
        let b: Vec<Event> = Stream::new(&spec).take(20_000).collect();
        assert_eq!(a, b, "the same seed, the same events");
        assert!(
            a.windows(2).all(|w| w[0].time <= w[1].time),
            "in time order"
        );
        assert!(a.iter().all(|e| e.validate().is_ok()));
        let mut seen = std::collections::HashSet::new();
        for e in &a {
            assert_eq!(
                e.traits.contains_key("country"),
                seen.insert(e.user.clone())
            );
        }
        // As many sessions under way as the batch generator's, within a margin: its
        // events spread over the same span.
        let batch = generate(&spec);
        let span = |v: &[Event]| v.last().unwrap().time.unwrap().0 - v[0].time.unwrap().0;
        let (s, g) = (span(&a) as f64, span(&batch) as f64);
        assert!((s / g - 1.0).abs() < 0.2, "spans {s} and {g}");
        // The same mix of actions, within a margin.
        for kind in KINDS {
            let share =
                |v: &[Event]| v.iter().filter(|e| e.kind == kind).count() as f64 / v.len() as f64;
            assert!((share(&a) - share(&batch)).abs() < 0.03, "{kind}");
        }
        // It goes on past the span.
        assert_eq!(
            Stream::new(&TrafficSpec {
                events: 100,
                ..spec
            })
            .take(5_000)
            .count(),
            5_000
        );
    }
}
