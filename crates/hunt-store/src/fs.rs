//! The few file operations the log needs, behind a trait: the real filesystem, and a
//! simulated disk for crash tests.
//!
//! The simulated disk keeps, per file, what was synced apart from what was only written,
//! and per directory entry whether the directory was synced since it changed. A crash
//! ([`SimFs::crash`]) keeps what was synced, keeps a random block-aligned prefix of what
//! was not (sometimes with the next block torn into garbage), and forgets files whose
//! directory entry was never synced, renames and removals not made durable included.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// File operations used by the log and snapshots.
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files in `dir` (not sub-directories).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for appending, creating it if `create`.
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads `path` whole into `buf`, replacing what it held. A reader going through
    /// segments one after another keeps one buffer: fresh memory for each 64 MB
    /// segment cost more than reading it (the kernel zeroes every new page).
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read(path)?;
        Ok(())
    }
    /// Cuts `path` to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending.
pub trait FsFile: Send {
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(std::fs::File);

impl FsFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(create)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        buf.clear();
        if let Ok(m) = f.metadata() {
            buf.reserve(m.len() as usize);
        }
        f.read_to_end(buf).map(|_| ())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

// ---------------------------------------------------------------------------------------
// The simulated disk.

/// Sector size for tearing: a crash keeps unsynced data up to a multiple of this.
pub const SIM_BLOCK_BYTES: usize = 512;

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash for sure.
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Directory entries as a reader sees them: path → file.
    files: BTreeMap<PathBuf, u64>,
    /// Directory entries as they would be after a crash (as of each directory's last sync).
    durable_entries: BTreeMap<PathBuf, u64>,
    /// File contents by identity (a renamed file keeps its identity).
    blobs: BTreeMap<u64, SimFile>,
    next_id: u64,
    dirs: Vec<PathBuf>,
    /// Seeded generator for crash decisions.
    rng: u64,
    /// Inject an I/O error on every write or sync once this many have happened.
    fail_after_ops: Option<u64>,
    /// Crash (power loss) when this many writes or syncs have happened.
    crash_at_op: Option<u64>,
    ops: u64,
    crashes: u64,
    /// Bumped by each crash: files opened before it belong to a dead process.
    generation: u64,
}

/// An in-memory disk that loses what was not synced when it crashes.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl SimFs {
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(SimState {
                rng: seed ^ 0x5DEE_CE66_D1CE_F00D,
                ..SimState::default()
            })),
        }
    }

    /// After `n` more writes or syncs, every write and sync fails with an I/O error.
    pub fn fail_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_after_ops = Some(s.ops + n);
    }

    /// Power loss after `n` more writes or syncs: that one and everything after fail,
    /// as if the process died there.
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at_op = Some(s.ops + n);
    }

    /// Power loss: every file falls back to what was synced, plus a random
    /// block-aligned part of what was not; directory changes not synced are undone.
    /// Files opened before the crash can no longer be used.
    pub fn crash(&self) {
        let mut s = self.state.lock();
        Self::crash_locked(&mut s);
    }

    fn crash_locked(s: &mut SimState) {
        s.crashes += 1;
        s.generation += 1;
        s.crash_at_op = None;
        s.fail_after_ops = None;
        let entries = std::mem::take(&mut s.durable_entries);
        let old = std::mem::take(&mut s.blobs);
        let mut blobs = BTreeMap::new();
        for id in entries.values() {
            let Some(f) = old.get(id) else { continue };
            let mut kept = f.synced.clone();
            if f.data.len() > f.synced.len() && f.data.starts_with(&f.synced) {
                let extra = f.data.len() - f.synced.len();
                let blocks = extra.div_ceil(SIM_BLOCK_BYTES) as u64;
                let keep_blocks = next(&mut s.rng) % (blocks + 1);
                let keep = ((keep_blocks as usize) * SIM_BLOCK_BYTES).min(extra);
                kept.extend_from_slice(&f.data[f.synced.len()..f.synced.len() + keep]);
                // Sometimes the block after that was half written: garbage.
                if keep < extra && next(&mut s.rng).is_multiple_of(3) {
                    let torn = ((next(&mut s.rng) as usize) % SIM_BLOCK_BYTES)
                        .min(extra - keep)
                        .max(1);
                    for _ in 0..torn {
                        kept.push(next(&mut s.rng) as u8);
                    }
                }
            }
            blobs.insert(
                *id,
                SimFile {
                    data: kept.clone(),
                    synced: kept,
                },
            );
        }
        s.blobs = blobs;
        s.files = entries.clone();
        s.durable_entries = entries;
    }

    /// Crashes seen so far.
    pub fn crashes(&self) -> u64 {
        self.state.lock().crashes
    }

    /// Flips one byte of a file, durably (to simulate bit rot).
    pub fn corrupt(&self, path: &Path, offset: usize) {
        let mut s = self.state.lock();
        let Some(id) = s.files.get(path).copied() else {
            return;
        };
        if let Some(f) = s.blobs.get_mut(&id)
            && offset < f.data.len()
        {
            f.data[offset] ^= 0xFF;
            f.synced = f.data.clone();
        }
    }

    fn op(s: &mut SimState) -> io::Result<()> {
        s.ops += 1;
        if s.crash_at_op.is_some_and(|at| s.ops >= at) {
            Self::crash_locked(s);
            return Err(io::Error::other("simulated power loss"));
        }
        match s.fail_after_ops {
            Some(limit) if s.ops > limit => Err(io::Error::other("simulated disk failure")),
            _ => Ok(()),
        }
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

/// An open file: its identity, so writes follow it through renames, as on a real disk.
struct SimHandle {
    fs: SimFs,
    path: PathBuf,
    id: u64,
    generation: u64,
}

impl SimHandle {
    fn blob<'a>(&self, s: &'a mut SimState) -> io::Result<&'a mut SimFile> {
        if s.generation != self.generation {
            return Err(io::Error::other(
                "the process that opened this file died in a crash",
            ));
        }
        s.blobs
            .get_mut(&self.id)
            .ok_or_else(|| not_found(&self.path))
    }
}

impl FsFile for SimHandle {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        SimFs::op(&mut s)?;
        self.blob(&mut s)?.data.extend_from_slice(buf);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        SimFs::op(&mut s)?;
        let f = self.blob(&mut s)?;
        f.synced = f.data.clone();
        Ok(())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if !s.dirs.iter().any(|d| d == dir) {
            s.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.state.lock();
        let id = match s.files.get(path) {
            Some(id) => *id,
            None if create => {
                s.next_id += 1;
                let id = s.next_id;
                s.files.insert(path.to_path_buf(), id);
                s.blobs.insert(id, SimFile::default());
                id
            }
            None => return Err(not_found(path)),
        };
        Ok(Box::new(SimHandle {
            fs: self.clone(),
            path: path.to_path_buf(),
            id,
            generation: s.generation,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state.lock();
        let id = s.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.blobs[id].data.clone())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        SimFs::op(&mut s)?;
        let id = *s.files.get(path).ok_or_else(|| not_found(path))?;
        let f = s.blobs.get_mut(&id).ok_or_else(|| not_found(path))?;
        f.data.truncate(len as usize);
        f.synced = f.data.clone();
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let id = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.files.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        SimFs::op(&mut s)?;
        // The directory's entries become what a reader sees now.
        s.durable_entries.retain(|p, _| p.parent() != Some(dir));
        let now: Vec<(PathBuf, u64)> = s
            .files
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_entries.extend(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_data_and_forgets_unsynced_entries() {
        let fs = SimFs::new(1);
        let dir = Path::new("/d");
        let mut a = fs.open_append(&dir.join("a"), true).unwrap();
        a.append(b"durable").unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        a.append(&[7; 3000]).unwrap();
        let mut b = fs.open_append(&dir.join("b"), true).unwrap();
        b.append(b"never listed").unwrap();
        b.sync_data().unwrap();
        fs.crash();
        let after = fs.read(&dir.join("a")).unwrap();
        assert!(after.starts_with(b"durable"));
        assert!(after.len() <= 7 + 3000 + SIM_BLOCK_BYTES);
        assert!(
            fs.read(&dir.join("b")).is_err(),
            "a file whose entry was not synced is lost"
        );
    }

    #[test]
    fn an_unsynced_rename_is_undone() {
        let fs = SimFs::new(2);
        let dir = Path::new("/d");
        let mut t = fs.open_append(&dir.join("x.tmp"), true).unwrap();
        t.append(b"snap").unwrap();
        t.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        fs.rename(&dir.join("x.tmp"), &dir.join("x")).unwrap();
        fs.crash();
        assert!(fs.read(&dir.join("x")).is_err());
        assert_eq!(fs.read(&dir.join("x.tmp")).unwrap(), b"snap");
    }
}
