//! Webhook signatures, in the scheme Stripe uses: the header
//! `Hunt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
//!
//! A receiver recomputes the HMAC with the sink's shared secret over the timestamp, a
//! dot and the raw body, compares it in constant time, and refuses a timestamp too far
//! from its own clock (a replayed request). Several `v1=` entries may appear while a
//! secret is being rotated; one matching is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "Hunt-Signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header's value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t},v1={hex}")
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature is {0} s away from now, over the tolerance")]
    Stale(i64),
    #[error("no signature matches the body")]
    Mismatch,
}

/// Checks a header's value against `body`, at `now` (unix seconds), accepting
/// timestamps up to `tolerance_secs` away.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Invalid> {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| Invalid::Malformed)?),
            Some(("v1", v)) => tags.push(decode_hex(v).ok_or(Invalid::Malformed)?),
            Some(_) => {}
            None => return Err(Invalid::Malformed),
        }
    }
    let t = t.ok_or(Invalid::Malformed)?;
    if tags.is_empty() {
        return Err(Invalid::Malformed);
    }
    let skew = (now - t).abs();
    if skew > tolerance_secs {
        return Err(Invalid::Stale(skew));
    }
    // `verify_slice` compares in constant time.
    if tags
        .iter()
        .any(|tag| mac(secret, t, body).verify_slice(tag).is_ok())
    {
        Ok(())
    } else {
        Err(Invalid::Mismatch)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let body = br#"{"id":"42-0-crm"}"#;
        let h = sign(b"whsec_test", 1_795_766_400, body);
        assert!(h.starts_with("t=1795766400,v1="), "{h}");
        assert_eq!(
            verify(b"whsec_test", &h, body, 1_795_766_400 + 10, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"whsec_other", &h, body, 1_795_766_400, 300),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify(
                b"whsec_test",
                &h,
                br#"{"id":"42-0-crx"}"#,
                1_795_766_400,
                300
            ),
            Err(Invalid::Mismatch)
        );
        let moved = h.replace("t=1795766400", "t=1795766401");
        assert_eq!(
            verify(b"whsec_test", &moved, body, 1_795_766_400, 300),
            Err(Invalid::Mismatch),
            "the timestamp is signed too"
        );
        assert_eq!(
            verify(b"whsec_test", &h, body, 1_795_766_400 + 301, 300),
            Err(Invalid::Stale(301))
        );
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key "key", "1.x"), computed independently (Python's hmac module).
        assert_eq!(
            sign(b"key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }

    #[test]
    fn rotation_and_malformed_headers() {
        let body = b"{}";
        let new = sign(b"new", 100, body);
        let old_tag = sign(b"old", 100, body);
        let both = format!("{new},v1={}", old_tag.split("v1=").nth(1).unwrap());
        assert_eq!(verify(b"old", &both, body, 100, 5), Ok(()));
        assert_eq!(verify(b"new", &both, body, 100, 5), Ok(()));
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=0g",
            "t=1,v1=abc",
            "garbage",
        ] {
            assert!(verify(b"k", bad, body, 1, 5).is_err(), "{bad:?}");
        }
    }
}
