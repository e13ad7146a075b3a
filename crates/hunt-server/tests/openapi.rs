//! `/openapi.json` against the router and against real answers: every route documented
//! and nothing else, every secured operation with its 401 and 403, every JSON answer
//! with a schema, and live answers valid by their documented schema (with a small
//! validator here: types, required and documented properties, items, enums, anyOf).
//! The dashboard's files under `/ui/` (merged into the router from `http/ui.rs`) are
//! not the API, and not in the document.

use std::collections::BTreeSet;

use hunt_server::auth::Keys;
use serde_json::{Value, json};

use crate::common::*;

const KEYS: &str = "\
shop     ingest   ingest-secret-0123456789
reports  read     read-secret-0123456789
ops      admin    admin-secret-0123456789
";
const ADMIN: &str = "admin-secret-0123456789";
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The routes `router()` registers, read from its source: `(path, method)`.
fn routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/http/mod.rs");
    let body = src
        .split("pub fn router(")
        .nth(1)
        .and_then(|s| s.split(".fallback(").next())
        .expect("router() and its fallback");
    let mut out = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).expect("a path literal").to_string();
        // The method routers: `get(h)`, `.put(h)` …, up to the route's closing paren.
        let args = &call[call.find(',').expect("a method router")..];
        let mut depth = 0i32;
        let mut end = args.len();
        for (i, c) in args.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = i;
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let args = &args[..end];
        for m in METHODS {
            let as_call = format!("{m}(");
            let mut rest = args;
            while let Some(at) = rest.find(&as_call) {
                let before = rest[..at].chars().last();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                    out.insert((path.clone(), m.to_string()));
                }
                rest = &rest[at + as_call.len()..];
            }
        }
    }
    assert!(out.len() > 10, "routes read from the router: {out:?}");
    out
}

/// The documented operations: `(path, method)`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

/// Follows a `$ref` into `components/schemas`.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a reference outside components: {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "{r} is not in components");
            target
        }
        None => s,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => panic!("unknown type {t}"),
    }
}

/// Where `v` breaks schema `s` (`at` is the path so far), strictly: an object's
/// properties must all be documented unless the schema says otherwise.
fn problems(doc: &Value, s: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    if s == &Value::Bool(true) {
        return;
    }
    if s.get("$ref").is_some() {
        problems(doc, resolve(doc, s), v, at, out);
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
            _ => panic!("type {t}"),
        };
        if !ok {
            out.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        out.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        out.push(format!("{at}: {v} is not {c}"));
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        out.push(format!("{at}: {n} < {min}"));
    }
    for (key, any) in [("anyOf", true), ("oneOf", true), ("allOf", false)] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = list
                .iter()
                .map(|sub| {
                    let mut p = Vec::new();
                    problems(doc, sub, v, at, &mut p);
                    p
                })
                .collect();
            let fine = results.iter().filter(|p| p.is_empty()).count();
            if (any && fine == 0) || (!any && fine < list.len()) {
                out.push(format!("{at}: fits no schema of {key}: {results:?}"));
            }
        }
    }
    if let Value::Object(o) = v {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                out.push(format!("{at}: `{r}` is required, and missing"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        let extra = s.get("additionalProperties");
        for (k, x) in o {
            let here = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), extra) {
                (Some(ps), _) => problems(doc, ps, x, &here, out),
                (None, Some(Value::Bool(false))) => {
                    out.push(format!("{here}: not allowed"));
                }
                (None, Some(e)) => problems(doc, e, x, &here, out),
                // Strict: a property the schema lists none of is undocumented.
                (None, None) if props.is_some() => {
                    out.push(format!("{here}: answered, but not in the schema"));
                }
                (None, None) => {}
            }
        }
    }
    if let (Value::Array(items), Some(each)) = (v, s.get("items")) {
        for (i, x) in items.iter().enumerate() {
            problems(doc, each, x, &format!("{at}[{i}]"), out);
        }
    }
}

/// The documented JSON schema of `method path`'s `status` answer.
fn answer_schema<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let a = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(!a.is_null(), "{method} {path} does not document {status}");
    let s = &a["content"]["application/json"]["schema"];
    assert!(!s.is_null(), "{method} {path} {status}: no JSON schema");
    s
}

/// Checks a live answer against its documented schema.
fn conforms(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let mut p = Vec::new();
    problems(
        doc,
        answer_schema(doc, path, method, status),
        body,
        "$",
        &mut p,
    );
    assert!(
        p.is_empty(),
        "{method} {path} {status} does not fit its schema:\n{}\n{body:#}",
        p.join("\n")
    );
}

/// A request with the admin key (or none), whose answer is read as JSON.
async fn call(s: &Server, method: &str, path: &str, body: Option<&str>, key: bool) -> (u16, Value) {
    let url = format!("{}{path}", s.url);
    let mut b = s
        .client
        .request(method.to_uppercase().parse().unwrap(), url);
    if key {
        b = b.bearer_auth(ADMIN);
    }
    if let Some(body) = body {
        b = b
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = b.send().await.expect("request sent");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_router_and_the_answers() {
    let (_d, dir) = tempdir();
    let s = Server::start(
        &dir,
        Options {
            keys: Keys::parse(KEYS, "keys").unwrap(),
            ..Options::default()
        },
    )
    .await;
    let (st, doc) = call(&s, "get", "/openapi.json", None, false).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    // Every route is documented, and every documented operation is a route.
    let routes = routes();
    let ops = documented(&doc);
    assert_eq!(
        routes.difference(&ops).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes not in the document"
    );
    assert_eq!(
        ops.difference(&routes).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented operations the router lacks"
    );

    for (path, method) in &ops {
        let op = &doc["paths"][path.as_str()][method.as_str()];
        let responses = op["responses"].as_object().unwrap();
        // Every secured operation answers 401 and 403.
        if op.get("security").is_some() {
            for st in ["401", "403"] {
                assert!(responses.contains_key(st), "{method} {path}: no {st}");
            }
        }
        // Every JSON answer has a schema; every operation its head limits.
        for (st, a) in responses {
            if let Some(j) = a["content"].get("application/json") {
                assert!(j.get("schema").is_some(), "{method} {path} {st}: no schema");
            }
        }
        for st in ["414", "431", "503"] {
            assert!(responses.contains_key(st), "{method} {path}: no {st}");
        }
        // The live router answers it: not as an unknown route or method. Without a
        // key, a secured operation is a documented 401.
        let live = path
            .replace("{user}", "nobody")
            .replace("{id}", "nothing")
            .replace("{version}", "1");
        let (st, body) = call(&s, method, &live, Some("{}"), false).await;
        assert_ne!(
            body["error"]["code"], "not_found",
            "{method} {path}: {st} {body}"
        );
        assert_ne!(st, 405, "{method} {path}: {body}");
        if op.get("security").is_some() {
            assert_eq!(st, 401, "{method} {path} without a key: {body}");
            conforms(&doc, path, method, st, &body);
        }
        // A method not documented on the path is refused.
        for other in METHODS {
            if !ops.contains(&(path.clone(), other.to_string())) {
                let (st, body) = call(&s, other, &live, None, true).await;
                assert_eq!(st, 405, "{other} {path}: {body}");
            }
        }
    }

    // Live answers, valid by their documented schemas.
    let events: Vec<Value> = three_eggs("ann")
        .into_iter()
        .chain([ev("bad", "", "page_view", json!({}))])
        .collect();
    let (st, body) = call(
        &s,
        "post",
        "/v1/events",
        Some(&Value::Array(events).to_string()),
        true,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    conforms(&doc, "/v1/events", "post", st, &body);
    assert_eq!(body["rejected"], 1, "{body}");
    let (st, body) = call(&s, "post", "/v1/events", Some("not json"), true).await;
    assert_eq!(st, 400);
    conforms(&doc, "/v1/events", "post", st, &body);
    // A CloudEvent's `datacontenttype` is a string, as its schema says.
    let r = s
        .client
        .post(format!("{}/v1/events", s.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "source": "shop", "id": "c1", "type": "page_view",
                   "subject": "cy", "datacontenttype": {}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["results"][0]["field"], "datacontenttype", "{body}");
    conforms(&doc, "/v1/events", "post", st, &body);

    for (path, live, want) in [
        ("/v1/hunts", "/v1/hunts", 200),
        ("/v1/users/{user}", "/v1/users/ann", 200),
        ("/v1/users/{user}", "/v1/users/nobody", 404),
        ("/v1/users/{user}/hunts", "/v1/users/ann/hunts", 200),
        ("/v1/hunts/{id}/stats", "/v1/hunts/eggs/stats", 200),
        ("/v1/hunts/{id}/stats", "/v1/hunts/nope/stats", 404),
        ("/v1/hunts/{id}/winners", "/v1/hunts/eggs/winners", 200),
        (
            "/v1/hunts/{id}/winners",
            "/v1/hunts/eggs/winners?limit=0",
            400,
        ),
        ("/v1/config", "/v1/config", 200),
        ("/v1/dlq", "/v1/dlq", 200),
        ("/v1/dlq", "/v1/dlq?since=yesterday", 400),
        ("/v1/dlq/{id}", "/v1/dlq/nothing", 404),
        ("/openapi.json", "/openapi.json", 200),
    ] {
        let (st, body) = call(&s, "get", live, None, true).await;
        assert_eq!(st, want, "GET {live}: {body}");
        conforms(&doc, path, "get", st, &body);
    }
    let (st, body) = call(&s, "get", "/v1/hunts/eggs/winners", None, true).await;
    assert_eq!(body["winners"][0]["user"], "ann", "{st} {body}");
    let (st, body) = call(&s, "get", "/v1/users/ann", None, true).await;
    assert_eq!(
        body["rewards"].as_array().map(Vec::len),
        Some(1),
        "{st} {body}"
    );

    for (path, selection, want) in [
        ("/v1/dlq/retry", r#"{"all": true}"#, 200),
        ("/v1/dlq/drop", r#"{"sink": "x"}"#, 200),
        ("/v1/dlq/retry", r#"{}"#, 400),
        // A field is given or absent: null is not "absent", so this is not a filter.
        ("/v1/dlq/retry", r#"{"id": null, "sink": "x"}"#, 400),
        ("/v1/dlq/drop", r#"{"id": "nothing"}"#, 404),
    ] {
        let (st, body) = call(&s, "post", path, Some(selection), true).await;
        assert_eq!(st, want, "POST {path} {selection}: {body}");
        conforms(&doc, path, "post", st, &body);
    }

    // PUT /v1/config: a plan, a switch, an unchanged file, an invalid one.
    let more = EGGS.replace("Three eggs", "Three eggs again");
    for (query, text, want) in [
        ("?dry_run=true", more.as_str(), 200),
        ("", more.as_str(), 200),
        ("", more.as_str(), 200),
        ("", "version: 2", 422),
        ("?dry_run=maybe", more.as_str(), 400),
    ] {
        let r = s
            .client
            .put(format!("{}/v1/config{query}", s.url))
            .bearer_auth(ADMIN)
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(st, want, "PUT /v1/config{query}: {body}");
        conforms(&doc, "/v1/config", "put", st, &body);
    }

    // The dashboard's reads. The history holds a point once two samples are taken.
    let t = std::time::Instant::now();
    loop {
        let (st, body) = call(&s, "get", "/v1/overview", None, true).await;
        assert_eq!(st, 200, "{body}");
        conforms(&doc, "/v1/overview", "get", st, &body);
        if body["history"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 60,
            "no history after a minute: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for (path, live, want) in [
        ("/v1/pools", "/v1/pools", 200),
        ("/v1/cluster", "/v1/cluster", 200),
        ("/v1/hunts/{id}/history", "/v1/hunts/eggs/history", 200),
        ("/v1/hunts/{id}/history", "/v1/hunts/nope/history", 404),
        ("/v1/config/versions", "/v1/config/versions", 200),
        (
            "/v1/config/versions/{version}",
            "/v1/config/versions/1",
            200,
        ),
        (
            "/v1/config/versions/{version}",
            "/v1/config/versions/99",
            404,
        ),
        (
            "/v1/config/versions/{version}",
            "/v1/config/versions/one",
            400,
        ),
        ("/v1/config/diff", "/v1/config/diff?from=1&to=2", 200),
        ("/v1/config/diff", "/v1/config/diff?from=1&to=99", 404),
        ("/v1/config/diff", "/v1/config/diff?from=1", 400),
        ("/v1/config/diff", "/v1/config/diff?from=0&to=1", 400),
    ] {
        let (st, body) = call(&s, "get", live, None, true).await;
        assert_eq!(st, want, "GET {live}: {body}");
        conforms(&doc, path, "get", st, &body);
    }
    let (_, body) = call(&s, "get", "/v1/config/versions", None, true).await;
    assert_eq!(body["in_force"], 2, "{body}");
    let listed: Vec<&Value> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(listed, [&json!(2), &json!(1)], "{body}");
    let (_, body) = call(&s, "get", "/v1/config/diff?from=1&to=2", None, true).await;
    assert!(
        body["summary"].as_array().is_some_and(|s| !s.is_empty()),
        "the title changed: {body}"
    );
    let (_, body) = call(&s, "get", "/v1/config/versions/1", None, true).await;
    assert!(
        body["text"].as_str().unwrap().contains("Three eggs"),
        "{body}"
    );
    assert!(!body["text"].as_str().unwrap().contains("again"), "{body}");
    s.stop().await.unwrap();
}
