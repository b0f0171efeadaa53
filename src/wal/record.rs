//! The on-disk format: segment headers and record framing. The log knows
//! nothing of what a record means: a record is an opaque payload with a
//! kind byte (the engine's changes, the key store's answers: each owner
//! encodes its own, with `crate::codec`).
//!
//! A segment file starts with a 24-byte header:
//!
//! ```text
//! magic "STMPWAL1" (8) | version u32 | first_lsn u64 | crc32c of the 20 bytes before (u32)
//! ```
//!
//! then records, each:
//!
//! ```text
//! len u32 | !len u32 | crc32c u32 | lsn u64 | kind u8 | payload (len bytes)
//! ```
//!
//! all little-endian. `!len` lets a reader tell a damaged length from a
//! record cut short; the CRC covers lsn, kind and payload. LSNs start at 1
//! and go up by one per record, across segments.

use super::Entry;
use crate::codec;

pub const SEGMENT_MAGIC: [u8; 8] = *b"STMPWAL1";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 21;
/// Largest payload a record may have; anything larger is corruption.
pub const PAYLOAD_MAX: usize = 1 << 20;

/// A record that cannot be framed: nothing of it was written anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a log record of {payload_bytes} bytes is over the {PAYLOAD_MAX}-byte limit")]
    TooLarge { payload_bytes: usize },
    #[error("a log record cannot be encoded: {0}")]
    Codec(#[from] codec::Error),
}

/// Appends `entry` as a whole record (header, kind and payload) with
/// `lsn`. On an error `buf` is left exactly as it was.
pub fn frame(entry: &dyn Entry, lsn: u64, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = buf.len();
    // len, !len, crc, lsn: filled by `seal`.
    buf.extend_from_slice(&[0u8; 20]);
    buf.push(entry.kind());
    let result = match entry.encode(buf) {
        Ok(()) if buf.len() - start - RECORD_HEADER_LEN > PAYLOAD_MAX => {
            Err(EncodeError::TooLarge {
                payload_bytes: buf.len() - start - RECORD_HEADER_LEN,
            })
        }
        Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => seal(&mut buf[start..], lsn),
        Err(_) => buf.truncate(start),
    }
    result
}

/// Fills in the LSN, length and CRC of one record framed by [`frame`]
/// (`record` is exactly its bytes).
pub fn seal(record: &mut [u8], lsn: u64) {
    let len = u32::try_from(record.len() - RECORD_HEADER_LEN)
        .expect("bug: a record is sealed only after its size was checked");
    record[12..20].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&record[12..]);
    record[0..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&(!len).to_le_bytes());
    record[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// What is wrong with the bytes at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Fewer bytes than the record needs: the end of a torn write.
    #[error("record cut short")]
    Truncated,
    /// The length and its complement disagree.
    #[error("damaged record length")]
    BadLength,
    /// The CRC does not match.
    #[error("record checksum mismatch")]
    BadCrc,
    /// The header is sound but names what no writer writes (a segment
    /// version this build does not know).
    #[error("malformed record contents")]
    Malformed,
}

/// A record read back: its LSN, kind, payload, and total length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: u64,
    pub kind: u8,
    pub payload: &'a [u8],
    pub len: usize,
}

/// Reads the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, Damage> {
    if bytes.len() < 12 {
        return Err(Damage::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let len_check = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len != !len_check || len as usize > PAYLOAD_MAX {
        return Err(Damage::BadLength);
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Err(Damage::Truncated);
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[12..total]) != crc {
        return Err(Damage::BadCrc);
    }
    Ok(Frame {
        lsn: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
        kind: bytes[20],
        payload: &bytes[RECORD_HEADER_LEN..total],
        len: total,
    })
}

/// A segment header for a segment whose first record is `first_lsn`.
pub fn segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first LSN a segment header names, if the header is sound.
pub fn parse_segment_header(bytes: &[u8]) -> Result<u64, Damage> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(Damage::Truncated);
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if bytes[0..8] != SEGMENT_MAGIC || crc32c::crc32c(&bytes[0..20]) != crc {
        return Err(Damage::BadCrc);
    }
    if u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) != SEGMENT_VERSION {
        return Err(Damage::Malformed);
    }
    Ok(u64::from_le_bytes(
        bytes[12..20].try_into().expect("8 bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Put;

    /// A test entry: a kind and some bytes.
    struct Raw(u8, Vec<u8>);

    impl Entry for Raw {
        fn kind(&self) -> u8 {
            self.0
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
            out.extend_from_slice(&self.1);
            Ok(())
        }
    }

    /// Fails half-way: its first bytes reach the buffer, then an error.
    struct HalfWay;

    impl Entry for HalfWay {
        fn kind(&self) -> u8 {
            1
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
            out.put_u64(7);
            out.put_str(&"x".repeat(300))
        }
    }

    fn samples() -> Vec<Raw> {
        vec![
            Raw(1, b"hot-1".to_vec()),
            Raw(2, vec![0; 300]),
            Raw(6, vec![]),
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let mut buf = Vec::new();
        for (i, r) in samples().iter().enumerate() {
            frame(r, i as u64 + 1, &mut buf).unwrap();
        }
        let mut at = 0;
        for (i, r) in samples().iter().enumerate() {
            let d = decode(&buf[at..]).unwrap();
            assert_eq!((d.lsn, d.kind, d.payload), (i as u64 + 1, r.0, &r.1[..]));
            at += d.len;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn damage_is_classified() {
        let mut buf = Vec::new();
        frame(&samples()[0], 1, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(matches!(
                decode(&buf[..cut]),
                Err(Damage::Truncated | Damage::BadLength)
            ));
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip at byte {byte} bit {bit} went unseen"
                );
            }
        }
    }

    #[test]
    fn a_record_that_cannot_be_framed_is_an_error_and_leaves_the_buffer_as_it_was() {
        let mut buf = Vec::new();
        frame(&samples()[0], 1, &mut buf).unwrap();
        let before = buf.clone();
        assert!(matches!(
            frame(&Raw(7, vec![b'x'; PAYLOAD_MAX + 1]), 2, &mut buf),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(buf, before);
        assert_eq!(
            frame(&HalfWay, 2, &mut buf),
            Err(EncodeError::Codec(codec::Error::StringTooLong { len: 300 }))
        );
        assert_eq!(buf, before);
        frame(&Raw(7, vec![b'x'; PAYLOAD_MAX]), 2, &mut buf).unwrap();
        assert_eq!(decode(&buf[before.len()..]).unwrap().lsn, 2);
    }

    #[test]
    fn segment_headers_check_themselves() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[13] ^= 1;
        assert!(parse_segment_header(&bad).is_err());
    }
}
