//! The hunts file as written (`version: 1`): typed specs read from the spanned tree.
//!
//! Reading never stops at the first problem: every unknown field, wrong type and missing
//! field is collected with its place, and whatever could be read is returned so that the
//! checks in `catalog` can report their problems in the same run. The same structs
//! produce the published JSON Schema (`hunt schema`), and their doc comments are the
//! field reference.
//!
//! Here: the specs and the JSON Schema. `read/`: reading them from the tree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::diag::Span;

mod read;

pub use read::{FIELDS, read};

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
    /// Optional: the `data` fields each event type carries. A step condition on a
    /// declared type that reads an `event.data` field not declared is an error.
    #[serde(default)]
    pub events: Vec<EventSpec>,
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

/// The `data` fields of one event type, for checking conditions against.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EventSpec {
    /// The event type (e.g. `product_view`), declared once.
    #[serde(rename = "type")]
    pub kind: Sp<String>,
    /// The names of the fields its `data` object carries (the first level: a condition
    /// on `event.data.price.amount` needs `price`).
    pub data: Vec<Sp<String>>,
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
    #[schemars(inner(length(min = 1, max = 128)))]
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
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub count: Sp<u64>,
    /// Width of the zero-padded counter (default: just wide enough for the last code).
    #[schemars(range(max = 32))]
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
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<Sp<u64>>,
    /// Attempts before a delivery goes to the dead-letter queue (default 12).
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: Option<Sp<u64>>,
    /// How long a delivery is retried before it goes to the dead-letter queue (a
    /// duration, default `24h`).
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Sp<String>>,
    /// Failed attempts in a row that open the sink's circuit breaker (default 5).
    #[schemars(range(min = 1, max = 1000))]
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
    #[schemars(length(min = 1, max = 64))]
    pub steps: Vec<StepSpec>,
    /// How many steps complete the hunt (default: all of them).
    #[schemars(range(min = 1))]
    pub complete_after: Option<Sp<u64>>,
    /// The reward for completing the hunt.
    pub reward: Option<RewardSpec>,
    /// At most this many customers win the reward.
    #[schemars(range(min = 1))]
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
    #[schemars(range(min = 1))]
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
    #[schemars(range(min = 1))]
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
