//! Opening a log: segments listed and scanned, a torn tail cut off, damage reported or
//! moved aside.

use super::*;

pub(super) fn segment_name(first: Lsn) -> String {
    format!("{first:020}.log")
}

pub(super) fn segment_first(name: &str) -> Option<Lsn> {
    name.strip_suffix(".log")?.parse().ok()
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, recovering from a crash: a torn tail
    /// is cut off and reported; damage before it stops the open unless `repair` is set.
    pub fn open(fs: Arc<dyn Fs>, config: LogConfig) -> Result<(Log, OpenReport), LogError> {
        let dir = config.dir.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| io_err("create", &dir, e))?;
        let mut report = OpenReport {
            durability: config.durability.to_string(),
            ..OpenReport::default()
        };
        let segments = list_segments(&*fs, &dir)?;
        // After retention pruned old segments, the log starts at its first segment.
        let mut next_lsn: Lsn = segments.first().map_or(1, |s| s.0.max(1));
        let mut last_segment: Option<(PathBuf, u64)> = None;
        for (i, (first, name)) in segments.iter().enumerate() {
            let path = dir.join(name);
            let bytes = fs.read(&path).map_err(|e| io_err("read", &path, e))?;
            let is_last = i + 1 == segments.len();
            if *first != next_lsn && !(bytes.is_empty() && is_last) {
                return Err(LogError::Corrupt {
                    segment: name.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at lsn {first}, expected {next_lsn} (a segment is missing)"
                    ),
                });
            }
            let scan = scan_segment(&bytes, next_lsn);
            report.records += scan.records;
            next_lsn += scan.records;
            let mut len = bytes.len() as u64;
            if let Some(bad) = scan.bad {
                let torn = is_last && !scan.valid_after_bad;
                if torn {
                    let cut = bytes.len() as u64 - scan.good_end;
                    fs.truncate(&path, scan.good_end)
                        .map_err(|e| io_err("truncate", &path, e))?;
                    report.torn_tail = Some((name.clone(), scan.good_end, cut));
                    len = scan.good_end;
                } else if config.repair {
                    let lost = repair(&*fs, &dir, &segments[i..], scan.good_end, &bytes)?;
                    report.repaired = Some((name.clone(), scan.good_end, lost.0, lost.1));
                    report.segments = i + 1;
                    report.last_lsn = next_lsn - 1;
                    last_segment = Some((path, scan.good_end));
                    return Self::start(fs, config, report, next_lsn, last_segment);
                } else {
                    return Err(LogError::Corrupt {
                        segment: name.clone(),
                        offset: bad.0,
                        reason: bad.1,
                    });
                }
            }
            last_segment = Some((path, len));
        }
        report.segments = segments.len();
        report.last_lsn = next_lsn - 1;
        Self::start(fs, config, report, next_lsn, last_segment)
    }
}

pub(super) fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(Lsn, String)>, LogError> {
    let mut segs: Vec<(Lsn, String)> = fs
        .list(dir)
        .map_err(|e| io_err("list", dir, e))?
        .into_iter()
        .filter_map(|n| segment_first(&n).map(|f| (f, n)))
        .collect();
    segs.sort();
    Ok(segs)
}

/// A new, empty segment whose file and directory entry are durable.
pub(super) fn new_segment(fs: &dyn Fs, path: &Path) -> Result<Box<dyn FsFile>, LogError> {
    let mut f = fs
        .open_append(path, true)
        .map_err(|e| io_err("create", path, e))?;
    f.sync_data().map_err(|e| io_err("sync", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| io_err("sync directory", dir, e))?;
    Ok(f)
}

/// What a scan of one segment found.
pub(super) struct Scan {
    pub(super) records: u64,
    /// End of the last whole batch that checked out.
    pub(super) good_end: u64,
    /// The first bad place: offset and reason.
    pub(super) bad: Option<(u64, String)>,
    /// Whether a valid record with a later LSN follows the bad place (then it is
    /// damage, not a torn tail).
    pub(super) valid_after_bad: bool,
}

pub(super) fn scan_segment(bytes: &[u8], first_lsn: Lsn) -> Scan {
    let mut pos = 0usize;
    let mut expected = first_lsn;
    let (mut records, mut good_end, mut batch_records) = (0u64, 0u64, 0u64);
    let mut bad = None;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Ok(d) if d.record.lsn == expected => {
                pos += d.len;
                expected += 1;
                batch_records += 1;
                if d.flags & FLAG_BATCH_CONTINUES == 0 {
                    records += batch_records;
                    batch_records = 0;
                    good_end = pos as u64;
                }
            }
            Ok(d) => {
                bad = Some((
                    pos as u64,
                    format!("record has lsn {}, expected {expected}", d.record.lsn),
                ));
                break;
            }
            Err(e) => {
                let why = match e {
                    DecodeError::Incomplete => "record cut short".to_string(),
                    DecodeError::Checksum => "checksum mismatch".to_string(),
                    DecodeError::Invalid(m) => m,
                };
                bad = Some((pos as u64, why));
                break;
            }
        }
    }
    if bad.is_none() && batch_records > 0 {
        // The last batch never finished: torn by a crash.
        bad = Some((good_end, "batch cut short".to_string()));
    }
    let valid_after_bad = bad.as_ref().is_some_and(|(at, _)| {
        let from = (*at as usize) + 1;
        (from..bytes.len())
            .any(|p| matches!(record::decode(&bytes[p..]), Ok(d) if d.record.lsn >= expected))
    });
    Scan {
        records,
        good_end,
        bad,
        valid_after_bad,
    }
}

/// Moves everything from `offset` in `segments[0]`, and all later segments, into
/// `damaged/`; returns (bytes moved, whole records lost).
pub(super) fn repair(
    fs: &dyn Fs,
    dir: &Path,
    segments: &[(Lsn, String)],
    offset: u64,
    bytes: &[u8],
) -> Result<(u64, u64), LogError> {
    let aside = dir.join("damaged");
    fs.create_dir_all(&aside)
        .map_err(|e| io_err("create", &aside, e))?;
    let (_, name) = &segments[0];
    let part = aside.join(format!("{name}.from-{offset}"));
    let mut f = fs
        .open_append(&part, true)
        .map_err(|e| io_err("create", &part, e))?;
    f.append(&bytes[offset as usize..])
        .map_err(|e| io_err("write", &part, e))?;
    f.sync_data().map_err(|e| io_err("sync", &part, e))?;
    let mut moved = bytes.len() as u64 - offset;
    let mut lost = count_decodable(&bytes[offset as usize..]);
    for (_, later) in &segments[1..] {
        let from = dir.join(later);
        let b = fs.read(&from).map_err(|e| io_err("read", &from, e))?;
        moved += b.len() as u64;
        lost += count_decodable(&b);
        fs.rename(&from, &aside.join(later))
            .map_err(|e| io_err("move", &from, e))?;
    }
    fs.sync_dir(&aside)
        .map_err(|e| io_err("sync directory", &aside, e))?;
    let path = dir.join(name);
    fs.truncate(&path, offset)
        .map_err(|e| io_err("truncate", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| io_err("sync directory", dir, e))?;
    Ok((moved, lost))
}

/// Records that still check out in damaged bytes (skipping over the damage).
pub(super) fn count_decodable(bytes: &[u8]) -> u64 {
    let (mut pos, mut n) = (0, 0);
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Ok(d) => {
                n += 1;
                pos += d.len;
            }
            Err(_) => pos += 1,
        }
    }
    n
}
