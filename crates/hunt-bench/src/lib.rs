//! No code: this crate holds the ingest benchmark (`benches/ingest.rs`), which runs the
//! server, the store and the engine together, and the clients of its comparison with
//! JetStream and PostgreSQL, so that building the other crates' tests never builds them.
//!
//! `cargo bench -p hunt-bench --bench ingest`; the bench's own header lists its modes.
