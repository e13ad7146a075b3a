//! The pure domain of the Treasure Hunt Engine.
//!
//! Owns: events, hunts files (reading, validating, compiling conditions into a
//! [`Catalog`]), the engine state machine, reward rules and outcomes.
//! Must never: do I/O, spawn threads, read a clock or use randomness of its own. Time
//! and reward allocation are inputs, so the same inputs give the same outcomes on any
//! machine, at any speed.

pub mod catalog;
pub mod cond;
pub mod dedupe;
pub mod diag;
pub mod engine;
pub mod ids;
pub mod ingest;
pub mod plan;
pub mod rewards;
pub mod simulate;
pub mod spec;
pub mod stats;
pub mod testing;
pub mod time;
pub mod traffic;
pub mod yaml;
