//! Snapshots in the cluster's object store (`hunt_<name>_snapshots`), so that the node
//! taking the partitions over starts from the last owner's state and reads only the
//! stream's tail after it, instead of the whole stream.
//!
//! One object, `latest`, holds the newest snapshot, framed as in a data directory
//! (header with the position and a CRC-32C, then the payload), and the object store
//! keeps a SHA-256 of it too. A put replaces it whole: the object store publishes the
//! chunks first, then the object's description, so a reader sees the old snapshot or
//! the new one. Each partition's state is a part of its own inside the payload, at a
//! position of its own (ADR 0010).
//!
//! Beside it, object `p<n>` holds partition n's snapshot alone (ADR 0015), for a node
//! that takes that partition over: [`PartSnapshots`].
//!
//! **Why a snapshot of a deposed owner is harmless:** a snapshot holds only what its
//! log confirmed (the partitions' tickets are awaited before it is written), which is
//! a prefix of the stream whoever owns it now. At worst it is older than another, and
//! the next owner reads more of the tail. A snapshot that cannot be read is skipped
//! with a warning, and the state is rebuilt from the whole stream: the stream is the
//! truth.

use std::time::Duration;

use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectMetadata, ObjectStore};
use hunt_store::snapshot::{frame, unframe};
use hunt_store::{LogError, Lsn, PartSnapshots, Snapshot, SnapshotStore};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use crate::cluster::{Cluster, ClusterError};

/// The object that holds the newest snapshot.
pub const OBJECT: &str = "latest";
/// The longest one read of the snapshot may take (hundreds of megabytes at tens of
/// megabytes a second, with room).
const READ_TRY_TIMEOUT: Duration = Duration::from_secs(60);
/// The object's metadata key for the snapshot's position.
const LSN_KEY: &str = "lsn";
/// The most a snapshot's chunk holds (the servers' `max_payload` may lower it).
const CHUNK_BYTES_MAX: usize = 1 << 20;
/// How long a read of the snapshot is tried again (a server being lost) before the
/// rebuild goes on from the whole stream.
const READ_PATIENCE: Duration = Duration::from_secs(10);

/// Why the snapshot was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// Reading failed (a server lost, a time-out): it may work if asked again.
    Failed(String),
    /// Read, but it does not check out: asking again gives the same.
    Damaged(String),
}

/// The cluster's snapshots.
pub struct ObjectSnapshots {
    store: ObjectStore,
    bucket: String,
    chunk: usize,
    rt: Handle,
}

impl std::fmt::Debug for ObjectSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSnapshots")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl ObjectSnapshots {
    /// The cluster's snapshot bucket (created with `replicas` if absent). Blocking calls
    /// ([`SnapshotStore`]) run on `rt`, from threads outside it.
    pub async fn open(
        cluster: &Cluster,
        replicas: usize,
        rt: Handle,
    ) -> Result<ObjectSnapshots, ClusterError> {
        let bucket = format!("hunt_{}_snapshots", cluster.name());
        let store = crate::cluster::for_a_while(|| async {
            match cluster.js.get_object_store(&bucket).await {
                Ok(s) => Ok(s),
                // Absent, or another node creating it meanwhile (the next look finds it).
                Err(_) => cluster
                    .js
                    .create_object_store(object_store::Config {
                        bucket: bucket.clone(),
                        description: Some("The Treasure Hunt Engine's snapshots".into()),
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        ClusterError::Nats(format!("creating object store {bucket}: {e}"))
                    }),
            }
        })
        .await?;
        Ok(ObjectSnapshots {
            store,
            bucket,
            chunk: cluster
                .max_payload
                .saturating_sub(4096)
                .clamp(64 << 10, CHUNK_BYTES_MAX),
            rt,
        })
    }

    /// The cluster's snapshot bucket if it exists (a reader creates nothing).
    pub async fn existing(
        cluster: &Cluster,
        rt: Handle,
    ) -> Result<Option<ObjectSnapshots>, ClusterError> {
        let bucket = format!("hunt_{}_snapshots", cluster.name());
        match cluster.js.get_object_store(&bucket).await {
            Ok(store) => Ok(Some(ObjectSnapshots {
                store,
                bucket,
                chunk: CHUNK_BYTES_MAX,
                rt,
            })),
            // A bucket that does not exist (its stream is not found), not a server that
            // did not answer.
            Err(e) => match cluster.js.get_stream(format!("OBJ_{bucket}")).await {
                Err(g)
                    if matches!(g.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    Ok(None)
                }
                _ => Err(ClusterError::Nats(format!(
                    "reading the snapshot bucket {bucket}: {e}"
                ))),
            },
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Puts a framed snapshot, unless the object store holds a newer one (a later
    /// position): an owner deposed meanwhile must not replace its successor's.
    pub async fn put(&self, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        self.put_object(OBJECT, lsn, payload).await
    }

    /// [`put`](Self::put) under the object `name`.
    async fn put_object(&self, name: &str, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        if let Ok(info) = self.store.info(name).await
            && let Some(held) = info
                .metadata
                .get(LSN_KEY)
                .and_then(|v| v.parse::<Lsn>().ok())
            && held > lsn
        {
            return Err(self.error(
                name,
                "put",
                format!(
                    "the object store holds a newer snapshot (position {held}) than this one ({lsn}), which is not saved"
                ),
            ));
        }
        let bytes = frame(lsn, payload);
        let meta = ObjectMetadata {
            name: name.into(),
            chunk_size: Some(self.chunk),
            metadata: std::collections::HashMap::from([(LSN_KEY.to_string(), lsn.to_string())]),
            ..Default::default()
        };
        self.store
            .put(meta, &mut &bytes[..])
            .await
            .map(|_| ())
            .map_err(|e| self.error(name, "put", e))
    }

    /// The newest snapshot: `Ok(None)` if there is none yet. A read that stalls (a
    /// server lost under it) fails after [`READ_TRY_TIMEOUT`].
    pub async fn get(&self) -> Result<Option<Snapshot>, Unread> {
        self.get_object(OBJECT).await
    }

    /// [`get`](Self::get) of the object `name`.
    async fn get_object(&self, name: &str) -> Result<Option<Snapshot>, Unread> {
        tokio::time::timeout(READ_TRY_TIMEOUT, self.get_once(name))
            .await
            .unwrap_or_else(|_| {
                Err(Unread::Failed(format!(
                    "no whole snapshot read within {READ_TRY_TIMEOUT:?}"
                )))
            })
    }

    async fn get_once(&self, name: &str) -> Result<Option<Snapshot>, Unread> {
        let mut object = match self.store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Unread::Failed(e.to_string())),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Unread::Failed(e.to_string()))?;
        unframe(&bytes).map(Some).map_err(Unread::Damaged)
    }

    fn error(&self, name: &str, op: &'static str, e: impl std::fmt::Display) -> LogError {
        LogError::Io {
            op,
            path: format!("object {name} of {}", self.bucket),
            message: e.to_string(),
        }
    }
}

impl SnapshotStore for ObjectSnapshots {
    fn save(&self, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        self.rt.block_on(self.put(lsn, payload))
    }

    fn latest(&self) -> Result<(Option<Snapshot>, Vec<String>), LogError> {
        self.read_patiently(OBJECT)
    }
}

impl PartSnapshots for ObjectSnapshots {
    fn save_part(&self, partition: u32, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        self.rt
            .block_on(self.put_object(&format!("p{partition}"), lsn, payload))
    }

    fn latest_part(&self, partition: u32) -> Result<(Option<Snapshot>, Vec<String>), LogError> {
        self.read_patiently(&format!("p{partition}"))
    }
}

impl ObjectSnapshots {
    /// The object `object`, read again for a while if reading fails; one that cannot
    /// be read is skipped with a warning (the stream is the truth).
    fn read_patiently(&self, object: &str) -> Result<(Option<Snapshot>, Vec<String>), LogError> {
        let name = format!("snapshot {object} of {}", self.bucket);
        self.rt.block_on(async {
            let started = tokio::time::Instant::now();
            loop {
                let why = match self.get_object(object).await {
                    Ok(s) => return Ok((s, Vec::new())),
                    Err(Unread::Failed(_)) if started.elapsed() < READ_PATIENCE => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    Err(Unread::Failed(why)) => format!("cannot read it ({why})"),
                    Err(Unread::Damaged(why)) => why,
                };
                return Ok((
                    None,
                    vec![format!(
                        "{name} skipped: {why}; the whole stream is read instead"
                    )],
                ));
            }
        })
    }
}
