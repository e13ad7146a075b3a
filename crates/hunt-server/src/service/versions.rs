//! The hunts file's versions, as the log holds them: every version ever put in force
//! is a record, so the list is read from the log, not kept in memory. The first
//! listing reads the whole log once (in the background, off the partitions' path);
//! later ones read only what was written since. Only (version, name, when, where) is
//! kept: a version's text is read from its record when asked for.

use super::*;
use crate::records::decode_config;
use hunt_store::Partitions;

/// One version of the hunts file.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    pub version: u64,
    pub name: String,
    /// When it was put in force (ms since the epoch).
    pub at: i64,
    /// Where its record is in the log.
    pub lsn: u64,
}

/// What is known of the log's versions, and up to where it was read.
#[derive(Debug, Default)]
pub struct VersionIndex {
    entries: Vec<VersionEntry>,
    read_to: u64,
}

impl Service {
    /// Every version recorded in the log, oldest first.
    pub async fn versions(&self) -> Result<Vec<VersionEntry>, String> {
        let mut index = self.versions.lock().await;
        let log = self.log.clone();
        let from = index.read_to + 1;
        let (found, read_to) = tokio::task::spawn_blocking(move || scan(&*log, from))
            .await
            .map_err(|e| e.to_string())??;
        index.entries.extend(found);
        index.read_to = index.read_to.max(read_to);
        Ok(index.entries.clone())
    }

    /// A version's record, with its text (`None`: no such version in the log).
    pub async fn version_record(&self, version: u64) -> Result<Option<ConfigRecord>, String> {
        let v = self.version();
        if v.record.version == version {
            return Ok(Some(v.record.clone()));
        }
        let Some(entry) = self
            .versions()
            .await?
            .into_iter()
            .find(|e| e.version == version)
        else {
            return Ok(None);
        };
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut records = log
                .read(Partitions::All, entry.lsn)
                .map_err(|e| e.to_string())?;
            match records.next() {
                Some(Ok(r)) if r.lsn == entry.lsn && is_version(r.kind) => {
                    decode_config(&r.payload).map(Some)
                }
                Some(Err(e)) => Err(e.to_string()),
                _ => Err(format!(
                    "the record of hunts file version {version} is no longer at {}",
                    entry.lsn
                )),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// A record of a hunts-file version: put in force at its place, or by markers.
fn is_version(kind: u8) -> bool {
    kind == KIND_CONFIG || kind == crate::records::KIND_VERSION
}

/// The versions recorded at or after `from`, and the last position read.
fn scan(log: &dyn PartitionLog, from: u64) -> Result<(Vec<VersionEntry>, u64), String> {
    let mut found = Vec::new();
    let mut last = from.saturating_sub(1);
    for r in log.read(Partitions::All, from).map_err(|e| e.to_string())? {
        let r = r.map_err(|e| e.to_string())?;
        last = last.max(r.lsn);
        if is_version(r.kind) {
            let c = decode_config(&r.payload)?;
            found.push(VersionEntry {
                version: c.version,
                name: c.name,
                at: c.at,
                lsn: r.lsn,
            });
        }
    }
    Ok((found, last))
}
