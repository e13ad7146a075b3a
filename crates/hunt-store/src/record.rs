//! Record framing: every record carries its length, a CRC32C, its LSN and its type.
//!
//! ```text
//! 0      4      8          16     17     18     19       19+len
//! | len  | crc  |   lsn    | kind | fmt  | flags| payload |
//! ```
//! `len` is the payload's length; `crc` covers everything after itself (LSN, kind,
//! format, flags and payload), so a record is checked as a whole, and a record read back
//! at the wrong position fails its LSN check. All integers are little-endian.

/// A record's position in the log: strictly increasing, from 1.
pub type Lsn = u64;

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 19;
/// The largest payload accepted (16 MiB); bigger is refused before anything is written.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// The record format this code writes.
pub const FORMAT: u8 = 1;
/// Flag: more records of the same batch follow. A batch whose last record still says
/// so was torn by a crash, and recovery drops the whole batch.
pub const FLAG_BATCH_CONTINUES: u8 = 1;

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    /// What the payload is (an event, an outcome, a config version…); the log does not
    /// interpret it.
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Why bytes could not be read as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the payload needs: a write cut short.
    Incomplete,
    /// The checksum does not match: damaged or torn bytes.
    Checksum,
    /// A length beyond [`PAYLOAD_BYTES_MAX`], or a format this code does not know.
    Invalid(String),
}

/// Appends the framing of one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, lsn: Lsn, kind: u8, flags: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= PAYLOAD_BYTES_MAX);
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(&[kind, FORMAT, flags]);
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded record, its flags and the bytes it took.
#[derive(Debug)]
pub struct Decoded {
    pub record: Record,
    pub flags: u8,
    pub len: usize,
}

/// Reads one record from the start of `bytes`, checking it whole.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Incomplete);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if len > PAYLOAD_BYTES_MAX {
        return Err(DecodeError::Invalid(format!(
            "payload length {len} exceeds {PAYLOAD_BYTES_MAX}"
        )));
    }
    let total = HEADER_BYTES + len;
    if bytes.len() < total {
        return Err(DecodeError::Incomplete);
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[8..total]) != crc {
        return Err(DecodeError::Checksum);
    }
    let format = bytes[17];
    if format != FORMAT {
        return Err(DecodeError::Invalid(format!(
            "record format {format} is unknown (this build reads {FORMAT})"
        )));
    }
    Ok(Decoded {
        record: Record {
            lsn: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            kind: bytes[16],
            payload: bytes[HEADER_BYTES..total].to_vec(),
        },
        flags: bytes[18],
        len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, 7, 0, b"hello");
        let d = decode(&buf).unwrap();
        assert_eq!(
            d.record,
            Record {
                lsn: 42,
                kind: 7,
                payload: b"hello".to_vec()
            }
        );
        assert_eq!(d.len, buf.len());
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).unwrap_err(),
                DecodeError::Incomplete,
                "cut at {cut}"
            );
        }
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
    }
}
