//! The partition log on a JetStream stream: one subject per partition, fenced appends.
//!
//! **Messages.** A partition's rounds go to its subject as messages, one or several
//! rounds per message, each record framed and checksummed as in the local log
//! (`hunt_store::record`, its position field holding the record's index in the
//! message).
//!
//! **Positions.** A record's position is `stream sequence << RECORD_BITS | index`: one
//! order over the whole stream, consecutive within a round, as the seam's contract asks.
//!
//! **Fencing.** Each partition has one writer task. It sends one message at a time,
//! with `Nats-Expected-Last-Subject-Sequence` set to the last sequence it knows on the
//! subject: a message another owner appended meanwhile makes the stream refuse the
//! append, and the partition is dropped here ([`LogError::Fenced`]). Rounds submitted
//! while a message is in flight go together in the next one (a group commit per
//! partition). A message that is not confirmed is sent again with the same
//! `Nats-Msg-Id`, so the stream stores it once; past the ack timeout the partition stops
//! ([`LogError::Unconfirmed`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use hunt_store::partition_log::{Records, Submitting};
use hunt_store::record::{self, Lsn, Record};
use hunt_store::{LogError, PartitionLog, Partitions, Span, Ticket, Tickets};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, ClusterError};

/// Bits of a position that number a record within its message.
pub const RECORD_BITS: u32 = 20;
/// The most records in one message.
const RECORDS_PER_MESSAGE: usize = (1 << RECORD_BITS) - 1;
/// Rounds waiting for a partition's writer; a submit waits for room beyond it.
const QUEUE_ROUNDS: usize = 1024;
/// Bytes of headers a message's budget leaves room for.
const HEADER_ROOM: usize = 256;

fn position(sequence: u64, index: usize) -> Lsn {
    (sequence << RECORD_BITS) | index as Lsn
}

/// The stream sequence a position is in.
pub fn sequence_of(lsn: Lsn) -> u64 {
    lsn >> RECORD_BITS
}

struct Round {
    records: Vec<(u8, Vec<u8>)>,
    ticket: Ticket,
}

struct Part {
    tx: mpsc::Sender<Round>,
    stopped: Arc<Mutex<Option<LogError>>>,
    /// The writer's last sequence on the subject (its `last`).
    known: Arc<AtomicU64>,
}

struct Inner {
    cluster: Cluster,
    tickets: Tickets,
    parts: Mutex<HashMap<u32, Part>>,
    durable: AtomicU64,
    /// Tells this log's messages apart from any other writer's, for the stream's
    /// de-duplication of a message sent again.
    token: String,
    /// Messages sent by this log's writers, for their ids: counted across writers, so
    /// that a partition owned again (taken back, or a subject shared by several nodes)
    /// never repeats an id the stream would take for a message sent again and drop.
    sent: AtomicU64,
    rt: Handle,
}

/// The partitions this node owns, each appended to its subject with fencing.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("stream", &self.inner.cluster.stream)
            .finish()
    }
}

impl JetStreamLog {
    /// A log owning no partition yet; `rt` runs its writers and readers.
    pub fn new(cluster: Cluster, rt: Handle) -> JetStreamLog {
        let token = format!(
            "{:x}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        JetStreamLog {
            inner: Arc::new(Inner {
                cluster,
                tickets: Tickets::default(),
                parts: Mutex::new(HashMap::new()),
                durable: AtomicU64::new(0),
                token,
                sent: AtomicU64::new(0),
                rt,
            }),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The last sequence on `partition`'s subject, as the stream's leader has it (0: none).
    pub async fn last_sequence(&self, partition: u32) -> Result<u64, ClusterError> {
        let c = &self.inner.cluster;
        let stream =
            c.js.get_stream(&c.stream)
                .await
                .map_err(|e| ClusterError::Nats(e.to_string()))?;
        last_on_subject(&stream, &c.subject(partition))
            .await
            .map_err(ClusterError::Nats)
    }

    /// Starts appending to `partition`, after `last`: the last sequence on its subject
    /// that this node has read. Any message appended after it by someone else fences
    /// this node's first append.
    pub fn own(&self, partition: u32, last: u64) {
        self.start(partition, last, None);
    }

    /// Starts `partition`'s writer after `last`; its first message carries `marker` in
    /// a `Hunt-Takeover` header, if given.
    fn start(&self, partition: u32, last: u64, marker: Option<String>) {
        let (tx, rx) = mpsc::channel(QUEUE_ROUNDS);
        let stopped = Arc::new(Mutex::new(None));
        let known = Arc::new(AtomicU64::new(last));
        let writer = Writer {
            inner: self.inner.clone(),
            partition,
            subject: self.inner.cluster.subject(partition),
            last,
            marker,
            stopped: stopped.clone(),
            known: known.clone(),
        };
        self.inner.rt.spawn(writer.run(rx));
        self.inner
            .parts
            .lock()
            .insert(partition, Part { tx, stopped, known });
    }

    /// Takes `partition` over: appends a takeover marker (a message with no records,
    /// saying `who` in its `Hunt-Takeover` header) after `last`, the last sequence this
    /// node has read on its subject, then appends after the marker; the marker's
    /// sequence. `Err(Fenced)`: someone appended after `last`; read again before trying
    /// again. A state rebuilt after the takeover holds everything up to the marker, so
    /// the marker counts as durable.
    pub async fn take_over(&self, partition: u32, last: u64, who: &str) -> Result<u64, LogError> {
        self.start(partition, last, Some(who.to_string()));
        let span = self.submit(partition, Vec::new()).await?.await?;
        Ok(sequence_of(span.first))
    }

    /// Stops appending to `partition`: what is queued is refused, and so is every later
    /// submit, until it is owned again.
    pub fn release(&self, partition: u32) {
        if let Some(p) = self.inner.parts.lock().remove(&partition) {
            // Rounds still queued are refused by the writer, not appended.
            p.stopped.lock().get_or_insert_with(|| not_owned(partition));
        }
    }

    /// Each partition this log appends to, with the last sequence on its subject that
    /// its writer knows of (what it read at the takeover, or its last stored message).
    pub fn positions(&self) -> std::collections::BTreeMap<u32, u64> {
        self.inner
            .parts
            .lock()
            .iter()
            .filter(|(_, p)| p.stopped.lock().is_none())
            .map(|(k, p)| (*k, p.known.load(Ordering::Acquire)))
            .collect()
    }

    /// Whether this log appends to `partition` and has not stopped for it.
    pub fn owns(&self, partition: u32) -> bool {
        self.inner
            .parts
            .lock()
            .get(&partition)
            .is_some_and(|p| p.stopped.lock().is_none())
    }

    /// Reads `partitions`' records at or after `from` up to the stream's end at the
    /// call, as a task on the log's runtime feeding `tx`.
    async fn read_task(
        inner: Arc<Inner>,
        partitions: Partitions,
        from: Lsn,
        tx: mpsc::Sender<Result<Record, LogError>>,
    ) {
        if let Err(e) = Self::read_into(&inner, partitions, from, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn read_into(
        inner: &Inner,
        partitions: Partitions,
        from: Lsn,
        tx: &mpsc::Sender<Result<Record, LogError>>,
    ) -> Result<(), LogError> {
        let c = &inner.cluster;
        // A server lost or a leader being elected makes requests time out for a few
        // seconds: each step is tried again until nothing has moved for this long.
        let patience = c.ack_timeout.max(Duration::from_secs(10));
        let (filters, end) = patiently(patience, &c.stream, || async {
            let mut stream =
                c.js.get_stream(&c.stream)
                    .await
                    .map_err(|e| e.to_string())?;
            match partitions {
                Partitions::All => {
                    let info = stream.info().await.map_err(|e| e.to_string())?;
                    Ok((vec![c.all_subjects()], info.state.last_sequence))
                }
                Partitions::One(p) => {
                    let subject = c.subject(p);
                    let end = last_on_subject(&stream, &subject).await?;
                    Ok((vec![subject], end))
                }
                Partitions::WithVersions(p) => {
                    let (own, node) = (c.subject(p), c.subject(hunt_store::partition_log::NODE));
                    let end = last_on_subject(&stream, &own)
                        .await?
                        .max(last_on_subject(&stream, &node).await?);
                    Ok((vec![own, node], end))
                }
            }
        })
        .await?;
        let mut next = sequence_of(from).max(1);
        let mut progress = Instant::now();
        while next <= end {
            let consumer = patiently(patience, &c.stream, || async {
                let stream =
                    c.js.get_stream(&c.stream)
                        .await
                        .map_err(|e| e.to_string())?;
                let consumer = stream
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: match &filters[..] {
                            [one] => one.clone(),
                            _ => String::new(),
                        },
                        filter_subjects: match &filters[..] {
                            [_] => Vec::new(),
                            more => more.to_vec(),
                        },
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: next,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.messages().await.map_err(|e| e.to_string())
            })
            .await;
            let mut messages = consumer?;
            while let Some(m) = messages.next().await {
                let Ok(m) = m else {
                    // The consumer broke (its server went away): start a new one
                    // after the last message read, unless nothing moves for too long.
                    break;
                };
                let Ok(info) = m.info() else { break };
                let seq = info.stream_sequence;
                if seq < next {
                    continue;
                }
                if !send_records(c, seq, &m.payload, from, tx).await? {
                    return Ok(());
                }
                next = seq + 1;
                progress = Instant::now();
                if seq >= end {
                    return Ok(());
                }
            }
            if progress.elapsed() > patience {
                return Err(LogError::Io {
                    op: "read",
                    path: c.stream.clone(),
                    message: format!("no message after sequence {} for {patience:?}", next - 1),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

/// The last sequence on `subject`, from the stream's leader (a direct get may be
/// answered by a lagging follower); 0 when the subject has none.
async fn last_on_subject(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<u64, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// Tries `f` until it succeeds or `patience` has passed.
async fn patiently<T, F, Fut>(patience: Duration, stream: &str, mut f: F) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + patience;
    loop {
        // One try waits at most this long: a request that reached a server being
        // lost is not answered, while a new one may be.
        let attempt = tokio::time::timeout(Duration::from_secs(2), f());
        match attempt
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()))
        {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= until => {
                return Err(LogError::Io {
                    op: "read",
                    path: stream.to_string(),
                    message: e,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Sends the records of message `seq` at or after `from` to `tx`, each checked.
/// `false`: the reader is gone.
async fn send_records(
    c: &Cluster,
    seq: u64,
    payload: &[u8],
    from: Lsn,
    tx: &mpsc::Sender<Result<Record, LogError>>,
) -> Result<bool, LogError> {
    let mut bytes = payload;
    let mut index = 0usize;
    while !bytes.is_empty() {
        let offset = (payload.len() - bytes.len()) as u64;
        let d = record::decode(bytes).map_err(|e| LogError::Corrupt {
            segment: format!("{} sequence {seq}", c.stream),
            offset,
            reason: format!("{e:?}"),
        })?;
        if d.record.lsn != index as Lsn {
            return Err(LogError::Corrupt {
                segment: format!("{} sequence {seq}", c.stream),
                offset,
                reason: format!("record {index} says it is record {}", d.record.lsn),
            });
        }
        let lsn = position(seq, index);
        if lsn >= from {
            let r = Record {
                lsn,
                kind: d.record.kind,
                payload: d.record.payload,
            };
            if tx.send(Ok(r)).await.is_err() {
                return Ok(false);
            }
        }
        bytes = &bytes[d.len..];
        index += 1;
    }
    Ok(true)
}

fn not_owned(partition: u32) -> LogError {
    LogError::Fenced {
        partition,
        detail: "this node does not own it".into(),
    }
}

/// One partition's appender: one message in flight at a time.
struct Writer {
    inner: Arc<Inner>,
    partition: u32,
    subject: String,
    /// The last sequence on the subject this writer knows of.
    last: u64,
    /// The takeover marker its first message carries, until that one is stored.
    marker: Option<String>,
    stopped: Arc<Mutex<Option<LogError>>>,
    /// `last`, for [`JetStreamLog::positions`].
    known: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Round>) {
        let budget = self.inner.cluster.max_payload.saturating_sub(HEADER_ROOM);
        let mut held: Option<Round> = None;
        loop {
            let first = match held.take() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            if let Some(e) = self.stopped.lock().clone() {
                self.inner.tickets.resolve(&first.ticket, Err(e));
                continue;
            }
            let mut rounds = vec![first];
            let mut bytes = framed(&rounds[0].records);
            let mut count = rounds[0].records.len();
            while let Ok(r) = rx.try_recv() {
                let b = framed(&r.records);
                if bytes + b > budget || count + r.records.len() > RECORDS_PER_MESSAGE {
                    held = Some(r);
                    break;
                }
                bytes += b;
                count += r.records.len();
                rounds.push(r);
            }
            let result = if count > RECORDS_PER_MESSAGE || bytes > budget {
                Err(LogError::Unconfirmed {
                    partition: self.partition,
                    detail: format!(
                        "a round of {count} records and {bytes} bytes is over one message's limit ({RECORDS_PER_MESSAGE} records, {budget} bytes: the servers' max_payload)"
                    ),
                })
            } else {
                self.append(&rounds, bytes).await
            };
            match result {
                Ok(seq) => {
                    let mut index = 0;
                    for r in &rounds {
                        let n = r.records.len();
                        let span = if n == 0 {
                            Span {
                                first: position(seq, index),
                                last: position(seq, index).saturating_sub(1),
                            }
                        } else {
                            Span {
                                first: position(seq, index),
                                last: position(seq, index + n - 1),
                            }
                        };
                        index += n;
                        self.inner.tickets.resolve(&r.ticket, Ok(span));
                    }
                    self.inner
                        .durable
                        .fetch_max(position(seq, count.max(1) - 1), Ordering::AcqRel);
                }
                Err(e) => {
                    *self.stopped.lock() = Some(e.clone());
                    for r in &rounds {
                        self.inner.tickets.resolve(&r.ticket, Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Sends one message and waits for the stream's acknowledgement, sending it again
    /// (same id: stored once) until the ack timeout. Its sequence, or why not.
    async fn append(&mut self, rounds: &[Round], bytes: usize) -> Result<u64, LogError> {
        let mut payload = Vec::with_capacity(bytes);
        let mut index = 0u64;
        for r in rounds {
            for (kind, p) in &r.records {
                record::encode(&mut payload, index, *kind, 0, p);
                index += 1;
            }
        }
        let payload = Bytes::from(payload);
        let n = self.inner.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}.{}.{n}", self.inner.token, self.partition);
        let deadline = Instant::now() + self.inner.cluster.ack_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                self.last.to_string().as_str(),
            );
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            if let Some(who) = &self.marker {
                headers.insert("Hunt-Takeover", who.as_str());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                self.inner
                    .cluster
                    .js
                    .publish_with_headers(self.subject.clone(), headers, payload.clone())
                    .await?
                    .await
            };
            let outcome = match tokio::time::timeout(left, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(LogError::Unconfirmed {
                        partition: self.partition,
                        detail: format!(
                            "no acknowledgement within {:?}",
                            self.inner.cluster.ack_timeout
                        ),
                    });
                }
            };
            let error = match outcome {
                Ok(ack) => {
                    self.last = ack.sequence;
                    self.known.store(ack.sequence, Ordering::Release);
                    self.marker = None;
                    return Ok(ack.sequence);
                }
                Err(e) => e,
            };
            match error.kind() {
                PublishErrorKind::WrongLastSequence => {
                    self.inner.cluster.metrics().count_fenced();
                    return Err(LogError::Fenced {
                        partition: self.partition,
                        detail: format!(
                            "the stream holds a message on {} after sequence {}: {error}",
                            self.subject, self.last
                        ),
                    });
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    return Err(LogError::Unconfirmed {
                        partition: self.partition,
                        detail: error.to_string(),
                    });
                }
                // A timeout, a lost connection, no leader yet, or another message on
                // the subject being proposed (code 10164: this writer's own earlier
                // try, or another owner's): try again with the same id; the stream
                // stores it once, or refuses it as fenced.
                _ => {}
            }
            if Instant::now() + pause >= deadline {
                return Err(LogError::Unconfirmed {
                    partition: self.partition,
                    detail: format!("last error: {error}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            self.inner.cluster.metrics().count_resend();
        }
    }
}

/// The bytes `records` take framed.
fn framed(records: &[(u8, Vec<u8>)]) -> usize {
    records
        .iter()
        .map(|(_, p)| record::HEADER_BYTES + p.len())
        .sum()
}

impl PartitionLog for JetStreamLog {
    fn submit(&self, partition: u32, records: Vec<(u8, Vec<u8>)>) -> Submitting<'_> {
        Box::pin(async move {
            let (tx, stopped) = {
                let parts = self.inner.parts.lock();
                let part = parts.get(&partition).ok_or_else(|| not_owned(partition))?;
                (part.tx.clone(), part.stopped.clone())
            };
            if let Some(e) = stopped.lock().clone() {
                return Err(e);
            }
            let ticket = self.inner.tickets.ticket();
            tx.send(Round {
                records,
                ticket: ticket.clone(),
            })
            .await
            .map_err(|_| not_owned(partition))?;
            Ok(ticket)
        })
    }

    /// Call from a thread that may block (not from inside the log's runtime's tasks):
    /// the records arrive from a task on that runtime.
    fn read(&self, partitions: Partitions, from: Lsn) -> Result<Records, LogError> {
        let (tx, mut rx) = mpsc::channel(4096);
        self.inner
            .rt
            .spawn(Self::read_task(self.inner.clone(), partitions, from, tx));
        Ok(Box::new(std::iter::from_fn(move || rx.blocking_recv())))
    }

    fn durable(&self) -> Lsn {
        self.inner.durable.load(Ordering::Acquire)
    }

    /// Positions skip: a message's records are numbered from its stream sequence.
    fn dense(&self) -> bool {
        false
    }

    fn append_after_end(&self, partition: u32) -> hunt_store::partition_log::Pending<'_, bool> {
        Box::pin(async move {
            let last = self
                .last_sequence(partition)
                .await
                .map_err(|e| LogError::Io {
                    op: "read the end of",
                    path: self.inner.cluster.subject(partition),
                    message: e.to_string(),
                })?;
            self.release(partition);
            self.start(partition, last, None);
            Ok(true)
        })
    }

    /// The first partition found stopped here, if any.
    fn stopped(&self) -> Option<LogError> {
        let parts = self.inner.parts.lock();
        parts.values().find_map(|p| p.stopped.lock().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_number_records_within_a_message() {
        assert_eq!(sequence_of(position(7, 0)), 7);
        assert_eq!(sequence_of(position(7, RECORDS_PER_MESSAGE)), 7);
        assert!(position(7, RECORDS_PER_MESSAGE) < position(8, 0));
        assert_eq!(position(1, 3) - position(1, 0), 3);
    }
}
