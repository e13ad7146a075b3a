//! The pure domain of the Treasure Hunt Engine.
//!
//! Owns: events, hunts files (reading, validating, compiling conditions into a
//! [`Catalog`](catalog::Catalog)), the engine state machine, reward rules and outcomes.
//! Must never: do I/O, spawn threads, read a clock or use randomness of its own. Time
//! and reward allocation are inputs, so the same inputs give the same outcomes on any
//! machine, at any speed.
//!
//! What it owns, module by module:
//! - [`spec`]: the hunts file as written, read from the spanned tree of [`yaml`];
//! - [`catalog`]: the file validated and compiled (`compile/`), with its indexes
//!   (`index.rs`) — what the engine runs;
//! - [`cond`]: conditions, compiled once: a native fast path, CEL otherwise;
//! - [`engine`]: the state machine — an event in, a customer's new state and the
//!   outcomes out (`apply.rs`), progress laid out by step id (`progress.rs`);
//! - [`rewards`]: the pools shared by every partition, and one event's allocation;
//! - [`dedupe`]: one partition's idempotency window, in [`chunked`] storage that a
//!   snapshot shares instead of copying;
//! - [`ingest`]: decoding posted events (JSON, NDJSON, CloudEvents) within limits;
//! - [`ids`]: customer, event and hunt-file ids, checked in one place;
//! - [`plan`]: what a new version of the file changes, and for how many customers;
//! - [`testing`]: the file's own test cases; [`simulate`]: a recorded stream in memory;
//! - [`traffic`]: seeded shopper traffic; [`stats`]: percentiles for the benchmarks;
//! - [`diag`]: problems in a file, with places and hints; [`time`]: instants and
//!   durations.

pub mod catalog;
pub mod chunked;
pub mod cond;
pub mod dedupe;
pub mod diag;
pub mod engine;
pub mod ids;
pub mod ingest;
pub mod plan;
pub mod rewards;
pub mod shapes;
pub mod simulate;
pub mod spec;
pub mod stats;
pub mod testing;
pub mod time;
pub mod traffic;
pub mod yaml;
