//! Decoding posted events: every form, every limit, a reason naming the field.

use hunt_core::ingest::{Form, Limits, RequestError, decode, form_of};
use proptest::prelude::*;
use serde_json::json;

fn no_headers(_: &str) -> Option<Vec<u8>> {
    None
}

fn run(
    form: Form,
    body: &str,
) -> Result<Vec<Result<hunt_core::engine::Event, hunt_core::ingest::Rejection>>, RequestError> {
    decode(form, body.as_bytes(), &no_headers, &Limits::default())
}

fn rejection(form: Form, body: &str) -> (String, String) {
    let out = run(form, body).unwrap();
    let r = out[0].clone().unwrap_err();
    (r.field, r.reason)
}

#[test]
fn the_form_follows_the_content_type() {
    assert_eq!(form_of(None, false).unwrap(), Form::Json);
    assert_eq!(
        form_of(Some("application/json; charset=utf-8"), false).unwrap(),
        Form::Json
    );
    assert_eq!(
        form_of(Some("application/json"), true).unwrap(),
        Form::CloudEventBinary
    );
    assert_eq!(
        form_of(Some("application/x-ndjson"), false).unwrap(),
        Form::Ndjson
    );
    assert_eq!(
        form_of(Some("application/cloudevents+json"), false).unwrap(),
        Form::CloudEvent
    );
    assert_eq!(
        form_of(Some("application/cloudevents-batch+json"), false).unwrap(),
        Form::CloudEventsBatch
    );
    let e = form_of(Some("text/plain"), false).unwrap_err();
    assert!(matches!(e, RequestError::UnsupportedMediaType(_)), "{e:?}");
    assert!(e.to_string().contains("text/plain"));
}

#[test]
fn one_event_with_everything() {
    let out = run(
        Form::Json,
        r#"{"id":"e-1","type":"product_view","user":"u-42","time":"2026-11-27T10:00:00Z",
            "data":{"product":"sku-981","price":59.0},"traits":{"country":"US"}}"#,
    )
    .unwrap();
    let e = out[0].as_ref().unwrap();
    assert_eq!(
        (e.id.as_str(), e.kind.as_str(), e.user.as_str()),
        ("e-1", "product_view", "u-42")
    );
    assert_eq!(e.time.unwrap().to_string(), "2026-11-27T10:00:00Z");
    assert_eq!(e.data["price"], json!(59.0));
    assert_eq!(e.traits["country"], json!("US"));
}

#[test]
fn a_batch_keeps_its_valid_events_and_names_each_fault() {
    let out = run(
        Form::Json,
        r#"[{"id":"a","type":"view","user":"u"},
            {"id":"b","type":"View Page","user":"u"},
            {"id":"c","type":"view"},
            {"id":"d","type":"view","user":"u","time":"yesterday"},
            {"id":"e","type":"view","user":"u","usr":"x"},
            {"id":"f","type":"view","user":"u","data":[1]},
            {"id":"g","type":"view","user":"u"}]"#,
    )
    .unwrap();
    assert_eq!(out.len(), 7);
    assert!(out[0].is_ok() && out[6].is_ok());
    let faults: Vec<(usize, String, String)> = out
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|r| (r.index, r.field.clone(), r.id.clone().unwrap()))
        .collect();
    assert_eq!(
        faults,
        vec![
            (1, "type".into(), "b".into()),
            (2, "user".into(), "c".into()),
            (3, "time".into(), "d".into()),
            (4, "usr".into(), "e".into()),
            (5, "data".into(), "f".into()),
        ]
    );
    let usr = out[4].as_ref().unwrap_err();
    assert!(
        usr.reason.contains("did you mean `user`?"),
        "{}",
        usr.reason
    );
    assert!(
        out[2]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("`user` is required")
    );
}

#[test]
fn ndjson_rejects_a_bad_line_and_keeps_the_rest() {
    let out = run(Form::Ndjson, "{\"id\":\"1\",\"type\":\"v\",\"user\":\"u\"}\n{oops\n\n{\"id\":\"2\",\"type\":\"v\",\"user\":\"u\"}\n").unwrap();
    assert_eq!(out.len(), 3);
    assert!(out[0].is_ok() && out[2].is_ok());
    let bad = out[1].as_ref().unwrap_err();
    assert!(
        bad.reason.starts_with("line 2 is not valid JSON"),
        "{}",
        bad.reason
    );
}

#[test]
fn cloudevents_structured_batch_and_binary() {
    let ce = r#"{"specversion":"1.0","id":"ce-1","source":"/shop","type":"com.shop.product_view",
                 "subject":"u-7","time":"2026-11-27T10:00:00Z","data":{"product":"sku-1","traits":{"tier":"gold"}}}"#;
    let e = run(Form::CloudEvent, ce).unwrap().remove(0).unwrap();
    assert_eq!(
        (e.user.as_str(), e.kind.as_str()),
        ("u-7", "com.shop.product_view")
    );
    assert_eq!(
        e.traits["tier"],
        json!("gold"),
        "traits travel in data.traits"
    );
    assert!(!e.data.contains_key("traits"));

    let batch = format!(
        "[{ce}, {{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"v\",\"subject\":\"u\"}}]"
    );
    let out = run(Form::CloudEventsBatch, &batch).unwrap();
    assert!(out[0].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err().field, "source");

    let headers = |name: &str| -> Option<Vec<u8>> {
        match name {
            "ce-specversion" => Some(b"1.0".to_vec()),
            "ce-id" => Some(b"b-1".to_vec()),
            "ce-source" => Some(b"/shop".to_vec()),
            "ce-type" => Some(b"cart_add".to_vec()),
            "ce-subject" => Some(b"u-9".to_vec()),
            _ => None,
        }
    };
    let out = decode(
        Form::CloudEventBinary,
        br#"{"price": 120}"#,
        &headers,
        &Limits::default(),
    )
    .unwrap();
    let e = out[0].as_ref().unwrap();
    assert_eq!(
        (e.id.as_str(), e.user.as_str(), e.data["price"].clone()),
        ("b-1", "u-9", json!(120))
    );
    let no_subject = |name: &str| {
        if name == "ce-subject" {
            None
        } else {
            headers(name)
        }
    };
    let out = decode(
        Form::CloudEventBinary,
        b"{}",
        &no_subject,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out[0].as_ref().unwrap_err().field, "ce-subject");
    // Header values are percent-decoded (the HTTP binding), then must be UTF-8.
    let subject = |value: &'static [u8]| {
        move |name: &str| {
            if name == "ce-subject" {
                Some(value.to_vec())
            } else {
                headers(name)
            }
        }
    };
    let decoded = |value: &'static [u8]| {
        decode(
            Form::CloudEventBinary,
            b"{}",
            &subject(value),
            &Limits::default(),
        )
        .unwrap()
        .remove(0)
    };
    assert_eq!(decoded(b"%E9%A1%A7%E5%AE%A2").unwrap().user, "顧客");
    assert_eq!(
        decoded(b"50%ZZ%").unwrap().user,
        "50%ZZ%",
        "not an escape: kept"
    );
    let e = decoded(b"\xff\xfe").unwrap_err();
    assert_eq!(e.field, "ce-subject");
    assert!(e.reason.contains("not valid UTF-8"), "{}", e.reason);
    let e = decoded(b"%FF").unwrap_err();
    assert!(e.reason.contains("not valid UTF-8"), "{}", e.reason);
    let e = decoded(b"a%0Ab").unwrap_err();
    assert!(e.reason.contains("control characters"), "{}", e.reason);
    assert_eq!(
        rejection(
            Form::CloudEvent,
            r#"{"id":"1","source":"/s","type":"v","subject":"u"}"#
        )
        .0,
        "specversion"
    );
}

#[test]
fn request_limits_refuse_the_whole_request() {
    let small = Limits {
        body_bytes_max: 100,
        events_max: 2,
        ..Limits::default()
    };
    let big = "x".repeat(200);
    let e = decode(Form::Json, big.as_bytes(), &no_headers, &small).unwrap_err();
    assert_eq!(
        e,
        RequestError::TooLarge {
            size: 200,
            limit: 100
        }
    );
    let three = r#"[{"id":"1"},{"id":"2"},{"id":"3"}]"#;
    let e = decode(Form::Json, three.as_bytes(), &no_headers, &small).unwrap_err();
    assert_eq!(e, RequestError::TooManyEvents { count: 3, limit: 2 });
    assert!(matches!(
        run(Form::Json, "[1,").unwrap_err(),
        RequestError::Malformed(_)
    ));
    assert_eq!(run(Form::Json, "  \n").unwrap_err(), RequestError::Empty);
}

#[test]
fn event_limits_name_the_field() {
    let limits = Limits {
        data_bytes_max: 200,
        depth_max: 3,
        string_bytes_max: 20,
        ..Limits::default()
    };
    let go = |body: &str| {
        decode(Form::Json, body.as_bytes(), &no_headers, &limits)
            .unwrap()
            .remove(0)
            .unwrap_err()
    };
    let r = go(
        r#"{"id":"1","type":"v","user":"u","data":{"items":[{"name":"a very long product name indeed"}]}}"#,
    );
    assert_eq!(r.field, "data.items[0].name");
    let r = go(r#"{"id":"1","type":"v","user":"u","data":{"a":{"b":{"c":{"d":1}}}}}"#);
    assert_eq!(r.field, "data.a.b.c");
    assert!(r.reason.contains("nested deeper"));
    let many: String = (0..30)
        .map(|i| format!("\"k{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = go(&format!(
        r#"{{"id":"1","type":"v","user":"u","data":{{{many}}}}}"#
    ));
    assert_eq!(r.field, "data");
    assert!(r.reason.contains("over the limit of 200"));
    let r = go(&format!(
        r#"{{"id":"{}","type":"v","user":"u"}}"#,
        "i".repeat(129)
    ));
    assert_eq!(r.field, "id");
    let r = go(r#"{"id":"1","type":"v","user":"u","traits":"gold"}"#);
    assert_eq!(
        (r.field.as_str(), r.reason.as_str()),
        ("traits", "`traits` must be an object, found a string")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any bytes, in any form: events, rejections or a request error — never a panic.
    #[test]
    fn decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300), form in 0usize..5) {
        let form = [Form::Json, Form::Ndjson, Form::CloudEvent, Form::CloudEventsBatch, Form::CloudEventBinary][form];
        let ce = |name: &str| if name.starts_with("ce-") { Some(b"1.0".to_vec()) } else { None };
        let _ = decode(form, &body, &ce, &Limits::default());
    }

    /// Accepted events pass the engine's own validation.
    #[test]
    fn accepted_events_are_valid(id in "[a-z0-9-]{0,5}", user in "[a-z]{0,3}", kind in "[a-zA-Z_ ]{0,6}") {
        let body = json!([{"id": id, "type": kind, "user": user}]).to_string();
        for e in run(Form::Json, &body).unwrap().into_iter().flatten() {
            prop_assert!(e.validate().is_ok());
        }
    }
}
