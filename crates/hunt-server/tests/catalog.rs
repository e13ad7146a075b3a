//! The bad-input catalog: every kind of bad request we could think of, each with the
//! status it must get and the words its JSON error must use to name the problem. After
//! the whole catalog the server is up, and what it accepted before is intact.

use hunt_server::auth::Keys;
use serde_json::{Value, json};

use crate::common::*;

const KEYS: &str = "\
shop     ingest       ingest-secret-0123456789
reports  read         read-secret-0123456789
ops      admin        admin-secret-0123456789
";
const INGEST: &str = "ingest-secret-0123456789";
const READ: &str = "read-secret-0123456789";

/// What a case must get back.
enum Expect {
    /// A request-level error: status, `error.code`, words in `error.message`.
    Error(u16, &'static str, &'static str),
    /// Every event rejected (400): the first result's `field` and words in its `reason`.
    Rejected(&'static str, &'static str),
    /// Not bad after all: accepted (200), and stored as sent.
    Accepted,
}

struct Case {
    name: String,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, Vec<u8>)>,
    key: Option<&'static str>,
    body: Vec<u8>,
    expect: Expect,
}

fn case(name: &str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        method: "POST",
        path: "/v1/events".into(),
        content_type: Some("application/json"),
        headers: Vec::new(),
        key: Some(INGEST),
        body: body.into(),
        expect,
    }
}

impl Case {
    fn ct(mut self, ct: Option<&'static str>) -> Case {
        self.content_type = ct;
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
    fn key(mut self, key: Option<&'static str>) -> Case {
        self.key = key;
        self
    }
    fn at(mut self, method: &'static str, path: impl Into<String>) -> Case {
        self.method = method;
        self.path = path.into();
        self
    }
}

/// A valid event with one field replaced (or removed, with `Value::Null` for `remove`).
fn with(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut e = json!({"id": "bad-1", "type": "page_view", "user": "mallory",
        "data": {"url": "/"}});
    match value {
        Some(v) => e[field] = v,
        None => {
            e.as_object_mut().unwrap().remove(field);
        }
    }
    e.to_string().into_bytes()
}

fn nested(depth: usize) -> Value {
    let mut v = json!("deep");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

fn catalog() -> Vec<Case> {
    use Expect::*;
    let mut c = vec![
        // Not JSON at all, or broken JSON.
        case("truncated object", "{\"id\": \"a\"", Error(400, "malformed", "json")),
        case("truncated array", "[{\"id\":\"a\"}", Error(400, "malformed", "json")),
        case("single quotes", "{'id': 'a'}", Error(400, "malformed", "json")),
        case("trailing comma", r#"{"id":"a","type":"x","user":"u",}"#, Error(400, "malformed", "json")),
        case("NaN literal", r#"{"id":"a","type":"x","user":"u","data":{"x":NaN}}"#, Error(400, "malformed", "json")),
        case("Infinity literal", r#"{"id":"a","type":"x","user":"u","data":{"x":Infinity}}"#, Error(400, "malformed", "json")),
        case("number out of range", r#"{"id":"a","type":"x","user":"u","data":{"x":1e400}}"#, Error(400, "malformed", "json")),
        case("negative number out of range", r#"{"id":"a","type":"x","user":"u","data":{"x":-1e400}}"#, Error(400, "malformed", "json")),
        case("empty body", "", Error(400, "malformed", "empty")),
        case("whitespace body", "  \n\t ", Error(400, "malformed", "empty")),
        case("null body", "null", Rejected("", "must be a JSON object")),
        case("number body", "42", Rejected("", "must be a JSON object")),
        case("string body", "\"event\"", Rejected("", "must be a JSON object")),
        case("boolean body", "true", Rejected("", "must be a JSON object")),
        case("array of numbers", "[1, 2]", Rejected("", "object")),
        case("array of arrays", "[[{}]]", Rejected("", "object")),
        case("comment", "// hi\n{}", Error(400, "malformed", "json")),
        case("two objects", "{}{}", Error(400, "malformed", "json")),
        case("byte order mark", b"\xEF\xBB\xBF{\"id\":\"a\",\"type\":\"x\",\"user\":\"u\"}".to_vec(), Error(400, "malformed", "json")),
        case("invalid UTF-8 in a string", b"{\"id\":\"\xff\xfe\",\"type\":\"x\",\"user\":\"u\"}".to_vec(), Error(400, "malformed", "not valid json")),
        case("invalid UTF-8 outside strings", b"{\"id\":\"a\",\xff\"type\":\"x\",\"user\":\"u\"}".to_vec(), Error(400, "malformed", "json")),
        case("lone surrogate escape", r#"{"id":"\ud800","type":"x","user":"u"}"#, Error(400, "malformed", "json")),
        case("raw control character in a string", b"{\"id\":\"a\x01b\",\"type\":\"x\",\"user\":\"u\"}".to_vec(), Error(400, "malformed", "json")),
        case("raw newline in a string", "{\"id\":\"a\nb\",\"type\":\"x\",\"user\":\"u\"}", Error(400, "malformed", "json")),
        case("nesting of 10,000 arrays", "[".repeat(10_000) + &"]".repeat(10_000), Error(400, "malformed", "json")),
        case("nesting of 10,000 objects", "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000), Error(400, "malformed", "json")),
        // Wrong types.
        case("id a number", with("id", Some(json!(1))), Rejected("id", "string")),
        case("id null", with("id", Some(Value::Null)), Rejected("id", "is required")),
        case("id an object", with("id", Some(json!({"a": 1}))), Rejected("id", "string")),
        case("id an array", with("id", Some(json!(["a"]))), Rejected("id", "string")),
        case("id a boolean", with("id", Some(json!(true)))    , Rejected("id", "string")),
        case("type a number", with("type", Some(json!(7))), Rejected("type", "string")),
        case("type null", with("type", Some(Value::Null)), Rejected("type", "is required")),
        case("user a number", with("user", Some(json!(42))), Rejected("user", "string")),
        case("user null", with("user", Some(Value::Null)), Rejected("user", "is required")),
        case("user an object", with("user", Some(json!({"id": "u"}))), Rejected("user", "string")),
        case("time a number", with("time", Some(json!(1_700_000_000))), Rejected("time", "rfc 3339")),
        case("time not a date", with("time", Some(json!("yesterday"))), Rejected("time", "rfc 3339")),
        case("time month 13", with("time", Some(json!("2026-13-01T00:00:00Z"))), Rejected("time", "rfc 3339")),
        case("time without zone", with("time", Some(json!("2026-11-27T10:00:00"))), Rejected("time", "rfc 3339")),
        case("time an object", with("time", Some(json!({"s": 1}))), Rejected("time", "rfc 3339")),
        case("data a string", with("data", Some(json!("x"))), Rejected("data", "object")),
        case("data an array", with("data", Some(json!([1]))), Rejected("data", "object")),
        case("data a number", with("data", Some(json!(5))), Rejected("data", "object")),
        case("traits a string", with("traits", Some(json!("gold"))), Rejected("traits", "object")),
        case("traits an array", with("traits", Some(json!(["gold"]))), Rejected("traits", "object")),
        // Missing and empty fields.
        case("no id", with("id", None), Rejected("id", "is required")),
        case("no type", with("type", None), Rejected("type", "is required")),
        case("no user", with("user", None), Rejected("user", "is required")),
        case("empty object", "{}", Rejected("id", "is required")),
        case("empty id", with("id", Some(json!(""))), Rejected("id", "must not be empty")),
        case("empty type", with("type", Some(json!(""))), Rejected("type", "must not be empty")),
        case("empty user", with("user", Some(json!(""))), Rejected("user", "must not be empty")),
        // Values out of their grammar or length.
        case("type in capitals", with("type", Some(json!("Page_View"))), Rejected("type", "[a-z0-9_.:-]")),
        case("type with a space", with("type", Some(json!("page view"))), Rejected("type", "[a-z0-9_.:-]")),
        case("type of 65 characters", with("type", Some(json!("a".repeat(65)))), Rejected("type", "over the limit of 64")),
        case("type with unicode", with("type", Some(json!("seite_ansicht_ü"))), Rejected("type", "[a-z0-9_.:-]")),
        case("type with a slash", with("type", Some(json!("a/b"))), Rejected("type", "[a-z0-9_.:-]")),
        case("id of 129 bytes", with("id", Some(json!("i".repeat(129)))), Rejected("id", "over the limit of 128")),
        case("id of 10,000 bytes", with("id", Some(json!("i".repeat(10_000)))), Rejected("id", "over the limit of 128")),
        case("user of 129 bytes", with("user", Some(json!("u".repeat(129)))), Rejected("user", "over the limit of 128")),
        case("user of 43 three-byte characters", with("user", Some(json!("顧".repeat(43)))), Rejected("user", "129 bytes, over the limit of 128")),
        // Control characters in identifiers (they would forge log lines and break
        // terminals).
        case("user with NUL", with("user", Some(json!("a\u{0}b"))), Rejected("user", "control")),
        case("user with an escape sequence", with("user", Some(json!("\u{1b}[31mred"))), Rejected("user", "control")),
        case("user with a newline", with("user", Some(json!("ann\nINFO forged log line"))), Rejected("user", "control")),
        case("user with DEL", with("user", Some(json!("a\u{7f}"))), Rejected("user", "control")),
        case("user with a C1 control", with("user", Some(json!("a\u{85}b"))), Rejected("user", "control")),
        case("id with a newline", with("id", Some(json!("e\n1"))), Rejected("id", "control")),
        case("id with a tab", with("id", Some(json!("e\t1"))), Rejected("id", "control")),
        case("id with NUL", with("id", Some(json!("\u{0}"))), Rejected("id", "control")),
        // Duplicate keys: ambiguous, so refused rather than guessed.
        case("duplicate id key", r#"{"id":"a","id":"b","type":"x","user":"u"}"#, Error(400, "malformed", "duplicate key `id`")),
        case("duplicate user key", r#"{"id":"a","type":"x","user":"u","user":"v"}"#, Error(400, "malformed", "duplicate key `user`")),
        case("duplicate key in an NDJSON line", "{\"id\":\"a\",\"type\":\"x\",\"user\":\"u\",\"type\":\"y\"}\n", Rejected("", "duplicate key `type`")).ct(Some("application/x-ndjson")),
        case("duplicate key in data", r#"{"id":"a","type":"x","user":"u","data":{"p":1,"p":2}}"#, Error(400, "malformed", "duplicate key `p`")),
        // Over the limits.
        case("data nested 9 deep", with("data", Some(nested(9))), Rejected("data", "nested deeper than the limit of 8")),
        case("traits nested 9 deep", with("traits", Some(nested(9))), Rejected("traits", "nested deeper than the limit of 8")),
        case("a data string of 2049 bytes", with("data", Some(json!({"s": "s".repeat(2049)}))), Rejected("data", "2048")),
        case("a trait string of 2049 bytes", with("traits", Some(json!({"s": "s".repeat(2049)}))), Rejected("traits", "2048")),
        case("data of 20 KB", with("data", Some(json!((0..20).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect::<serde_json::Map<_, _>>()))), Rejected("data", "over the limit of 16384")),
        case("a data key of 3000 bytes", with("data", Some(json!({ "k".repeat(3000): 1 }))), Rejected("data", "has a key of 3000 bytes, over the limit of 2048")),
        case("a nested data key of 3000 bytes", with("data", Some(json!({"a": { "k".repeat(3000): 1 }}))), Rejected("data.a", "has a key of 3000 bytes")),
        case("an unknown field", with("usr", Some(json!("u"))), Rejected("usr", "did you mean `user`")),
        case("1001 events", json!((0..1001).map(|i| json!({"id": format!("n{i}"), "type": "x", "user": "u"})).collect::<Vec<_>>()).to_string(), Error(413, "too_large", "1000")),
        case("a body over 1 MiB", format!("[{}]", vec![r#"{"id":"big","type":"x","user":"u","data":{"s":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#; 11_000].join(",")), Error(413, "body_too_large", "bytes")),
        // Content types.
        case("text/plain", with("id", Some(json!("ct"))), Error(415, "unsupported_media_type", "text/plain")).ct(Some("text/plain")),
        case("application/xml", "<event/>", Error(415, "unsupported_media_type", "application/xml")).ct(Some("application/xml")),
        case("JSON sent as a form, as `curl -d` does", r#"[{"id":"f1","user":"u","type":"page_view"}]"#, Error(415, "unsupported_media_type", "-H 'Content-Type: application/json'")).ct(Some("application/x-www-form-urlencoded")),
        case("multipart form", "--x\r\n\r\n--x--", Error(415, "unsupported_media_type", "multipart")).ct(Some("multipart/form-data; boundary=x")),
        case("form urlencoded", "id=a&type=x", Error(415, "unsupported_media_type", "x-www-form-urlencoded")).ct(Some("application/x-www-form-urlencoded")),
        case("a content type that is not one", with("id", Some(json!("ct"))), Error(415, "unsupported_media_type", "content-type")).ct(Some("json")),
        case("NDJSON with a broken line", "{\"id\":\"a\"\n", Rejected("", "json")).ct(Some("application/x-ndjson")),
        case("NDJSON with an array line", "[{\"id\":\"a\",\"type\":\"x\",\"user\":\"u\"}]\n", Rejected("", "object")).ct(Some("application/x-ndjson")),
        case("NDJSON of blank lines", "\n\n  \n", Error(400, "malformed", "empty")).ct(Some("application/x-ndjson")),
        case("NDJSON with invalid UTF-8", b"{\"id\":\"\xc3\x28\",\"type\":\"x\",\"user\":\"u\"}\n".to_vec(), Rejected("", "line 1 is not valid json")).ct(Some("application/x-ndjson")),
        // CloudEvents.
        case("CloudEvent without specversion", r#"{"id":"c1","type":"x","source":"/s","subject":"u"}"#, Rejected("specversion", "specversion")).ct(Some("application/cloudevents+json")),
        case("CloudEvent of version 0.3", r#"{"specversion":"0.3","id":"c1","type":"x","source":"/s","subject":"u"}"#, Rejected("specversion", "1.0")).ct(Some("application/cloudevents+json")),
        case("CloudEvent without id", r#"{"specversion":"1.0","type":"x","source":"/s","subject":"u"}"#, Rejected("id", "is required")).ct(Some("application/cloudevents+json")),
        case("CloudEvent without type", r#"{"specversion":"1.0","id":"c1","source":"/s","subject":"u"}"#, Rejected("type", "is required")).ct(Some("application/cloudevents+json")),
        case("CloudEvent with XML data", r#"{"specversion":"1.0","id":"c1","type":"x","source":"/s","subject":"u","datacontenttype":"text/xml","data":{}}"#, Rejected("datacontenttype", "must be json")).ct(Some("application/cloudevents+json")),
        case("CloudEvent without source", r#"{"specversion":"1.0","id":"c1","type":"x","subject":"u"}"#, Rejected("source", "source")).ct(Some("application/cloudevents+json")),
        case("CloudEvent without subject", r#"{"specversion":"1.0","id":"c1","type":"x","source":"/s"}"#, Rejected("subject", "subject")).ct(Some("application/cloudevents+json")),
        case("CloudEvent with data not an object", r#"{"specversion":"1.0","id":"c1","type":"x","source":"/s","subject":"u","data":"text"}"#, Rejected("data", "object")).ct(Some("application/cloudevents+json")),
        case("CloudEvent batch not an array", r#"{"specversion":"1.0","id":"c1","type":"x","source":"/s","subject":"u"}"#, Error(400, "malformed", "array")).ct(Some("application/cloudevents-batch+json")),
        case("CloudEvent batch with an event missing its id", r#"[{"specversion":"1.0","type":"x","source":"/s","subject":"u"}]"#, Rejected("id", "is required")).ct(Some("application/cloudevents-batch+json")),
        case("binary CloudEvent without ce-specversion", r#"{"a":1}"#, Rejected("ce-specversion", "header is required")).header("ce-id", "b1").header("ce-type", "x").header("ce-source", "/s").header("ce-subject", "u"),
        case("binary CloudEvent without ce-subject", r#"{"a":1}"#, Rejected("ce-subject", "`subject` is required")).header("ce-specversion", "1.0").header("ce-id", "b1").header("ce-type", "x").header("ce-source", "/s"),
        case("binary CloudEvent without ce-id", r#"{"a":1}"#, Rejected("ce-id", "is required")).header("ce-specversion", "1.0").header("ce-type", "x").header("ce-source", "/s").header("ce-subject", "u"),
        case("binary CloudEvent with a body that is not an object", "[1,2]", Rejected("data", "must be an object")).header("ce-specversion", "1.0").header("ce-id", "b1").header("ce-type", "x").header("ce-source", "/s").header("ce-subject", "u"),
        case("binary CloudEvent with a bad type", r#"{"a":1}"#, Rejected("ce-type", "[a-z0-9_.:-]")).header("ce-specversion", "1.0").header("ce-id", "b1").header("ce-type", "Bad Type").header("ce-source", "/s").header("ce-subject", "u"),
        case("binary CloudEvent with a non-UTF-8 subject", r#"{"a":1}"#, Rejected("ce-subject", "not valid utf-8")).header("ce-specversion", "1.0").header("ce-id", "b1").header("ce-type", "x").header("ce-source", "/s").header("ce-subject", b"\xff\xfe".to_vec()),
        // Keys and roles.
        case("no API key", with("id", Some(json!("k1"))), Error(401, "unauthorized", "key")).key(None),
        case("a wrong API key", with("id", Some(json!("k2"))), Error(401, "unauthorized", "key")).key(Some("ingest-secret-0123456789-wrong")),
        case("an empty bearer token", with("id", Some(json!("k3"))), Error(401, "unauthorized", "key")).key(None).header("authorization", "Bearer "),
        case("basic authentication", with("id", Some(json!("k4"))), Error(401, "unauthorized", "key")).key(None).header("authorization", "Basic c2hvcDpzZWNyZXQ="),
        case("a key with non-ASCII bytes", with("id", Some(json!("k5"))), Error(401, "unauthorized", "key")).key(None).header("authorization", b"Bearer \xe9\xe9".to_vec()),
        case("the key in the query string", with("id", Some(json!("k6"))), Error(401, "unauthorized", "key")).key(None).at("POST", format!("/v1/events?key={INGEST}")),
        case("a read key posting events", with("id", Some(json!("k7"))), Error(403, "forbidden", "lacks the `ingest` role")).key(Some(READ)),
        case("an ingest key reading dead letters", "", Error(403, "forbidden", "lacks the `admin` role")).at("GET", "/v1/dlq"),
        case("an ingest key putting a hunts file", "version: 1", Error(403, "forbidden", "lacks the `admin` role")).at("PUT", "/v1/config"),
        case("an ingest key reading a customer", "", Error(403, "forbidden", "lacks the `read` role")).at("GET", "/v1/users/mallory"),
        // Other endpoints.
        case("an unknown customer", "", Error(404, "unknown_user", "nobody")).key(Some(READ)).at("GET", "/v1/users/nobody"),
        case("a customer id of 129 bytes", "", Error(400, "bad_user", "1-128 bytes, got 129")).key(Some(READ)).at("GET", format!("/v1/users/{}", "u".repeat(129))),
        case("a customer path that is not UTF-8", "", Error(400, "bad_request", "utf-8")).key(Some(READ)).at("GET", "/v1/users/%FF%FE"),
        case("a customer path with a control character", "", Error(400, "bad_user", "control")).key(Some(READ)).at("GET", "/v1/users/a%0Ab"),
        case("an unknown hunt", "", Error(404, "unknown_hunt", "no-such-hunt")).key(Some(READ)).at("GET", "/v1/hunts/no-such-hunt/stats"),
        case("an unknown path", "", Error(404, "not_found", "/v1/nothing")).key(Some(READ)).at("GET", "/v1/nothing"),
        case("a wrong method", "", Error(405, "method_not_allowed", "GET is not allowed on /v1/events")).key(Some(READ)).at("GET", "/v1/events"),
        case("a hunts file that is not YAML", ": : :\n\t-", Error(422, "invalid_hunts_file", "")).key(Some("admin-secret-0123456789")).at("PUT", "/v1/config").ct(Some("application/yaml")),
        case("an empty hunts file", "", Error(422, "invalid_hunts_file", "")).key(Some("admin-secret-0123456789")).at("PUT", "/v1/config").ct(Some("application/yaml")),
        case("a dead-letter retry that is not JSON", "{retry", Error(400, "bad_selection", "send {")).key(Some("admin-secret-0123456789")).at("POST", "/v1/dlq/retry"),
        case("a dead-letter selection over 64 KiB", format!("{{\"sink\": \"{}\"}}", "s".repeat(70_000)), Error(413, "body_too_large", "a selection of dead letters")).key(Some("admin-secret-0123456789")).at("POST", "/v1/dlq/drop"),
        case("a dead-letter filter with a bad date", "", Error(400, "bad_time", "`since`: `yesterday` is not an RFC 3339 time")).key(Some("admin-secret-0123456789")).at("GET", "/v1/dlq?since=yesterday"),
        case("a dead-letter list with a negative limit", "", Error(400, "bad_limit", "`limit` must be a whole number from 1 to 10000, got \"-1\"")).key(Some("admin-secret-0123456789")).at("GET", "/v1/dlq?limit=-1"),
        case("a dead-letter list with a zero limit", "", Error(400, "bad_limit", "got \"0\"")).key(Some("admin-secret-0123456789")).at("GET", "/v1/dlq?limit=0"),
        case("a winners list with a limit that is not a number", "", Error(400, "bad_limit", "from 1 to 10000, got \"ten\"")).key(Some(READ)).at("GET", "/v1/hunts/eggs/winners?limit=ten"),
        case("a dead-letter list with an unknown filter", "", Error(400, "bad_query", "the query string does not fit: colour: unknown field `colour`, expected one of")).key(Some("admin-secret-0123456789")).at("GET", "/v1/dlq?colour=red"),
    ];
    // A binary CloudEvent whose subject is percent-encoded, as the HTTP binding says.
    c.push(
        case(
            "a percent-encoded binary subject",
            r#"{"a":1}"#,
            Expect::Accepted,
        )
        .header("ce-specversion", "1.0")
        .header("ce-id", "b-pct")
        .header("ce-type", "x")
        .header("ce-source", "/s")
        .header("ce-subject", "%E9%A1%A7%E5%AE%A2"),
    );
    // Hostile but valid customer ids: stored as sent, and harmless.
    for (name, user) in [
        ("a path-traversal user", "../../etc/passwd"),
        ("a user with slashes and a percent", "shop/42%2F..%00"),
        ("a user of exactly 128 bytes", &*"m".repeat(128)),
        ("a user in several scripts and emoji", "顧客-клиент-🎁"),
        ("a user that looks like SQL", "'; DROP TABLE users; --"),
        ("a user that looks like HTML", "<script>alert(1)</script>"),
        ("a user of right-to-left text", "\u{202e}evil"),
    ] {
        c.push(case(
            name,
            with("user", Some(json!(user))),
            Expect::Accepted,
        ));
    }
    c
}

async fn send(s: &Server, c: &Case) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
    let mut b = s
        .client
        .request(method, format!("{}{}", s.url, c.path))
        .body(c.body.clone());
    if let Some(ct) = c.content_type {
        b = b.header("content-type", ct);
    }
    if let Some(k) = c.key {
        b = b.bearer_auth(k);
    }
    for (name, value) in &c.headers {
        b = b.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let r = b.send().await.expect("request sent");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

/// What is wrong with an answer, if anything.
fn judge(c: &Case, status: u16, body: &Value) -> Option<String> {
    let has = |text: &Value, needle: &str| {
        text.as_str()
            .is_some_and(|t| t.to_lowercase().contains(&needle.to_lowercase()))
    };
    match &c.expect {
        Expect::Error(st, code, needle) => {
            let e = &body["error"];
            (status != *st || e["code"] != *code || !has(&e["message"], needle))
                .then(|| format!("wanted {st} {code} naming {needle:?}, got {status} {body}"))
        }
        Expect::Rejected(field, needle) => {
            let r = &body["results"][0];
            let field_ok = field.is_empty()
                || r["field"]
                    .as_str()
                    .is_some_and(|f| f == *field || f.starts_with(&format!("{field}.")));
            (status != 400 || r["status"] != "rejected" || !field_ok || !has(&r["reason"], needle))
                .then(|| {
                    format!("wanted 400 rejecting `{field}` naming {needle:?}, got {status} {body}")
                })
        }
        Expect::Accepted => (status != 200 || body["accepted"] != 1)
            .then(|| format!("wanted 200 accepted, got {status} {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_4xx_naming_the_problem_and_harms_nothing() {
    let (_d, dir) = tempdir();
    let mut s = Server::start(
        &dir,
        Options {
            keys: Keys::parse(KEYS, "keys").unwrap(),
            ..Options::default()
        },
    )
    .await;
    s.key = Some(INGEST.into());
    // Accepted before the catalog: three customers' eggs.
    let mut before = Vec::new();
    for user in ["ann", "bob", "cy"] {
        let (st, a) = s.post(json!(three_eggs(user))).await;
        assert_eq!(st, 200, "{a}");
        before.push((user, a));
    }
    let view = |s: &Server, user: &'static str| {
        let url = format!("{}/v1/users/{user}", s.url);
        let client = s.client.clone();
        async move {
            let r = client.get(url).bearer_auth(READ).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let mut views = Vec::new();
    for (user, _) in &before {
        views.push(view(&s, user).await);
    }

    let cases = catalog();
    eprintln!("bad-input catalog: {} cases", cases.len());
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        let (status, body) = send(&s, c).await;
        if let Some(w) = judge(c, status, &body) {
            wrong.push(format!("{}: {w}", c.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // Still up, and nothing accepted before was touched.
    assert_eq!(s.get("/readyz").await.0, 200);
    for ((user, first), v) in before.iter().zip(&views) {
        assert_eq!(&view(&s, user).await, v, "{user}");
        let (st, a) = s.post(json!(three_eggs(user))).await;
        assert_eq!(st, 200);
        assert_eq!(a["duplicates"], 3, "{a}");
        for i in 0..3 {
            assert_eq!(a["results"][i]["outcomes"], first["results"][i]["outcomes"]);
        }
    }
    // The hostile ids were stored as sent, and can be read back.
    let hostile = "../../etc/passwd";
    let r = s
        .client
        .get(format!(
            "{}/v1/users/{}",
            s.url,
            hostile.replace('/', "%2F").replace('.', "%2E")
        ))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["user"], hostile);
    s.stop().await.unwrap();
}
