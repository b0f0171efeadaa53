//! The on-disk format: segment headers and records.
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
//! len u32 | !len u32 | crc32c u32 | lsn u64 | type u8 | payload (len bytes)
//! ```
//!
//! all little-endian. `!len` lets a reader tell a damaged length from a
//! record cut short; the CRC covers lsn, type and payload. LSNs start at 1
//! and go up by one per record, across segments. Strings are a u8 length
//! and bytes (identifiers are at most 128 bytes); ids are epoch u32, shard
//! u16, slot u32, generation u32.

use smallvec::SmallVec;

use crate::engine::HoldId;

pub const SEGMENT_MAGIC: [u8; 8] = *b"STMPWAL1";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 21;
/// Largest payload a record may have; anything larger is corruption.
pub const PAYLOAD_MAX: usize = 1 << 20;
/// Bytes an `IdempotencyStored` record needs besides its answer's body:
/// type, key (1 + 128), fingerprint, status, time, location (2 + 255),
/// body length. `idempotency.answer_bytes_max` leaves at least this much
/// of [`PAYLOAD_MAX`] free, so a stored answer within the limit always fits.
pub const IDEMPOTENCY_OVERHEAD_MAX: usize = 1 + 129 + 16 + 2 + 8 + 256 + 4;

/// A record that cannot be encoded: nothing of it was written anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a log record of {payload_bytes} bytes is over the {PAYLOAD_MAX}-byte limit")]
    TooLarge { payload_bytes: usize },
    #[error("a string of {len} bytes in a log record is over the 255-byte limit")]
    StringTooLong { len: usize },
}

/// One change to the engine's state. Values are results (the stock after an
/// adjust, the expiry after an extend), so replaying a record is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A SKU's stock and limit were set (by set or adjust).
    SkuSet {
        sku: &'a str,
        stock: u64,
        customer_limit: u64,
        at_ms: u64,
    },
    HoldCreated {
        id: HoldId,
        customer: &'a str,
        items: SmallVec<[(&'a str, u32); 4]>,
        created_at_ms: u64,
        expires_at_ms: u64,
    },
    HoldConfirmed {
        id: HoldId,
        order_ref: Option<&'a str>,
        at_ms: u64,
    },
    HoldReleased {
        id: HoldId,
        at_ms: u64,
    },
    HoldExpired {
        id: HoldId,
        at_ms: u64,
    },
    HoldExtended {
        id: HoldId,
        expires_at_ms: u64,
        at_ms: u64,
    },
    /// The first completed response to a request with an `Idempotency-Key`
    /// (the API's, not the engine's: replay hands it to the key store).
    IdempotencyStored {
        key: &'a str,
        /// 128-bit fingerprint of method, path and body.
        fingerprint: u128,
        status: u16,
        location: Option<&'a str>,
        body: &'a [u8],
        at_ms: u64,
    },
}

const T_SKU_SET: u8 = 1;
const T_HOLD_CREATED: u8 = 2;
const T_HOLD_CONFIRMED: u8 = 3;
const T_HOLD_RELEASED: u8 = 4;
const T_HOLD_EXPIRED: u8 = 5;
const T_HOLD_EXTENDED: u8 = 6;
const T_IDEMPOTENCY_STORED: u8 = 7;

impl Record<'_> {
    /// The hold this record is about, if any (for `wal inspect --hold`).
    pub fn hold_id(&self) -> Option<HoldId> {
        match self {
            Record::SkuSet { .. } | Record::IdempotencyStored { .. } => None,
            Record::HoldCreated { id, .. }
            | Record::HoldConfirmed { id, .. }
            | Record::HoldReleased { id, .. }
            | Record::HoldExpired { id, .. }
            | Record::HoldExtended { id, .. } => Some(*id),
        }
    }

    /// When the change was made.
    pub fn at_ms(&self) -> u64 {
        match self {
            Record::SkuSet { at_ms, .. }
            | Record::HoldConfirmed { at_ms, .. }
            | Record::HoldReleased { at_ms, .. }
            | Record::HoldExpired { at_ms, .. }
            | Record::HoldExtended { at_ms, .. }
            | Record::IdempotencyStored { at_ms, .. } => *at_ms,
            Record::HoldCreated { created_at_ms, .. } => *created_at_ms,
        }
    }

    /// Whether the record names `sku` (for `wal inspect --sku`). Records of
    /// a hold after its creation name only the hold.
    pub fn names_sku(&self, sku: &str) -> bool {
        match self {
            Record::SkuSet { sku: s, .. } => *s == sku,
            Record::HoldCreated { items, .. } => items.iter().any(|(s, _)| *s == sku),
            _ => false,
        }
    }

    /// Appends the whole record (header and payload) to `buf`. On an error
    /// `buf` is left exactly as it was.
    pub fn encode(&self, lsn: u64, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = buf.len();
        let result = self.encode_at(start, buf);
        match result {
            Ok(()) => seal(&mut buf[start..], lsn),
            Err(_) => buf.truncate(start),
        }
        result
    }

    /// Encodes the record at `buf[start..]` with LSN 0 and no length or CRC
    /// yet ([`seal`] fills them): the log encodes outside its shared
    /// buffer's lock and seals once it knows the LSN.
    fn encode_at(&self, start: usize, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        // len, !len, crc, lsn: filled by `seal`.
        buf.extend_from_slice(&[0u8; 20]);
        match self {
            Record::SkuSet {
                sku,
                stock,
                customer_limit,
                at_ms,
            } => {
                buf.push(T_SKU_SET);
                put_str(buf, sku)?;
                put_u64(buf, *stock);
                put_u64(buf, *customer_limit);
                put_u64(buf, *at_ms);
            }
            Record::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            } => {
                buf.push(T_HOLD_CREATED);
                put_id(buf, *id);
                put_str(buf, customer)?;
                put_u64(buf, *created_at_ms);
                put_u64(buf, *expires_at_ms);
                let n = u16::try_from(items.len()).map_err(|_| EncodeError::TooLarge {
                    payload_bytes: items.len(),
                })?;
                buf.extend_from_slice(&n.to_le_bytes());
                for (sku, qty) in items {
                    put_str(buf, sku)?;
                    buf.extend_from_slice(&qty.to_le_bytes());
                }
            }
            Record::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            } => {
                buf.push(T_HOLD_CONFIRMED);
                put_id(buf, *id);
                put_u64(buf, *at_ms);
                match order_ref {
                    None => buf.push(0),
                    Some(r) => {
                        buf.push(1);
                        put_str(buf, r)?;
                    }
                }
            }
            Record::HoldReleased { id, at_ms } => {
                buf.push(T_HOLD_RELEASED);
                put_id(buf, *id);
                put_u64(buf, *at_ms);
            }
            Record::HoldExpired { id, at_ms } => {
                buf.push(T_HOLD_EXPIRED);
                put_id(buf, *id);
                put_u64(buf, *at_ms);
            }
            Record::HoldExtended {
                id,
                expires_at_ms,
                at_ms,
            } => {
                buf.push(T_HOLD_EXTENDED);
                put_id(buf, *id);
                put_u64(buf, *expires_at_ms);
                put_u64(buf, *at_ms);
            }
            Record::IdempotencyStored {
                key,
                fingerprint,
                status,
                location,
                body,
                at_ms,
            } => {
                buf.push(T_IDEMPOTENCY_STORED);
                put_str(buf, key)?;
                buf.extend_from_slice(&fingerprint.to_le_bytes());
                buf.extend_from_slice(&status.to_le_bytes());
                put_u64(buf, *at_ms);
                match location {
                    None => buf.push(0),
                    Some(l) => {
                        buf.push(1);
                        put_str(buf, l)?;
                    }
                }
                if body.len() > PAYLOAD_MAX {
                    return Err(EncodeError::TooLarge {
                        payload_bytes: body.len(),
                    });
                }
                buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                buf.extend_from_slice(body);
            }
        }
        let payload_bytes = buf.len() - start - RECORD_HEADER_LEN;
        if payload_bytes > PAYLOAD_MAX {
            return Err(EncodeError::TooLarge { payload_bytes });
        }
        Ok(())
    }
}

/// Fills in the LSN, length and CRC of one record encoded by
/// [`Record::encode`] (`record` is exactly its bytes).
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
    /// The CRC matches but the contents make no sense (a bug or tampering).
    #[error("malformed record contents")]
    Malformed,
}

/// A record read back: its LSN, the record, and its total length in bytes.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub lsn: u64,
    pub record: Record<'a>,
    pub len: usize,
}

/// Reads the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, Damage> {
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
    let lsn = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let mut r = Reader {
        bytes: &bytes[RECORD_HEADER_LEN..total],
    };
    let record = match bytes[20] {
        T_SKU_SET => Record::SkuSet {
            sku: r.str()?,
            stock: r.u64()?,
            customer_limit: r.u64()?,
            at_ms: r.u64()?,
        },
        T_HOLD_CREATED => {
            let id = r.id()?;
            let customer = r.str()?;
            let created_at_ms = r.u64()?;
            let expires_at_ms = r.u64()?;
            let n = r.u16()?;
            let mut items = SmallVec::new();
            for _ in 0..n {
                items.push((r.str()?, r.u32()?));
            }
            Record::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            }
        }
        T_HOLD_CONFIRMED => {
            let id = r.id()?;
            let at_ms = r.u64()?;
            let order_ref = match r.u8()? {
                0 => None,
                1 => Some(r.str()?),
                _ => return Err(Damage::Malformed),
            };
            Record::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            }
        }
        T_HOLD_RELEASED => Record::HoldReleased {
            id: r.id()?,
            at_ms: r.u64()?,
        },
        T_HOLD_EXPIRED => Record::HoldExpired {
            id: r.id()?,
            at_ms: r.u64()?,
        },
        T_HOLD_EXTENDED => Record::HoldExtended {
            id: r.id()?,
            expires_at_ms: r.u64()?,
            at_ms: r.u64()?,
        },
        T_IDEMPOTENCY_STORED => {
            let key = r.str()?;
            let fingerprint = u128::from_le_bytes(r.take(16)?.try_into().expect("16 bytes"));
            let status = r.u16()?;
            let at_ms = r.u64()?;
            let location = match r.u8()? {
                0 => None,
                1 => Some(r.str()?),
                _ => return Err(Damage::Malformed),
            };
            let len = r.u32()? as usize;
            Record::IdempotencyStored {
                key,
                fingerprint,
                status,
                location,
                body: r.take(len)?,
                at_ms,
            }
        }
        _ => return Err(Damage::Malformed),
    };
    if !r.bytes.is_empty() {
        return Err(Damage::Malformed);
    }
    Ok(Decoded {
        lsn,
        record,
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

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(s.len()).map_err(|_| EncodeError::StringTooLong { len: s.len() })?;
    buf.push(len);
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_id(buf: &mut Vec<u8>, id: HoldId) {
    buf.extend_from_slice(&id.epoch.to_le_bytes());
    buf.extend_from_slice(&id.shard.to_le_bytes());
    buf.extend_from_slice(&id.slot.to_le_bytes());
    buf.extend_from_slice(&id.generation.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damage> {
        if self.bytes.len() < n {
            return Err(Damage::Malformed);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Damage> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, Damage> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Damage> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn str(&mut self) -> Result<&'a str, Damage> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| Damage::Malformed)
    }

    fn id(&mut self) -> Result<HoldId, Damage> {
        Ok(HoldId {
            epoch: self.u32()?,
            shard: self.u16()?,
            slot: self.u32()?,
            generation: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        let id = HoldId {
            epoch: 3,
            shard: 7,
            slot: 99,
            generation: 2,
        };
        vec![
            Record::SkuSet {
                sku: "hot-1",
                stock: (1 << 53) - 1,
                customer_limit: 2,
                at_ms: 5,
            },
            Record::HoldCreated {
                id,
                customer: "c-42",
                items: smallvec::smallvec![("hot-1", 1), ("b", 1000)],
                created_at_ms: 10,
                expires_at_ms: 600_010,
            },
            Record::HoldConfirmed {
                id,
                order_ref: Some("order-7"),
                at_ms: 11,
            },
            Record::HoldConfirmed {
                id,
                order_ref: None,
                at_ms: 11,
            },
            Record::HoldReleased { id, at_ms: 12 },
            Record::HoldExpired { id, at_ms: 13 },
            Record::HoldExtended {
                id,
                expires_at_ms: 99,
                at_ms: 14,
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let mut buf = Vec::new();
        for (i, r) in samples().iter().enumerate() {
            r.encode(i as u64 + 1, &mut buf).unwrap();
        }
        let mut at = 0;
        let expected = samples();
        for (i, r) in expected.iter().enumerate() {
            let d = decode(&buf[at..]).unwrap();
            assert_eq!(d.lsn, i as u64 + 1);
            assert_eq!(format!("{:?}", d.record), format!("{r:?}"));
            at += d.len;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn damage_is_classified() {
        let mut buf = Vec::new();
        samples()[1].encode(1, &mut buf).unwrap();
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
    fn a_record_too_large_is_an_error_and_leaves_the_buffer_as_it_was() {
        let mut buf = Vec::new();
        samples()[0].encode(1, &mut buf).unwrap();
        let before = buf.clone();
        let body = vec![b'x'; PAYLOAD_MAX];
        let too_large = Record::IdempotencyStored {
            key: "k",
            fingerprint: 1,
            status: 200,
            location: None,
            body: &body,
            at_ms: 1,
        };
        assert!(matches!(
            too_large.encode(2, &mut buf),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(buf, before);
        let long = "x".repeat(300);
        let bad = Record::SkuSet {
            sku: &long,
            stock: 1,
            customer_limit: 0,
            at_ms: 1,
        };
        assert_eq!(
            bad.encode(2, &mut buf),
            Err(EncodeError::StringTooLong { len: 300 })
        );
        assert_eq!(buf, before);
        // The largest answer the limit allows still fits one record.
        let body = vec![b'x'; PAYLOAD_MAX - IDEMPOTENCY_OVERHEAD_MAX];
        let key = "k".repeat(128);
        let location = "l".repeat(255);
        Record::IdempotencyStored {
            key: &key,
            fingerprint: 1,
            status: 200,
            location: Some(&location),
            body: &body,
            at_ms: 1,
        }
        .encode(2, &mut buf)
        .unwrap();
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
