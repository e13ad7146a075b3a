//! The hunts file as written (`version: 1`): typed specs read from the spanned tree.
//!
//! Reading never stops at the first problem: every unknown field, wrong type and missing
//! field is collected with its place, and whatever could be read is returned so that the
//! checks in `catalog` can report their problems in the same run. The same structs
//! produce the published JSON Schema (`hunt schema`), and their doc comments are the
//! field reference.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::diag::{Problem, Span, did_you_mean};
use crate::yaml::{Node, Value};

/// A value with the place it was written in the hunts file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Sp<T> {
    pub value: T,
    #[serde(skip)]
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Sp<T> {
        Sp { value, span }
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A hunts file: reward pools, notification sinks, hunts and their test cases.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(title = "Treasure Hunt Engine hunts file", deny_unknown_fields)]
pub struct HuntsFile {
    /// Format version of this file. Must be `1`.
    pub version: Sp<u64>,
    /// Engine-wide settings for this file's hunts.
    #[serde(default)]
    pub settings: Settings,
    /// Reward code pools that hunts draw from.
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// Notification destinations that hunts can send their outcomes to.
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
    /// The hunts.
    #[serde(default)]
    pub hunts: Vec<HuntSpec>,
    /// Test cases: events in, outcomes expected. Run by `hunt test`.
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// Engine-wide settings.
#[derive(Debug, Clone, Serialize, JsonSchema, Default)]
#[schemars(deny_unknown_fields)]
pub struct Settings {
    /// How far in the past an event's own `time` may lie behind the time it is received
    /// and still count toward hunts (a duration such as `1h`; default `1h`). Older events
    /// still update the customer's traits but find nothing.
    #[schemars(with = "Option<String>")]
    pub max_lateness: Option<Sp<String>>,
}

/// A pool of reward codes. Give either `codes` or `generate`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PoolSpec {
    /// Unique id of the pool, referenced by a hunt's `reward.pool`.
    pub id: Sp<String>,
    /// What the pool holds, for people reading the file.
    pub description: Option<String>,
    /// The codes, listed one by one, handed out in this order.
    pub codes: Option<Vec<Sp<String>>>,
    /// Codes generated from a pattern: prefix followed by a zero-padded counter.
    pub generate: Option<GenerateSpec>,
}

/// Codes `prefix` + a counter from `start`, zero-padded to `digits`: `BF20-00001`, ….
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GenerateSpec {
    /// Text before the counter.
    pub prefix: String,
    /// How many codes the pool holds (its size).
    pub count: Sp<u64>,
    /// Width of the zero-padded counter (default: just wide enough for the last code).
    pub digits: Option<Sp<u64>>,
    /// First counter value (default 1).
    pub start: Option<u64>,
}

/// A notification destination: an HTTP webhook.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SinkSpec {
    /// Unique id of the sink, referenced by a hunt's `notify`.
    pub id: Sp<String>,
    /// The webhook's URL (`http://` or `https://`).
    pub url: Sp<String>,
    /// How long one delivery attempt may take (a duration, default `5s`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Sp<String>>,
    /// Name of the environment variable that holds the HMAC signing secret.
    pub secret_env: Option<Sp<String>>,
    /// How many deliveries to this sink may be in flight at once (default 8).
    pub concurrency: Option<Sp<u64>>,
    /// Attempts before a delivery goes to the dead-letter queue (default 12).
    pub max_attempts: Option<Sp<u64>>,
    /// How long a delivery is retried before it goes to the dead-letter queue (a
    /// duration, default `24h`).
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Sp<String>>,
    /// Failed attempts in a row that open the sink's circuit breaker (default 5).
    pub breaker_failures: Option<Sp<u64>>,
    /// How long an open breaker waits before one probe delivery (a duration, default
    /// `30s`).
    #[schemars(with = "Option<String>")]
    pub breaker_open_for: Option<Sp<String>>,
}

/// In which order a hunt's steps must be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Steps may be found in any order.
    #[default]
    Any,
    /// Steps must be found one after another, in the order written.
    Sequence,
}

/// A treasure hunt.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HuntSpec {
    /// Unique id of the hunt (used in outcomes, URLs and metrics).
    pub id: Sp<String>,
    /// Title shown to customers.
    pub title: Option<String>,
    /// What the hunt is, for people reading the file.
    pub description: Option<String>,
    /// When the hunt runs. Events outside this window count for nothing.
    pub active: Option<ActiveSpec>,
    /// Which customers may take part: a CEL condition over `user` (`user.id`,
    /// `user.traits`). Default: everyone.
    pub audience: Option<Sp<String>>,
    /// `any` (default) or `sequence`.
    #[serde(default)]
    pub order: Order,
    /// The treasures to find.
    pub steps: Vec<StepSpec>,
    /// How many steps complete the hunt (default: all of them).
    pub complete_after: Option<Sp<u64>>,
    /// The reward for completing the hunt.
    pub reward: Option<RewardSpec>,
    /// At most this many customers win the reward.
    pub max_winners: Option<Sp<u64>>,
    /// Sinks that receive this hunt's outcomes.
    #[serde(default)]
    pub notify: Vec<Sp<String>>,
}

/// A time window, `from` inclusive and `until` exclusive (RFC 3339 times).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActiveSpec {
    /// Start of the hunt (inclusive). Default: always started.
    #[schemars(with = "Option<String>")]
    pub from: Option<Sp<String>>,
    /// End of the hunt (exclusive). Default: never ends.
    #[schemars(with = "Option<String>")]
    pub until: Option<Sp<String>>,
}

/// A reward: one code from a pool.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RewardSpec {
    /// Id of the pool the code comes from.
    pub pool: Sp<String>,
    /// The most codes one customer may hold from this pool, across every hunt that
    /// draws on it (default 1).
    pub per_user: Option<Sp<u64>>,
}

/// A step: one treasure to find.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique id of the step within its hunt.
    pub id: Sp<String>,
    /// The event type that can reveal this step (e.g. `product_view`).
    pub on: Sp<String>,
    /// A CEL condition over `event` (`type`, `time`, `data`), `user` (`id`, `traits`)
    /// and `progress` (`found`, `steps`). Default: every event of type `on`.
    pub when: Option<Sp<String>>,
    /// How many matching events find the step ("view 3 shoes"; default 1).
    pub count: Option<Sp<u64>>,
    /// In a `sequence` hunt: the most time allowed since the previous step was found
    /// (a duration such as `10m`). Past it the trail goes cold and the hunt starts over.
    #[schemars(with = "Option<String>")]
    pub within: Option<Sp<String>>,
    /// Clue shown once the previous step has been found (for the first step: from the
    /// start).
    pub clue: Option<String>,
}

/// A test case: events in, outcomes expected.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TestSpec {
    /// Name shown by `hunt test`.
    pub name: Sp<String>,
    /// Time that relative event times (`+5m`) count from (RFC 3339). Default: the
    /// earliest `active.from` in the file.
    #[schemars(with = "Option<String>")]
    pub start: Option<Sp<String>>,
    /// The events, applied in order.
    pub events: Vec<TestEventSpec>,
    /// Every outcome expected, in order, one per line:
    /// `USER found HUNT/STEP`, `USER completed HUNT`, `USER granted HUNT [CODE]`,
    /// `USER denied HUNT REASON`, `USER cold HUNT/STEP`.
    pub expect: Vec<Sp<String>>,
}

/// An event of a test case.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TestEventSpec {
    /// The customer.
    pub user: Sp<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: Sp<String>,
    /// Idempotency key (default: the event's position in the case).
    pub id: Option<String>,
    /// When: an RFC 3339 time or a duration after the case's `start` (`+5m`).
    /// Default: the previous event's time (the start for the first).
    #[schemars(with = "Option<String>")]
    pub at: Option<Sp<String>>,
    /// Event data.
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// Customer traits carried by the event.
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub traits: Option<serde_json::Map<String, serde_json::Value>>,
}

// ---------------------------------------------------------------------------------------
// Reading the tree.

/// The fields each spec accepts; also checked against the JSON Schema in the tests.
pub const FIELDS: &[(&str, &[&str])] = &[
    (
        "HuntsFile",
        &["version", "settings", "pools", "sinks", "hunts", "tests"],
    ),
    ("Settings", &["max_lateness"]),
    ("PoolSpec", &["id", "description", "codes", "generate"]),
    ("GenerateSpec", &["prefix", "count", "digits", "start"]),
    (
        "SinkSpec",
        &[
            "id",
            "url",
            "timeout",
            "secret_env",
            "concurrency",
            "max_attempts",
            "max_age",
            "breaker_failures",
            "breaker_open_for",
        ],
    ),
    (
        "HuntSpec",
        &[
            "id",
            "title",
            "description",
            "active",
            "audience",
            "order",
            "steps",
            "complete_after",
            "reward",
            "max_winners",
            "notify",
        ],
    ),
    ("ActiveSpec", &["from", "until"]),
    ("RewardSpec", &["pool", "per_user"]),
    ("StepSpec", &["id", "on", "when", "count", "within", "clue"]),
    ("TestSpec", &["name", "start", "events", "expect"]),
    (
        "TestEventSpec",
        &["user", "type", "id", "at", "data", "traits"],
    ),
];

fn fields(name: &str) -> &'static [&'static str] {
    FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or(&[])
}

/// Reads a hunts file's tree. Returns what could be read; `problems` gets every problem.
pub fn read(root: &Node, problems: &mut Vec<Problem>) -> Option<HuntsFile> {
    let mut r = Reader { problems };
    r.hunts_file(root)
}

struct Reader<'p> {
    problems: &'p mut Vec<Problem>,
}

/// A mapping being read: its entries, checked against the fields its spec accepts.
struct Obj<'n> {
    node: &'n Node,
    entries: &'n [(crate::yaml::Key, Node)],
}

impl<'n> Obj<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }
}

impl Reader<'_> {
    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.problems.push(Problem::error(span, msg));
    }

    fn obj<'n>(&mut self, node: &'n Node, spec: &str, what: &str) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.span,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let known = fields(spec);
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let mut p = Problem::error(k.span, format!("unknown field `{}` in {what}", k.name));
                p = match did_you_mean(&k.name, known.iter().copied()) {
                    Some(s) => p.with_help(format!("did you mean `{s}`?")),
                    None => p.with_help(format!("the fields of {what} are: {}", known.join(", "))),
                };
                self.problems.push(p);
            }
        }
        Some(Obj { node, entries })
    }

    fn missing(&mut self, obj: &Obj, key: &str, what: &str) {
        let span = self.key_span(obj);
        self.error(
            span,
            format!("{what} is missing the required field `{key}`"),
        );
    }

    /// Where to point for a whole mapping: its first key (mappings have no width).
    fn key_span(&self, obj: &Obj) -> Span {
        obj.entries
            .first()
            .map(|(k, _)| k.span)
            .unwrap_or(obj.node.span)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.span)),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A string, also accepting a number or boolean written without quotes (ids like `1`).
    fn text(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Int(i) => Some(Sp::new(i.to_string(), node.span)),
            Value::Float(f) => Some(Sp::new(f.to_string(), node.span)),
            Value::Bool(b) => Some(Sp::new(b.to_string(), node.span)),
            _ => self.string(node, what),
        }
    }

    fn uint(&mut self, node: &Node, what: &str) -> Option<Sp<u64>> {
        match node.value {
            Value::Int(i) if i >= 0 => Some(Sp::new(i as u64, node.span)),
            Value::Int(i) => {
                self.error(node.span, format!("{what} must not be negative, found {i}"));
                None
            }
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a whole number, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn req_text(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        match obj.get(key) {
            Some(n) => self.text(n, &format!("`{key}` of {what}")),
            None => {
                self.missing(obj, key, what);
                None
            }
        }
    }

    fn opt_string(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.string(n, &format!("`{key}` of {what}"))
    }

    fn opt_uint(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<u64>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.uint(n, &format!("`{key}` of {what}"))
    }

    /// A time or duration written either quoted or plain.
    fn opt_scalar_text(&mut self, obj: &Obj, key: &str, what: &str) -> Option<Sp<String>> {
        let n = obj.get(key)?;
        if n.value == Value::Null {
            return None;
        }
        self.text(n, &format!("`{key}` of {what}"))
    }

    fn list<'n>(&mut self, obj: &Obj<'n>, key: &str, what: &str) -> &'n [Node] {
        match obj.get(key).map(|n| (n, &n.value)) {
            None | Some((_, Value::Null)) => &[],
            Some((_, Value::Seq(items))) => items,
            Some((n, _)) => {
                self.error(
                    n.span,
                    format!("`{key}` of {what} must be a list, found {}", n.kind()),
                );
                &[]
            }
        }
    }

    fn json_map(
        &mut self,
        obj: &Obj,
        key: &str,
        what: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let n = obj.get(key)?;
        match n.to_json() {
            serde_json::Value::Object(m) => Some(m),
            serde_json::Value::Null => None,
            _ => {
                self.error(
                    n.span,
                    format!("`{key}` of {what} must be a mapping, found {}", n.kind()),
                );
                None
            }
        }
    }

    fn hunts_file(&mut self, root: &Node) -> Option<HuntsFile> {
        let what = "the hunts file";
        let obj = self.obj(root, "HuntsFile", what)?;
        let version = match obj.get("version") {
            Some(n) => self.uint(n, "`version`"),
            None => {
                let span = self.key_span(&obj);
                self.problems.push(
                    Problem::error(span, "the hunts file is missing `version`")
                        .with_help("add `version: 1` at the top"),
                );
                None
            }
        };
        if let Some(v) = &version
            && v.value != 1
        {
            self.problems.push(
                Problem::error(v.span, format!("unsupported version {}", v.value))
                    .with_help("this engine reads `version: 1`"),
            );
        }
        let settings = match obj.get("settings") {
            Some(n) if n.value != Value::Null => self.settings(n).unwrap_or_default(),
            _ => Settings::default(),
        };
        let pools = self
            .list(&obj, "pools", what)
            .iter()
            .filter_map(|n| self.pool(n))
            .collect();
        let sinks = self
            .list(&obj, "sinks", what)
            .iter()
            .filter_map(|n| self.sink(n))
            .collect();
        let hunts = self
            .list(&obj, "hunts", what)
            .iter()
            .filter_map(|n| self.hunt(n))
            .collect();
        let tests = self
            .list(&obj, "tests", what)
            .iter()
            .filter_map(|n| self.test(n))
            .collect();
        Some(HuntsFile {
            version: version.unwrap_or(Sp::new(1, Span::default())),
            settings,
            pools,
            sinks,
            hunts,
            tests,
        })
    }

    fn settings(&mut self, node: &Node) -> Option<Settings> {
        let obj = self.obj(node, "Settings", "`settings`")?;
        Some(Settings {
            max_lateness: self.opt_scalar_text(&obj, "max_lateness", "`settings`"),
        })
    }

    fn pool(&mut self, node: &Node) -> Option<PoolSpec> {
        let what = "a pool";
        let obj = self.obj(node, "PoolSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let description = self.opt_string(&obj, "description", what).map(|s| s.value);
        let codes = obj.get("codes").and_then(|n| match &n.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|c| self.text(c, "a pool code"))
                    .collect(),
            ),
            _ => {
                self.error(
                    n.span,
                    format!("`codes` of a pool must be a list, found {}", n.kind()),
                );
                None
            }
        });
        let generate = obj.get("generate").and_then(|n| self.generate(n));
        Some(PoolSpec {
            id: id?,
            description,
            codes,
            generate,
        })
    }

    fn generate(&mut self, node: &Node) -> Option<GenerateSpec> {
        let what = "`generate`";
        let obj = self.obj(node, "GenerateSpec", what)?;
        let prefix = match obj.get("prefix") {
            Some(n) => self.text(n, "`prefix`").map(|s| s.value),
            None => Some(String::new()),
        };
        let count = match obj.get("count") {
            Some(n) => self.uint(n, "`count` of `generate`"),
            None => {
                self.missing(&obj, "count", what);
                None
            }
        };
        let digits = self.opt_uint(&obj, "digits", what);
        let start = self.opt_uint(&obj, "start", what).map(|s| s.value);
        Some(GenerateSpec {
            prefix: prefix?,
            count: count?,
            digits,
            start,
        })
    }

    fn sink(&mut self, node: &Node) -> Option<SinkSpec> {
        let what = "a sink";
        let obj = self.obj(node, "SinkSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let url = self.req_text(&obj, "url", what);
        let timeout = self.opt_scalar_text(&obj, "timeout", what);
        let secret_env = self.opt_string(&obj, "secret_env", what);
        Some(SinkSpec {
            id: id?,
            url: url?,
            timeout,
            secret_env,
            concurrency: self.opt_uint(&obj, "concurrency", what),
            max_attempts: self.opt_uint(&obj, "max_attempts", what),
            max_age: self.opt_scalar_text(&obj, "max_age", what),
            breaker_failures: self.opt_uint(&obj, "breaker_failures", what),
            breaker_open_for: self.opt_scalar_text(&obj, "breaker_open_for", what),
        })
    }

    fn hunt(&mut self, node: &Node) -> Option<HuntSpec> {
        let what = "a hunt";
        let obj = self.obj(node, "HuntSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let title = self.opt_string(&obj, "title", what).map(|s| s.value);
        let description = self.opt_string(&obj, "description", what).map(|s| s.value);
        let active = obj
            .get("active")
            .filter(|n| n.value != Value::Null)
            .and_then(|n| {
                let a = self.obj(n, "ActiveSpec", "`active`")?;
                Some(ActiveSpec {
                    from: self.opt_scalar_text(&a, "from", "`active`"),
                    until: self.opt_scalar_text(&a, "until", "`active`"),
                })
            });
        let audience = self.opt_string(&obj, "audience", what);
        let order = match obj.get("order") {
            None => Order::Any,
            Some(n) => match &n.value {
                Value::Str(s) if s == "any" => Order::Any,
                Value::Str(s) if s == "sequence" => Order::Sequence,
                _ => {
                    let found = match &n.value {
                        Value::Str(s) => format!("`{s}`"),
                        _ => n.kind().to_string(),
                    };
                    let mut p = Problem::error(
                        n.span,
                        format!("`order` must be `any` or `sequence`, found {found}"),
                    );
                    if let Value::Str(s) = &n.value
                        && let Some(m) = did_you_mean(s, ["any", "sequence"])
                    {
                        p = p.with_help(format!("did you mean `{m}`?"));
                    }
                    self.problems.push(p);
                    Order::Any
                }
            },
        };
        if obj.get("steps").is_none() {
            self.missing(&obj, "steps", what);
        }
        let steps = self
            .list(&obj, "steps", what)
            .iter()
            .filter_map(|n| self.step(n))
            .collect();
        let complete_after = self.opt_uint(&obj, "complete_after", what);
        let reward = obj
            .get("reward")
            .filter(|n| n.value != Value::Null)
            .and_then(|n| {
                let r = self.obj(n, "RewardSpec", "`reward`")?;
                let pool = self.req_text(&r, "pool", "`reward`");
                let per_user = self.opt_uint(&r, "per_user", "`reward`");
                Some(RewardSpec {
                    pool: pool?,
                    per_user,
                })
            });
        let max_winners = self.opt_uint(&obj, "max_winners", what);
        let notify = self
            .list(&obj, "notify", what)
            .iter()
            .filter_map(|n| self.text(n, "a sink id in `notify`"))
            .collect();
        Some(HuntSpec {
            id: id?,
            title,
            description,
            active,
            audience,
            order,
            steps,
            complete_after,
            reward,
            max_winners,
            notify,
        })
    }

    fn step(&mut self, node: &Node) -> Option<StepSpec> {
        let what = "a step";
        let obj = self.obj(node, "StepSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let on = self.req_text(&obj, "on", what);
        let when = match obj.get("when") {
            // `when: true` is a condition too.
            Some(n) if matches!(n.value, Value::Bool(_)) => self.text(n, "`when`"),
            _ => self.opt_string(&obj, "when", what),
        };
        let count = self.opt_uint(&obj, "count", what);
        let within = self.opt_scalar_text(&obj, "within", what);
        let clue = self.opt_string(&obj, "clue", what).map(|s| s.value);
        Some(StepSpec {
            id: id?,
            on: on?,
            when,
            count,
            within,
            clue,
        })
    }

    fn test(&mut self, node: &Node) -> Option<TestSpec> {
        let what = "a test case";
        let obj = self.obj(node, "TestSpec", what)?;
        let name = self.req_text(&obj, "name", what);
        let start = self.opt_scalar_text(&obj, "start", what);
        if obj.get("events").is_none() {
            self.missing(&obj, "events", what);
        }
        let events = self
            .list(&obj, "events", what)
            .iter()
            .filter_map(|n| self.test_event(n))
            .collect();
        if obj.get("expect").is_none() {
            self.missing(&obj, "expect", what);
        }
        let expect = self
            .list(&obj, "expect", what)
            .iter()
            .filter_map(|n| self.string(n, "an expected outcome"))
            .collect();
        Some(TestSpec {
            name: name?,
            start,
            events,
            expect,
        })
    }

    fn test_event(&mut self, node: &Node) -> Option<TestEventSpec> {
        let what = "a test event";
        let obj = self.obj(node, "TestEventSpec", what)?;
        let user = self.req_text(&obj, "user", what);
        let kind = self.req_text(&obj, "type", what);
        let id = obj
            .get("id")
            .and_then(|n| self.text(n, "`id` of a test event"))
            .map(|s| s.value);
        let at = self.opt_scalar_text(&obj, "at", what);
        let data = self.json_map(&obj, "data", what);
        let traits = self.json_map(&obj, "traits", what);
        Some(TestEventSpec {
            user: user?,
            kind: kind?,
            id,
            at,
            data,
            traits,
        })
    }
}

/// The JSON Schema of a hunts file.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(HuntsFile)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader and the published schema must accept the same fields.
    #[test]
    fn schema_and_reader_agree_on_fields() {
        let schema = json_schema();
        let defs = schema["$defs"].as_object().expect("schema has $defs");
        for (name, accepted) in FIELDS {
            let props = if *name == "HuntsFile" {
                &schema["properties"]
            } else {
                &defs[*name]["properties"]
            };
            let mut in_schema: Vec<&str> = props
                .as_object()
                .unwrap_or_else(|| panic!("schema lacks {name}"))
                .keys()
                .map(String::as_str)
                .collect();
            let mut in_reader = accepted.to_vec();
            in_schema.sort();
            in_reader.sort();
            assert_eq!(in_schema, in_reader, "fields of {name}");
        }
    }

    #[test]
    fn every_unknown_field_is_reported_with_a_suggestion() {
        let src =
            "version: 1\nhunts:\n  - id: h\n    stesp: []\n    complete_afer: 2\n    steps: []\n";
        let root = crate::yaml::parse(src).unwrap();
        let mut problems = vec![];
        read(&root, &mut problems);
        let msgs: Vec<_> = problems
            .iter()
            .map(|p| (p.message.clone(), p.help.clone()))
            .collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(msgs[0].0, "unknown field `stesp` in a hunt");
        assert_eq!(msgs[0].1.as_deref(), Some("did you mean `steps`?"));
        assert_eq!(msgs[1].1.as_deref(), Some("did you mean `complete_after`?"));
        assert_eq!(&src[problems[0].span.range()], "stesp");
    }
}
