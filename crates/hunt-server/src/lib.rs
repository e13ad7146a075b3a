//! The Treasure Hunt Engine as a service: `hunt serve`.
//!
//! Owns: the HTTP API (ingest, queries, live hunts-file versions, health, metrics),
//! authentication and rate limits, the partition workers that own customers' state,
//! the projections queries read, and rebuilding them from the log on start.
//! Must never: answer a post before its records are durable, share a lock between
//! partitions on the ingest path, grant a code twice or more codes than a pool holds,
//! or go on after the log failed (it stops; the next start recovers from the log).
//! The rules of the engine itself live in `hunt-core`; the log in `hunt-store`.

pub mod alerts;
pub mod auth;
pub mod backlog;
pub mod http;
pub mod metrics;
pub mod notify;
mod observe;
pub mod partition;
pub mod records;
pub mod recover;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state;
