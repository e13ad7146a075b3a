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

pub mod fs;
pub mod log;
pub mod partition_log;
pub mod record;
pub mod snapshot;

pub use log::{
    CommitObserver, Durability, Log, LogConfig, LogError, OpenReport, Reader, Span, Ticket,
};
pub use partition_log::{PartitionLog, Partitions};
pub use record::{Lsn, Record};
pub use snapshot::{Snapshot, Snapshots};
