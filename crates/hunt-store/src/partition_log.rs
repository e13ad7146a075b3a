//! The seam between the engine's partitions and the log that keeps their records.
//!
//! A partition worker, recovery and the outbox use the log only through
//! [`PartitionLog`]. The local log ([`crate::Log`]) implements it; a replicated log (a
//! JetStream stream with a subject per partition, see the cluster design) is meant to be
//! written against this contract alone.
//!
//! # The contract
//!
//! **Positions.** Every record has a position ([`Lsn`]). Positions are one order over
//! the whole log: a partition's records have increasing positions, and the records of
//! one submission have consecutive ones ([`Span`](crate::Span)). They need not be consecutive across
//! submissions (other partitions' records may lie between).
//!
//! **Submit.** [`PartitionLog::submit`] takes one round of one partition: its records in
//! order. It waits for room (the log bounds what it holds in memory), never for
//! durability, and gives a [`Ticket`]. Submissions of one partition are kept in the
//! order they were submitted. The ticket resolves, once, to:
//! - `Ok(span)`: every record of the round is *durable*: it survives a crash of this
//!   process and of this machine's power (the local log: written and `fdatasync`ed; a
//!   replicated log: acknowledged by a quorum that syncs before it acknowledges). Every
//!   submission of the same partition made before it is durable too. Only then may an
//!   answer that depends on the round be sent.
//! - `Err(e)`: the round is *refused*. None of it may be answered as accepted. It may or
//!   may not be on the log: a reader may later see it (an append can fail after the
//!   write reached the disk), so the engine treats it as unknown, not as absent, and
//!   recovery decides from what is read back.
//!
//! **Stops.** A refused round stops the log for its partitions: every later submit is
//! refused with the same error, and [`PartitionLog::stopped`] reports why. The caller
//! stops answering for them (the local server stops; the next start recovers from what
//! the log holds). A replicated log also refuses a round when another owner has appended
//! to the partition since this one last did ([`LogError::Fenced`]); the partition must
//! be dropped, not retried. One that could not confirm a round in time refuses it with
//! [`LogError::Unconfirmed`]. The cluster's log (crate `hunt-cluster`, ADR 0011) is one.
//!
//! **Read.** [`PartitionLog::read`] yields the durable records of a partition from a
//! position on, in position order, each checked (a record that fails its checksum is an
//! error, never returned). A log that keeps several partitions in one stream (the local
//! log keeps all of them in one) may yield other partitions' records too: callers keep
//! what is theirs. The end is the durable position at the time of the call.

use std::future::Future;
use std::pin::Pin;

use crate::Log;
use crate::log::{LogError, Reader, Ticket};
use crate::record::{Lsn, Record};

/// A submission in flight: waits for room in the log, then gives the ticket.
pub type Submitting<'a> = Pin<Box<dyn Future<Output = Result<Ticket, LogError>> + Send + 'a>>;

/// A future of the log's.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, LogError>> + Send + 'a>>;

/// Records read back, in position order.
pub type Records = Box<dyn Iterator<Item = Result<Record, LogError>> + Send>;

/// The "partition" of records that belong to the node rather than to one partition:
/// the hunts file's versions (and, before ADR 0015, the outbox's delivery changes). The
/// local log keeps them in its one stream with the rest.
pub const NODE: u32 = u32::MAX;

/// Which partitions a read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitions {
    All,
    One(u32),
    /// One partition's records and the node's ([`NODE`]: the hunts file's versions),
    /// in one order: what a node needs to take that partition over. A log that keeps
    /// one stream (the local log) gives every record; the reader picks.
    WithVersions(u32),
}

/// Where partitions submit their rounds, learn when they are durable, and read them back.
/// The contract is in this module's documentation.
pub trait PartitionLog: Send + Sync + 'static {
    /// Queues one round of `partition`'s records, in order; the ticket says when they
    /// are durable, and where.
    fn submit(&self, partition: u32, records: Vec<(u8, Vec<u8>)>) -> Submitting<'_>;

    /// The durable records of `partitions` at or after `from`.
    fn read(&self, partitions: Partitions, from: Lsn) -> Result<Records, LogError>;

    /// The last position known durable (for a partition's snapshot: every record up to
    /// it is in the state it covers).
    fn durable(&self) -> Lsn;

    /// Why the log stopped, if it did: every submit is refused with it.
    fn stopped(&self) -> Option<LogError>;

    /// Whether every position from 1 on holds a record, so that a reader can tell that
    /// older records were removed when the first one read is past where it asked. The
    /// local log's positions are; a replicated log's need not be.
    fn dense(&self) -> bool {
        true
    }

    /// For a partition several nodes append to (the node records of a cluster whose
    /// partitions are spread over nodes, ADR 0015): this node's next round of
    /// `partition` goes right after the end the log has now, and is refused as fenced
    /// if another node appends first. `false`: this log has one writer, and nothing
    /// was done.
    fn append_after_end(&self, _partition: u32) -> Pending<'_, bool> {
        Box::pin(async { Ok(false) })
    }
}

impl PartitionLog for Log {
    fn submit(&self, _partition: u32, records: Vec<(u8, Vec<u8>)>) -> Submitting<'_> {
        // One stream for every partition: the log's one writer keeps each producer's
        // submissions in order.
        Box::pin(self.submit_async(records))
    }

    fn read(&self, _partitions: Partitions, from: Lsn) -> Result<Records, LogError> {
        let r: Reader = self.read_from(from)?;
        Ok(Box::new(r))
    }

    fn durable(&self) -> Lsn {
        Log::durable_lsn(self)
    }

    fn stopped(&self) -> Option<LogError> {
        Log::stopped(self).map(LogError::Stopped)
    }
}
