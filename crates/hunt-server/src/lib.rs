//! The Treasure Hunt Engine as a service: `hunt serve`.
//!
//! Owns: the HTTP API (ingest, queries, live hunts-file versions, health, metrics),
//! authentication and rate limits, the partition workers that own customers' state,
//! the projections queries read, and rebuilding them from the log on start.
//! Must never: answer a post before its records are durable, share a lock between
//! partitions on the ingest path, grant a code twice or more codes than a pool holds,
//! or go on after the log failed (it stops; the next start recovers from the log).
//! The rules of the engine itself live in `hunt-core`; the log in `hunt-store`.
//!
//! What it owns, module by module:
//! - [`server`]: starting and stopping (`start` gives a `Running` that owns every task);
//! - [`http`]: the API — one file per group of endpoints, every error answer in
//!   `error.rs`, the key's role and readiness checked in `extract.rs`; [`auth`]: keys;
//! - [`service`]: the running engine — ingest and queries (`mod.rs`), starting and the
//!   local log (`open.rs`), new hunts-file versions (`config.rs`), snapshots taken a
//!   partition at a time without stopping the others (`snapshot.rs`);
//! - [`tenure`]: how long a node on a cluster may answer for its leased partitions;
//! - [`escrow`]: on a cluster, each partition's blocks of the pools' codes and the
//!   hunts' winner slots, from the escrow every node shares (ADR 0012);
//! - [`cluster_status`]: a cluster's nodes and partitions, for the dashboard;
//! - [`backlog`]: what is admitted and not yet answered, the one count that bounds it;
//! - [`partition`]: a partition's worker, one method per message;
//! - [`state`]: one partition's projections and the admission of one event; its
//!   customers, shared with a snapshot shard by shard and one by one (`users.rs`);
//! - [`route`]: on a cluster whose partitions are spread over nodes, the partitions
//!   this node applies and the router that sends the others' events to their owners;
//! - [`records`]: what is written to the log; [`recover`]: rebuilding from it;
//!   [`snapshot`]: the snapshot payload, each part with its log position;
//! - [`notify`]: notifications — the outbox, deliveries to sinks, the dead letters;
//! - [`alerts`]: rules over the server's figures; [`metrics`]: the ingest path's
//!   counters, written out with the figures read at scrape time (`observe.rs`);
//! - [`history`]: the last 15 minutes of those figures, sampled for the dashboard,
//!   whose pages and assets are `http/ui.rs` and `ui/`.

pub mod alerts;
pub mod auth;
pub mod backlog;
pub mod cluster_status;
pub mod escrow;
pub mod history;
pub mod http;
pub mod metrics;
pub mod notify;
mod observe;
pub mod partition;
pub mod records;
pub mod recover;
pub mod route;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod tenure;
