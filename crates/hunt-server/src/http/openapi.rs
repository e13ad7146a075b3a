//! `GET /openapi.json`: the API described as OpenAPI 3.1, written out once.

use std::sync::OnceLock;

use serde_json::{Value, json};

fn op(summary: &str, role: Option<&str>, responses: Value) -> Value {
    let mut o = json!({ "summary": summary, "responses": responses });
    if let Some(r) = role {
        o["description"] = json!(format!(
            "Needs an API key with the `{r}` role (or `admin`)."
        ));
        o["security"] = json!([{ "bearer": [] }, { "apiKey": [] }]);
    }
    o
}

fn user_param() -> Value {
    json!([{ "name": "user", "in": "path", "required": true, "schema": { "type": "string" } }])
}

fn hunt_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

fn dlq_op(summary: &str, verb: &str) -> Value {
    let err = json!({ "$ref": "#/components/schemas/Error" });
    let mut o = op(
        summary,
        Some("admin"),
        json!({
            "200": { "description": format!("`{verb}`: how many, and `ids` (the first thousand)."), "content": { "application/json": {} } },
            "400": { "description": "No selection, or more than one kind of it.", "content": { "application/json": { "schema": err } } },
            "404": { "description": "The `id` given is not a dead letter.", "content": { "application/json": { "schema": err } } }
        }),
    );
    o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": {
        "description": "One of: `id`; a filter (`sink`, `hunt`, `since`, `until`, combined with and); `all: true`.",
        "type": "object", "additionalProperties": false,
        "properties": {
            "id": { "type": "string" }, "sink": { "type": "string" }, "hunt": { "type": "string" },
            "since": { "type": "string" }, "until": { "type": "string" }, "all": { "type": "boolean" } } } } } });
    o
}

pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let err = json!({ "$ref": "#/components/schemas/Error" });
        let e = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": err } } });
        let ok = |d: &str| json!({ "description": d, "content": { "application/json": {} } });
        let doc = json!({
            "openapi": "3.1.0",
            "info": { "title": "Treasure Hunt Engine", "version": env!("CARGO_PKG_VERSION") },
            "paths": {
                "/v1/events": { "post": {
                    "summary": "Post events: one JSON event, a JSON array, NDJSON, or CloudEvents 1.0 (structured, batch, binary with ce-* headers).",
                    "description": "Answered only once every accepted event is durable. Per event: accepted (with outcomes), duplicate (with the first answer's outcomes) or rejected (with the field and reason). Needs the `ingest` role.",
                    "security": [{ "bearer": [] }, { "apiKey": [] }],
                    "requestBody": { "required": true, "content": {
                        "application/json": {}, "application/x-ndjson": {},
                        "application/cloudevents+json": {}, "application/cloudevents-batch+json": {} } },
                    "responses": {
                        "200": ok("Per-event answers (some events may be rejected)."),
                        "400": ok("Every event was rejected, or the body is not JSON."),
                        "500": ok("No event was taken, and applying one failed (a bug): its result's `code` is `internal`; nothing of it was recorded."),
                        "401": e("No or unknown API key."), "403": e("The key lacks the role."),
                        "413": e("Body or event count over the limit."),
                        "415": e("Unsupported Content-Type or Content-Encoding."),
                        "429": e("Over a rate limit; see Retry-After."),
                        "503": e("Backlog full or starting; see Retry-After.") } } },
                "/v1/users/{user}": { "get": op("A customer: traits, progress per hunt, rewards with codes.", Some("read"),
                    json!({ "200": ok("The customer."), "404": e("No events for this customer.") })), "parameters": user_param() },
                "/v1/users/{user}/hunts": { "get": op("The active hunts the customer may see, with progress and the next clue.", Some("read"),
                    json!({ "200": ok("Hunts.") })), "parameters": user_param() },
                "/v1/hunts": { "get": op("The hunts of the version in force.", Some("read"), json!({ "200": ok("Hunts.") })) },
                "/v1/hunts/{id}/stats": { "get": op("Participants, per-step funnel, completions, granted and remaining rewards.", Some("read"),
                    json!({ "200": ok("Figures."), "404": e("No such hunt.") })), "parameters": hunt_param() },
                "/v1/hunts/{id}/winners": { "get": op("Winners in order of their grant.", Some("read"),
                    json!({ "200": ok("Winners."), "400": e("Bad limit."), "404": e("No such hunt.") })),
                    "parameters": [hunt_param()[0].clone(), { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } }] },
                "/v1/config": {
                    "get": op("The hunts file version in force, with its text.", Some("admin"), json!({ "200": ok("The version.") })),
                    "put": {
                        "summary": "Put a new hunts file in force: validated, its test cases run, recorded in the log, switched atomically.",
                        "description": "Needs the `admin` role. A file identical to the version in force is not recorded again.",
                        "security": [{ "bearer": [] }, { "apiKey": [] }],
                        "parameters": [
                            { "name": "name", "in": "query", "schema": { "type": "string" } },
                            { "name": "dry_run", "in": "query", "description": "Answer the plan (each change, with the customers it touches) and switch nothing.", "schema": { "type": "boolean", "default": false } },
                            { "name": "skip_tests", "in": "query", "description": "Do not run the file's own test cases first.", "schema": { "type": "boolean", "default": false } }],
                        "requestBody": { "required": true, "content": { "application/yaml": {}, "application/json": {} } },
                        "responses": {
                            "200": ok("The new version and its changes; the version in force with `unchanged` for an identical file; the plan for a dry run."),
                            "409": e("Unsafe: the new pools would take back codes already granted; details hold the plan and its refusals."),
                            "422": e("The file has errors (details hold every diagnostic, as `hunt check --json`), or its test cases fail (`tests_failed`, details hold each case's diff).") } } },
                "/v1/dlq": { "get": op("Dead letters in the order of their events (the log's order), each with its error history.", Some("admin"),
                    json!({ "200": ok("`total` and `entries`."), "400": e("Bad filter or limit.") })),
                    "parameters": [
                        { "name": "sink", "in": "query", "schema": { "type": "string" } },
                        { "name": "hunt", "in": "query", "schema": { "type": "string" } },
                        { "name": "since", "in": "query", "description": "Dead-lettered at or after (RFC 3339).", "schema": { "type": "string" } },
                        { "name": "until", "in": "query", "description": "Dead-lettered before (RFC 3339).", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } }] },
                "/v1/dlq/{id}": { "get": op("One delivery, pending or dead: its history and the CloudEvent it carries.", Some("admin"),
                    json!({ "200": ok("The delivery."), "404": e("No such delivery.") })),
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }] },
                "/v1/dlq/retry": { "post": dlq_op("Send dead letters back to be delivered: same ids (idempotency keys), history kept, a fresh attempt budget.", "retried") },
                "/v1/dlq/drop": { "post": dlq_op("Remove dead letters for good.", "dropped") },
                "/v1/alerts": { "get": op("Every alert with its state (ok, pending, firing), and the rules.", Some("read"),
                    json!({ "200": ok("`firing`, `alerts`, `rules`.") })) },
                "/metrics": { "get": { "summary": "Prometheus text format.", "responses": { "200": { "description": "Metrics." } } } },
                "/healthz": { "get": { "summary": "The process is up.", "responses": { "200": { "description": "ok" } } } },
                "/readyz": { "get": { "summary": "Ready once the log is replayed.", "responses": { "200": { "description": "ready" }, "503": e("starting or stopping") } } },
                "/openapi.json": { "get": { "summary": "This document.", "responses": { "200": { "description": "OpenAPI 3.1" } } } }
            },
            "components": {
                "securitySchemes": {
                    "bearer": { "type": "http", "scheme": "bearer" },
                    "apiKey": { "type": "apiKey", "in": "header", "name": "X-Api-Key" } },
                "schemas": { "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "details": {} } } } } }
            }
        });
        serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
    })
    .clone()
}
