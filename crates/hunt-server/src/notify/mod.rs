//! Notifications: what the server will send to a hunt's sinks, and the per-destination
//! rules for sending it. This module holds the pure parts — the CloudEvent a delivery
//! carries and its idempotency key, the signature a receiver checks, the circuit
//! breaker and the retry schedule — each taking time and randomness as inputs, so they
//! are tested without a clock or a network. Delivery itself (the outbox in the log, the
//! per-sink workers, the dead-letter queue) builds on them.

pub mod breaker;
pub mod cloudevent;
pub mod deliver;
pub mod outbox;
pub mod retry;
pub mod signature;

/// Installs ring as the TLS provider of this process (reqwest is built without one);
/// call before building an HTTP client. Later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
