//! The durable event log of the Treasure Hunt Engine.
//!
//! Owns: append-only segment files of checksummed records, group commit (many appends,
//! one write, one `fdatasync`), recovery of a torn tail on open, reading by position
//! (LSN), and atomic snapshots of projection state.
//! Must never: acknowledge a record before it is on disk (with `Durability::Fsync`), go
//! on after a failed write or sync (it fails stop), or return a record whose checksum
//! does not match. What is durable when is written down in `docs/guarantees.md`.
//!
//! All file access goes through [`fs::Fs`], so crash tests can run the same code on a
//! simulated disk that loses what was not synced.
//!
//! What it owns, module by module:
//! - [`partition_log`]: the seam partitions use ([`PartitionLog`]), with its contract;
//! - [`log`]: the local log — `queue.rs` (producers to the writer, bounded),
//!   `writer.rs` (group commit), `ticket.rs` (when and where a submission is durable),
//!   `recovery.rs` (opening: a torn tail cut, damage reported), `reader.rs`;
//! - [`record`]: one record's framing and checksum;
//! - [`snapshot`]: snapshots saved atomically and loaded only when valid;
//! - [`fs`]: the file operations, real or simulated for crash tests.

pub mod fs;
pub mod log;
pub mod partition_log;
pub mod record;
pub mod snapshot;

pub use log::{
    CommitObserver, Durability, Log, LogConfig, LogError, OpenReport, Reader, Span, Ticket, Tickets,
};
pub use partition_log::{PartitionLog, Partitions};
pub use record::{Lsn, Record};
pub use snapshot::{PartSnapshots, Snapshot, SnapshotStore, Snapshots};
