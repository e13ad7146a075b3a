//! Reading durable records in order, a segment at a time.

use super::*;

/// Iterates durable records in LSN order, a segment at a time.
pub struct Reader {
    pub(super) fs: Arc<dyn Fs>,
    pub(super) dir: PathBuf,
    pub(super) segments: Vec<(Lsn, String)>,
    pub(super) seg: usize,
    pub(super) bytes: Vec<u8>,
    pub(super) pos: usize,
    pub(super) next: Lsn,
    pub(super) from: Lsn,
    pub(super) until: Lsn,
    pub(super) failed: bool,
}

impl Reader {
    pub(super) fn new(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        from: Lsn,
        until: Lsn,
    ) -> Result<Reader, LogError> {
        let segments = list_segments(&*fs, &dir)?;
        // Start at the last segment beginning at or before `from`.
        let seg = segments
            .iter()
            .rposition(|(first, _)| *first <= from.max(1))
            .unwrap_or(0);
        let next = segments.get(seg).map_or(1, |s| s.0);
        Ok(Reader {
            fs,
            dir,
            segments,
            seg,
            bytes: Vec::new(),
            pos: 0,
            next,
            from,
            until,
            failed: false,
        })
    }

    pub(super) fn fail(&mut self, e: LogError) -> Option<Result<Record, LogError>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl Iterator for Reader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.next > self.until {
                return None;
            }
            if self.pos >= self.bytes.len() {
                let (_, name) = self.segments.get(self.seg)?.clone();
                let path = self.dir.join(&name);
                if let Err(e) = self.fs.read_into(&path, &mut self.bytes) {
                    return self.fail(io_err("read", &path, e));
                }
                self.pos = 0;
                self.seg += 1;
                if self.bytes.is_empty() {
                    continue;
                }
            }
            let name = &self.segments[self.seg - 1].1;
            match record::decode(&self.bytes[self.pos..]) {
                Ok(d) if d.record.lsn == self.next => {
                    self.pos += d.len;
                    self.next += 1;
                    if d.record.lsn >= self.from {
                        return Some(Ok(d.record));
                    }
                }
                Ok(d) => {
                    let e = LogError::Corrupt {
                        segment: name.clone(),
                        offset: self.pos as u64,
                        reason: format!("record has lsn {}, expected {}", d.record.lsn, self.next),
                    };
                    return self.fail(e);
                }
                Err(e) => {
                    let e = LogError::Corrupt {
                        segment: name.clone(),
                        offset: self.pos as u64,
                        reason: format!("{e:?}"),
                    };
                    return self.fail(e);
                }
            }
        }
    }
}
