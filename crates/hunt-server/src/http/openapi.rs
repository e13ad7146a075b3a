//! `GET /openapi.json`: the API described as OpenAPI 3.1 (docs/adr/0013).
//!
//! The paths, their parameters and the statuses each operation answers are written
//! here; every schema comes from a type, through `schemars` (JSON Schema 2020-12, the
//! dialect of OpenAPI 3.1): the answers' types as handlers serialize them, the request
//! bodies' and query strings' types as handlers read them, and the error body
//! ([`ErrorBody`]). Named schemas go to `components/schemas`, referenced from the
//! operations. The integration tests check this document against the router and
//! real answers against it; CI runs schemathesis against a live server.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::HttpConfig;
use super::config::{
    ConfigQuery, ConfigView, DiffAnswer, DiffQuery, PutConfigAnswer, VersionsAnswer,
};
use super::dlq::{DeliveryView, DlqList, DlqQuery, Dropped, Retried, Selection};
use super::error::ErrorBody;
use super::hunts::{HuntHistoryAnswer, HuntsAnswer, StatsAnswer, WinnersAnswer, WinnersQuery};
use super::ingest::{CloudEventIn, IngestAnswer};
use super::ops::AlertsAnswer;
use super::overview::{ClusterAnswer, OverviewAnswer};
use super::pools::PoolsAnswer;
use super::users::{UserAnswer, UserHuntsAnswer};
use hunt_core::engine::Event;
use hunt_core::spec::HuntsFile;

/// Where named schemas go, and so what their `$ref`s point to.
const COMPONENTS: &str = "/components/schemas";

/// Schemas of answers (as serialized) and of requests (as deserialized), by type.
struct Schemas {
    answers: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.meta_schema = None;
        });
        Schemas {
            answers: settings.clone().for_serialize().into_generator(),
            requests: settings.for_deserialize().into_generator(),
        }
    }

    /// The schema of `T` as an answer: a `$ref` for a named type.
    fn answer<T: JsonSchema>(&mut self) -> Value {
        self.answers.subschema_for::<T>().to_value()
    }

    /// The schema of `T` as a request reads it.
    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// A query string's type as parameters, one per field (its description and
    /// whether it is required come from the type too).
    fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
        let root = SchemaSettings::draft2020_12()
            .with(|s| s.inline_subschemas = true)
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value();
        let required: Vec<&str> = root["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(props) = root["properties"].as_object() else {
            return Vec::new();
        };
        props
            .iter()
            .map(|(name, schema)| {
                let mut schema = not_null(schema.clone());
                let description = schema.as_object_mut().and_then(|o| o.remove("description"));
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": schema,
                });
                if let Some(d) = description {
                    p["description"] = d;
                }
                p
            })
            .collect()
    }

    /// Every named schema, once: the answers' and the requests' (a type in both must
    /// have the same schema in both).
    fn components(mut self) -> Map<String, Value> {
        let mut all = self.answers.take_definitions(true);
        for (name, schema) in self.requests.take_definitions(true) {
            match all.get(&name) {
                Some(s) if *s != schema => {
                    all.insert(format!("{name}Request"), schema);
                }
                _ => {
                    all.insert(name, schema);
                }
            }
        }
        all
    }
}

/// A query parameter's schema without the `null` an `Option` adds (a parameter is
/// absent, never null).
pub(super) fn not_null(mut s: Value) -> Value {
    if let Some(types) = s.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types[0].clone();
            s["type"] = t;
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let rest: Vec<Value> = any
            .iter()
            .filter(|a| a.get("type") != Some(&json!("null")))
            .cloned()
            .collect();
        if rest.len() == 1 {
            let mut inner = rest[0].clone();
            if let (Some(o), Some(d)) = (inner.as_object_mut(), s.get("description")) {
                o.insert("description".into(), d.clone());
            }
            return inner;
        }
    }
    s
}

/// A JSON answer with its schema.
fn json_answer(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The answers an operation gives, built status by status.
struct Answers {
    map: Map<String, Value>,
    error: Value,
}

impl Answers {
    fn new(s: &mut Schemas) -> Answers {
        Answers {
            map: Map::new(),
            error: s.answer::<ErrorBody>(),
        }
    }

    fn ok(mut self, description: &str, schema: Value) -> Answers {
        self.map
            .insert("200".into(), json_answer(description, schema));
        self
    }

    fn text(mut self, description: &str) -> Answers {
        self.map.insert(
            "200".into(),
            json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } }),
        );
        self
    }

    /// An error answer: `codes` are the `error.code`s it can carry.
    fn err(mut self, status: u16, codes: &[&str], why: &str) -> Answers {
        let codes: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
        let mut a = json_answer(&format!("{why} ({})", codes.join(", ")), self.error.clone());
        if status == 401 {
            a["headers"] = json!({ "WWW-Authenticate": { "required": true, "description": "`Bearer realm=\"hunt\"`", "schema": { "type": "string" } } });
        }
        if status == 429 || status == 503 {
            a["headers"] = retry_after();
        }
        self.map.insert(status.to_string(), a);
        self
    }

    /// An answer of either schema (an answer per event, or an error).
    fn either(mut self, status: u16, description: &str, first: Value) -> Answers {
        let mut a = json_answer(description, json!({ "anyOf": [first, self.error.clone()] }));
        if status == 429 || status == 503 {
            a["headers"] = retry_after();
        }
        self.map.insert(status.to_string(), a);
        self
    }

    /// 401 and 403: the key.
    fn secured(self) -> Answers {
        self.err(
            401,
            &["unauthorized"],
            "No API key, or one the server does not know",
        )
        .err(403, &["forbidden"], "The key lacks the role")
    }

    /// What every request can meet before its handler: a request head over the limits,
    /// and a connection over the cap.
    fn head(self) -> Answers {
        self.err(414, &["uri_too_long"], "The request target is over 8 KiB")
            .err(
                431,
                &["headers_too_large"],
                "Over 100 header fields or 32 KiB of them",
            )
    }

    /// 503 for an operation that needs the state: while starting, stopping, or without
    /// a confirmed lease; and when the connection cap is reached.
    fn unavailable(self, more: &[&str]) -> Answers {
        let mut codes = vec![
            "starting",
            "stopping",
            "lease_unconfirmed",
            "too_many_connections",
        ];
        codes.extend_from_slice(more);
        self.err(503, &codes, "Not now; retry after `Retry-After` seconds")
    }

    fn done(self) -> Value {
        Value::Object(self.map)
    }
}

fn retry_after() -> Value {
    json!({ "Retry-After": { "required": true, "description": "Seconds to wait before a retry.", "schema": { "type": "integer", "minimum": 1 } } })
}

/// An operation needing `role`.
fn secured_op(summary: &str, role: &str, responses: Value) -> Value {
    json!({
        "summary": summary,
        "description": format!("Needs an API key with the `{role}` role (or `admin`)."),
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "responses": responses,
    })
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

/// The customer id of a path: what an event's `user` may be.
fn user_param() -> Value {
    path_param(
        "user",
        "A customer id: 1-128 bytes, no control characters.",
        json!({ "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]*$" }),
    )
}

/// The document, for a server with `http`'s limits.
pub fn document(http: &HttpConfig) -> String {
    let mut s = Schemas::new();
    let limits = &http.limits;
    let event = s.request::<Event>();
    let cloud_event = s.request::<CloudEventIn>();
    let events_body = json!({
        "required": true,
        "description": format!(
            "Events: one, or an array of at most {} (also as NDJSON, one per line). A \
             binary-mode CloudEvent (its attributes in `ce-*` headers, the body its \
             `data`) is taken too. The body is at most {} bytes, after gzip if sent \
             with `Content-Encoding: gzip`.",
            limits.events_max, limits.body_bytes_max),
        "content": {
            "application/json": { "schema": { "anyOf": [
                event.clone(),
                { "type": "array", "items": event, "maxItems": limits.events_max } ] } },
            "application/cloudevents+json": { "schema": cloud_event.clone() },
            "application/cloudevents-batch+json": { "schema": {
                "type": "array", "items": cloud_event, "maxItems": limits.events_max } },
            "application/x-ndjson": { "schema": { "type": "string", "description": "One event (as in `application/json`) per line." } }
        }
    });
    let ingest = s.answer::<IngestAnswer>();
    let events = json!({
        "summary": "Post events: one JSON event, a JSON array, NDJSON, or CloudEvents 1.0 (structured, batch, binary with ce-* headers).",
        "description": "Answered only once every accepted event is durable. Per event: accepted (with outcomes), duplicate (with the first answer's outcomes) or rejected (with the field and reason). Needs the `ingest` role.",
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "requestBody": events_body,
        "responses": Answers::new(&mut s)
            .ok("Per-event answers (some events may be rejected).", ingest.clone())
            .either(400, "Every event was rejected (an answer per event), or the body is not JSON, is empty, or could not be read (`malformed`, `bad_body`).", ingest.clone())
            .secured()
            .err(408, &["body_timeout"], "The body was not received within the body timeout")
            .err(413, &["body_too_large", "too_large", "over_key_burst"], "The body or its event count is over the limit, or the request has more events than the key may ever send at once")
            .err(415, &["unsupported_media_type", "unsupported_encoding"], "Unsupported Content-Type or Content-Encoding")
            .either(429, "Over the key's rate limit (`rate_limited`), or every event's customer is over theirs (an answer per event).", ingest.clone())
            .either(500, "No event was taken, and applying one failed (a bug): its result's `code` is `internal`; nothing of it was recorded.", ingest.clone())
            .head()
            .either(503, "The backlog is full, the log stopped, the server is starting or stopping (`backlog_full`, `log_stopped`, `starting`, `stopping`, `lease_unconfirmed`, `too_many_connections`), or every event was refused for a retry: the dedupe window full, a cluster's pools out of reach (`pools_unavailable`), or the partition's owner on another node out of reach (`moving`) (an answer per event).", ingest)
            .done(),
    });

    let user = secured_op(
        "A customer: traits, progress per hunt, rewards with codes.",
        "read",
        Answers::new(&mut s)
            .ok("The customer.", s.answer::<UserAnswer>())
            .err(400, &["bad_user"], "Not a customer id")
            .secured()
            .err(404, &["unknown_user"], "No events for this customer")
            .head()
            .unavailable(&["log_stopped", "moving"])
            .done(),
    );
    let user_hunts = secured_op(
        "The active hunts the customer may see, with progress and the next clue.",
        "read",
        Answers::new(&mut s)
            .ok("Hunts.", s.answer::<UserHuntsAnswer>())
            .err(400, &["bad_user"], "Not a customer id")
            .secured()
            .head()
            .unavailable(&["log_stopped", "moving"])
            .done(),
    );
    let hunts = secured_op(
        "The hunts of the version in force.",
        "read",
        Answers::new(&mut s)
            .ok("Hunts.", s.answer::<HuntsAnswer>())
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let hunt_id = path_param(
        "id",
        "A hunt's id.",
        json!({ "type": "string", "minLength": 1 }),
    );
    let stats = secured_op(
        "Participants, per-step funnel, completions, granted and remaining rewards.",
        "read",
        Answers::new(&mut s)
            .ok("Figures.", s.answer::<StatsAnswer>())
            .err(400, &["bad_request"], "The path is not UTF-8")
            .secured()
            .err(
                404,
                &["unknown_hunt"],
                "No hunt of that id in the version in force, nor one a later version removed after customers took part in it",
            )
            .head()
            .unavailable(&[])
            .done(),
    );
    let mut winners = secured_op(
        "Winners in order of their grant.",
        "read",
        Answers::new(&mut s)
            .ok("Winners.", s.answer::<WinnersAnswer>())
            .err(
                400,
                &["bad_limit", "bad_query", "bad_request"],
                "A bad `limit` or query string, or a path that is not UTF-8",
            )
            .secured()
            .err(
                404,
                &["unknown_hunt"],
                "No hunt of that id in the version in force, nor one a later version removed after customers took part in it",
            )
            .head()
            .unavailable(&[])
            .done(),
    );
    winners["parameters"] = json!(s.query::<WinnersQuery>());

    let hunt_history = secured_op(
        "A hunt's window (for a countdown) and its participants, completions and grants every few seconds over the last 15 minutes.",
        "read",
        Answers::new(&mut s)
            .ok("The history.", s.answer::<HuntHistoryAnswer>())
            .err(400, &["bad_request"], "The path is not UTF-8")
            .secured()
            .err(
                404,
                &["unknown_hunt"],
                "No hunt of that id in the version in force, nor one a later version removed after customers took part in it",
            )
            .head()
            .unavailable(&[])
            .done(),
    );
    let pools = secured_op(
        "Each pool's codes left over the last 15 minutes, its grant rate and when it runs out (the `pool_runs_out_within` alert's forecast).",
        "read",
        Answers::new(&mut s)
            .ok(
                "The pools of the version in force.",
                s.answer::<PoolsAnswer>(),
            )
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let overview = secured_op(
        "Throughput, acknowledgement latency (p50, p99), the backlog per partition and its time to drain, now and over the last 15 minutes; each sink's breaker and queue; the alerts firing.",
        "read",
        Answers::new(&mut s)
            .ok("The overview.", s.answer::<OverviewAnswer>())
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let cluster = secured_op(
        "Whether the server runs on a cluster; if so its log, this node's lease and its partitions' queues.",
        "read",
        Answers::new(&mut s)
            .ok("This node.", s.answer::<ClusterAnswer>())
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let versions = secured_op(
        "Every hunts-file version in the log, newest first (the first listing reads the whole log once).",
        "admin",
        Answers::new(&mut s)
            .ok("The versions.", s.answer::<VersionsAnswer>())
            .secured()
            .err(500, &["internal"], "The log could not be read")
            .head()
            .unavailable(&[])
            .done(),
    );
    let version = secured_op(
        "One hunts-file version with its text.",
        "admin",
        Answers::new(&mut s)
            .ok("The version.", s.answer::<ConfigView>())
            .err(
                400,
                &["bad_version", "bad_request"],
                "Not a version number, or a path that is not UTF-8",
            )
            .secured()
            .err(404, &["unknown_version"], "No such version in the log")
            .err(500, &["internal"], "The log could not be read")
            .head()
            .unavailable(&[])
            .done(),
    );
    let mut diff = secured_op(
        "What going from one hunts-file version to another changes, hunt by hunt and step by step (customers not counted).",
        "admin",
        Answers::new(&mut s)
            .ok("The plan between the two.", s.answer::<DiffAnswer>())
            .err(
                400,
                &["bad_version", "bad_query"],
                "A missing or bad `from` or `to`",
            )
            .secured()
            .err(404, &["unknown_version"], "No such version in the log")
            .err(
                500,
                &["internal"],
                "The log could not be read, or an old version no longer compiles",
            )
            .head()
            .unavailable(&[])
            .done(),
    );
    diff["parameters"] = json!(s.query::<DiffQuery>());

    let get_config = secured_op(
        "The hunts file version in force, with its text.",
        "admin",
        Answers::new(&mut s)
            .ok("The version.", s.answer::<ConfigView>())
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let hunts_file = s.request::<HuntsFile>();
    let put_config = json!({
        "summary": "Put a new hunts file in force: validated, its test cases run, recorded in the log, switched atomically.",
        "description": "Needs the `admin` role. A file identical to the version in force is not recorded again. The body is the file, as YAML or JSON (the schema is `hunt schema`'s); what a schema cannot say (conditions, references between hunts and pools, the file's own test cases) is checked too, and answered with 422.",
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "parameters": s.query::<ConfigQuery>(),
        "requestBody": { "required": true, "content": {
            "application/yaml": { "schema": hunts_file.clone() },
            "application/json": { "schema": hunts_file } } },
        "responses": Answers::new(&mut s)
            .ok("The new version and its changes; the version in force with `unchanged` for an identical file; the plan for a dry run.", s.answer::<PutConfigAnswer>())
            .err(400, &["bad_query", "not_utf8", "bad_body"], "A bad query string; a body that is not UTF-8 or could not be read")
            .secured()
            .err(408, &["body_timeout"], "The body was not received within the body timeout")
            .err(409, &["unsafe_change", "version_raced"], "Unsafe: the new pools would take back codes already granted; `details` hold the plan and its refusals. Or, on a cluster whose partitions are spread over nodes, another node put a version first: nothing changed, send the file again")
            .err(413, &["body_too_large"], "The file is over 4 MiB")
            .err(415, &["unsupported_encoding"], "A Content-Encoding other than gzip")
            .err(422, &["invalid_hunts_file", "tests_failed"], "The file has errors (`details` hold every diagnostic, as `hunt check --json`), or its test cases fail (`details` hold each case's diff)")
            .err(500, &["internal"], "Putting it in force failed (a bug); nothing changed")
            .head()
            .unavailable(&["log_stopped", "pools_unavailable"])
            .done(),
    });

    let mut dlq = secured_op(
        "Dead letters in the order of their events (the log's order), each with its error history.",
        "admin",
        Answers::new(&mut s)
            .ok("`total` and `entries`.", s.answer::<DlqList>())
            .err(
                400,
                &["bad_query", "bad_limit", "bad_time"],
                "A bad filter, time or limit",
            )
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    dlq["parameters"] = json!(s.query::<DlqQuery>());
    let delivery = secured_op(
        "One delivery, pending or dead: its history and the CloudEvent it carries.",
        "admin",
        Answers::new(&mut s)
            .ok("The delivery.", s.answer::<DeliveryView>())
            .err(400, &["bad_request"], "The path is not UTF-8")
            .secured()
            .err(404, &["unknown_delivery"], "No such delivery")
            .head()
            .unavailable(&[])
            .done(),
    );
    let selection = s.request::<Selection>();
    let dlq_op = |s: &mut Schemas, summary: &str, answer: Value| {
        let mut o = secured_op(
            summary,
            "admin",
            Answers::new(s)
                .ok("How many, and `ids` (the first thousand).", answer)
                .err(
                    400,
                    &["no_selection", "bad_selection", "bad_time", "bad_request"],
                    "No selection, more than one kind of it, a bad time, or a body that could not be read",
                )
                .secured()
                .err(404, &["unknown_dead_letter"], "The `id` given is not a dead letter")
                .err(408, &["body_timeout"], "The body was not received within the body timeout")
                .err(413, &["body_too_large"], "The body is over 64 KiB")
                .head()
                .unavailable(&["log_stopped"])
                .done(),
        );
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": selection.clone() } } });
        o
    };
    let retried = s.answer::<Retried>();
    let retry = dlq_op(
        &mut s,
        "Send dead letters back to be delivered: same ids (idempotency keys), history kept, a fresh attempt budget.",
        retried,
    );
    let dropped = s.answer::<Dropped>();
    let drop = dlq_op(&mut s, "Remove dead letters for good.", dropped);

    let alerts = secured_op(
        "Every alert with its state (ok, pending, firing), and the rules.",
        "read",
        Answers::new(&mut s)
            .ok("`firing`, `alerts`, `rules`.", s.answer::<AlertsAnswer>())
            .secured()
            .head()
            .unavailable(&[])
            .done(),
    );
    let metrics = json!({ "summary": "Prometheus text format.",
        "responses": Answers::new(&mut s).text("Metrics.").head().unavailable(&[]).done() });
    let healthz = json!({ "summary": "The process is up. Plain text, the one answer that is not JSON.",
        "responses": Answers::new(&mut s).text("`ok`").head()
            .err(503, &["too_many_connections"], "The connection cap is reached").done() });
    let readyz = json!({ "summary": "Ready once the log is replayed.",
        "responses": Answers::new(&mut s).text("`ready`").head().unavailable(&[]).done() });
    let openapi = json!({ "summary": "This document.",
        "responses": Answers::new(&mut s)
            .ok("OpenAPI 3.1.", s.answer::<Map<String, Value>>())
            .head()
            .err(503, &["too_many_connections"], "The connection cap is reached")
            .done() });

    let doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Treasure Hunt Engine", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/events": { "post": events },
            "/v1/users/{user}": { "get": user, "parameters": [user_param()] },
            "/v1/users/{user}/hunts": { "get": user_hunts, "parameters": [user_param()] },
            "/v1/hunts": { "get": hunts },
            "/v1/hunts/{id}/stats": { "get": stats, "parameters": [hunt_id.clone()] },
            "/v1/hunts/{id}/winners": { "get": winners, "parameters": [hunt_id.clone()] },
            "/v1/hunts/{id}/history": { "get": hunt_history, "parameters": [hunt_id.clone()] },
            "/v1/pools": { "get": pools },
            "/v1/overview": { "get": overview },
            "/v1/cluster": { "get": cluster },
            "/v1/config": { "get": get_config, "put": put_config },
            "/v1/config/versions": { "get": versions },
            "/v1/config/versions/{version}": { "get": version, "parameters": [path_param("version", "A version number.", json!({ "type": "integer", "minimum": 1, "maximum": super::config::VERSION_MAX }))] },
            "/v1/config/diff": { "get": diff },
            "/v1/dlq": { "get": dlq },
            "/v1/dlq/{id}": { "get": delivery, "parameters": [path_param("id", "A delivery's id.", json!({ "type": "string", "minLength": 1 }))] },
            "/v1/dlq/retry": { "post": retry },
            "/v1/dlq/drop": { "post": drop },
            "/v1/alerts": { "get": alerts },
            "/metrics": { "get": metrics },
            "/healthz": { "get": healthz },
            "/readyz": { "get": readyz },
            "/openapi.json": { "get": openapi }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-Api-Key" } },
            "schemas": s.components()
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let http = HttpConfig {
            limits: Default::default(),
            keys: Default::default(),
            rate_per_key: None,
            rate_per_user: None,
            conn: Default::default(),
        };
        serde_json::from_str(&document(&http)).unwrap()
    }

    /// Every `$ref` points at a schema of the document.
    #[test]
    fn every_reference_resolves() {
        let d = doc();
        let schemas = d["components"]["schemas"].as_object().unwrap();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        out.push(r.clone());
                    }
                    o.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut refs = Vec::new();
        walk(&d, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(schemas.contains_key(name), "{r} is not in components");
        }
    }

    #[test]
    fn query_parameters_come_from_the_types() {
        let d = doc();
        let params = d["paths"]["/v1/dlq"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["hunt", "limit", "since", "sink", "until"]);
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["type"], "integer", "{limit}");
        assert_eq!(limit["required"], false);
    }
}
