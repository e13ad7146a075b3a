//! Any bytes posted in any form: events, rejections or a request error, never a panic;
//! every accepted event passes the engine's own validation.
#![no_main]
use hunt_core::ingest::{Form, Limits, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let form = [
        Form::Json,
        Form::Ndjson,
        Form::CloudEvent,
        Form::CloudEventsBatch,
        Form::CloudEventBinary,
    ][*selector as usize % 5];
    let headers = |name: &str| match name {
        "ce-specversion" => Some(b"1.0".to_vec()),
        "ce-source" => Some(b"/fuzz".to_vec()),
        "ce-id" => Some(b"f-1".to_vec()),
        "ce-type" => Some(b"fuzz".to_vec()),
        "ce-subject" => Some(b"u".to_vec()),
        _ => None,
    };
    if let Ok(events) = decode(form, body, &headers, &Limits::default()) {
        for e in events.into_iter().flatten() {
            assert!(e.validate().is_ok(), "accepted an invalid event: {e:?}");
        }
    }
});
