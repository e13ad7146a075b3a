//! Snapshots of projection state at an LSN, saved atomically, loaded only when valid.
//!
//! Saving writes a temporary file, syncs it, renames it into place and syncs the
//! directory: after a crash there is either the whole new snapshot or none. Loading
//! takes the newest snapshot that checks out and skips (and reports) any that do not;
//! a damaged snapshot is never trusted. The log itself keeps every record unless
//! segments are pruned explicitly.
//!
//! ```text
//! "HSNP" | format u8 | lsn u64 | len u64 | crc32c(payload) u32 | payload
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::Fs;
use crate::log::{LogError, io_err};
use crate::record::Lsn;

const MAGIC: &[u8; 4] = b"HSNP";
const FORMAT: u8 = 1;
const HEADER_BYTES: usize = 4 + 1 + 8 + 8 + 4;
/// A snapshot is written and synced this much at a time.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// A loaded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state includes every record up to and including this LSN.
    pub lsn: Lsn,
    pub payload: Vec<u8>,
}

/// Where snapshots are kept: a data directory ([`Snapshots`]), or a replicated store
/// when the log is a cluster's.
pub trait SnapshotStore: Send + Sync {
    /// Saves `payload` as the state at `lsn`, atomically. Blocking.
    fn save(&self, lsn: Lsn, payload: &[u8]) -> Result<(), LogError>;
    /// The newest valid snapshot, and a warning for each one skipped. Blocking.
    fn latest(&self) -> Result<(Option<Snapshot>, Vec<String>), LogError>;
}

/// Snapshots of one partition each, so that a node taking one partition over reads
/// only that partition's state and the tail of its records (partitions spread over a
/// cluster's nodes, ADR 0015). Framed as [`frame`] makes them.
pub trait PartSnapshots: Send + Sync {
    /// Saves `payload` as `partition`'s state at `lsn`, atomically. Blocking.
    fn save_part(&self, partition: u32, lsn: Lsn, payload: &[u8]) -> Result<(), LogError>;
    /// `partition`'s newest valid snapshot, and a warning for one skipped. Blocking.
    fn latest_part(&self, partition: u32) -> Result<(Option<Snapshot>, Vec<String>), LogError>;
}

/// A snapshot as bytes: the header (magic, format, LSN, length, checksum) and the
/// payload; what a file or an object holds.
pub fn frame(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut out = header(lsn, payload);
    out.reserve_exact(payload.len());
    out.extend_from_slice(payload);
    out
}

fn header(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.push(FORMAT);
    header.extend_from_slice(&lsn.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    header
}

/// Reads bytes made by [`frame`]; an error says what is wrong with them.
pub fn unframe(bytes: &[u8]) -> Result<Snapshot, String> {
    parse(bytes, None)
}

/// The snapshots of one data directory.
pub struct Snapshots {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// How many snapshots to keep (the newest); older ones are deleted after a save.
    pub keep: usize,
}

/// Default number of snapshots kept.
pub const KEEP_DEFAULT: usize = 3;

fn name(lsn: Lsn) -> String {
    format!("{lsn:020}.snap")
}

impl Snapshots {
    /// Snapshots under `data_dir/snapshots`.
    pub fn open(fs: Arc<dyn Fs>, data_dir: &Path) -> Result<Snapshots, LogError> {
        let dir = data_dir.join("snapshots");
        fs.create_dir_all(&dir)
            .map_err(|e| io_err("create", &dir, e))?;
        Ok(Snapshots {
            fs,
            dir,
            keep: KEEP_DEFAULT,
        })
    }

    /// Saves `payload` as the state at `lsn`, atomically; then applies retention.
    pub fn save(&self, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        let tmp = self.dir.join(format!("{}.tmp", name(lsn)));
        let dst = self.dir.join(name(lsn));
        let _ = self.fs.remove(&tmp);
        let header = header(lsn, payload);
        let mut f = self
            .fs
            .open_append(&tmp, true)
            .map_err(|e| io_err("create", &tmp, e))?;
        f.append(&header).map_err(|e| io_err("write", &tmp, e))?;
        // Synced a little at a time: a log sync on the same disk then waits behind at
        // most one chunk of the snapshot, not hundreds of megabytes of dirty pages.
        for chunk in payload.chunks(WRITE_CHUNK_BYTES) {
            f.append(chunk).map_err(|e| io_err("write", &tmp, e))?;
            f.sync_data().map_err(|e| io_err("sync", &tmp, e))?;
        }
        if payload.is_empty() {
            f.sync_data().map_err(|e| io_err("sync", &tmp, e))?;
        }
        drop(f);
        fail::fail_point!("snapshot::rename", |_| Err(LogError::Io {
            op: "rename",
            path: tmp.display().to_string(),
            message: "failpoint snapshot::rename".into()
        }));
        self.fs
            .rename(&tmp, &dst)
            .map_err(|e| io_err("rename", &tmp, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| io_err("sync directory", &self.dir, e))?;
        self.retain()
    }

    /// The newest valid snapshot, and a warning for each one skipped.
    pub fn latest(&self) -> Result<(Option<Snapshot>, Vec<String>), LogError> {
        let mut warnings = Vec::new();
        for (lsn, n) in self.list()?.into_iter().rev() {
            let path = self.dir.join(&n);
            let bytes = match self.fs.read(&path) {
                Ok(b) => b,
                Err(e) => {
                    warnings.push(format!("snapshot {n} skipped: cannot read it ({e})"));
                    continue;
                }
            };
            match parse(&bytes, Some(lsn)) {
                Ok(s) => return Ok((Some(s), warnings)),
                Err(why) => warnings.push(format!(
                    "snapshot {n} skipped: {why}; an older one or the log is used"
                )),
            }
        }
        Ok((None, warnings))
    }

    fn list(&self) -> Result<Vec<(Lsn, String)>, LogError> {
        let mut v: Vec<(Lsn, String)> = self
            .fs
            .list(&self.dir)
            .map_err(|e| io_err("list", &self.dir, e))?
            .into_iter()
            .filter_map(|n| {
                n.strip_suffix(".snap")
                    .and_then(|l| l.parse().ok())
                    .map(|l| (l, n.clone()))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// Deletes all but the newest `keep` snapshots.
    fn retain(&self) -> Result<(), LogError> {
        let all = self.list()?;
        if all.len() <= self.keep.max(1) {
            return Ok(());
        }
        for (_, n) in &all[..all.len() - self.keep.max(1)] {
            let p = self.dir.join(n);
            self.fs.remove(&p).map_err(|e| io_err("remove", &p, e))?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| io_err("sync directory", &self.dir, e))
    }
}

impl SnapshotStore for Snapshots {
    fn save(&self, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
        Snapshots::save(self, lsn, payload)
    }

    fn latest(&self) -> Result<(Option<Snapshot>, Vec<String>), LogError> {
        Snapshots::latest(self)
    }
}

fn parse(bytes: &[u8], lsn_from_name: Option<Lsn>) -> Result<Snapshot, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err("not a snapshot (bad header)".into());
    }
    if bytes[4] != FORMAT {
        return Err(format!("unknown format {}", bytes[4]));
    }
    let lsn = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(bytes[13..21].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[21..25].try_into().expect("4 bytes"));
    if let Some(named) = lsn_from_name
        && lsn != named
    {
        return Err(format!("says lsn {lsn} but is named for {named}"));
    }
    // Compared without adding to the header's length: it is untrusted and may be huge.
    let payload_len = (bytes.len() - HEADER_BYTES) as u64;
    if payload_len != len {
        return Err(format!("{payload_len} payload bytes, header says {len}"));
    }
    let payload = &bytes[HEADER_BYTES..];
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(Snapshot {
        lsn,
        payload: payload.to_vec(),
    })
}
