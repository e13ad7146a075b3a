//! Any bytes as the server's log records, delivery records, snapshot payload, API keys
//! file and alerts file: refused with a reason or read, never a panic; what is read writes back to
//! the same value.
#![no_main]
use hunt_core::dedupe::WINDOW_DEFAULT;
use hunt_server::auth::Keys;
use hunt_server::notify::outbox;
use hunt_server::records::{decode_config, decode_event, encode_config, encode_event};
use hunt_server::snapshot;
use hunt_server::state::DedupeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_event(data) {
        let again = decode_event(&encode_event(&r.event, r.received, &r.outcomes)).unwrap();
        assert_eq!(again, r);
    }
    if let Ok(c) = decode_config(data) {
        assert_eq!(decode_config(&encode_config(&c)).unwrap(), c);
    }
    if let Ok(d) = outbox::decode(data) {
        assert_eq!(outbox::decode(&outbox::encode(&d)).unwrap(), d);
    }
    let dedupe = DedupeConfig {
        window: WINDOW_DEFAULT,
        entries_max: 1000,
    };
    let _ = snapshot::decode(data, 1 + data.len() % 4, dedupe);
    let text = String::from_utf8_lossy(data);
    let _ = Keys::parse(&text, "keys");
    let _ = hunt_server::alerts::AlertsConfig::parse(&text);
});
