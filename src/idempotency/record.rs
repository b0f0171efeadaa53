//! The key store's log records: a stored answer and a key's claim.

use crate::codec::{self, put_opt_str, Put, Reader};
use crate::wal;

use super::{CLAIM_KIND, RECORD_KIND};

/// The first completed answer to a request with an `Idempotency-Key`, as
/// the log (and a checkpoint's key image) holds it:
///
/// ```text
/// key str | fingerprint u128 | status u16 | at_ms u64 | location opt str | body bytes
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord<'a> {
    pub key: &'a str,
    /// 128-bit fingerprint of method, path and body.
    pub fingerprint: u128,
    pub status: u16,
    pub location: Option<&'a str>,
    pub body: &'a [u8],
    pub at_ms: u64,
}

impl<'a> KeyRecord<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<KeyRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = KeyRecord {
            key: r.str()?,
            fingerprint: r.u128()?,
            status: r.u16()?,
            at_ms: r.u64()?,
            location: r.opt_str()?,
            body: r.bytes()?,
        };
        r.finish()?;
        Ok(record)
    }

    /// One line for the audit trail (`stampede wal inspect`).
    pub fn describe(&self) -> String {
        format!(
            "idempotency-stored key={} status={} body_bytes={} at_ms={}",
            self.key,
            self.status,
            self.body.len(),
            self.at_ms
        )
    }
}

impl wal::Entry for KeyRecord<'_> {
    fn kind(&self) -> u8 {
        RECORD_KIND
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        out.put_str(self.key)?;
        out.put_u128(self.fingerprint);
        out.put_u16(self.status);
        out.put_u64(self.at_ms);
        put_opt_str(out, self.location)?;
        out.put_bytes(self.body)
    }
}

/// A key taken by a request about to run (embedded store), logged before
/// any change the request makes, or given back by one that ended with
/// nothing to keep (a 5xx). The log is read as a prefix, so a change that
/// survives a crash always has its claim before it: a claim replayed with
/// neither an answer nor a give-back after it is a request cut off after
/// it may have made its change, and its key is never run again (it
/// answers 409 until its ttl ends), where a retry could make the change
/// twice.
///
/// ```text
/// key str | fingerprint u128 | at_ms u64 | given_back u8
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord<'a> {
    pub key: &'a str,
    pub fingerprint: u128,
    pub at_ms: u64,
    pub given_back: bool,
}

impl<'a> ClaimRecord<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<ClaimRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = ClaimRecord {
            key: r.str()?,
            fingerprint: r.u128()?,
            at_ms: r.u64()?,
            given_back: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(codec::Error::Malformed("a claim's given-back flag")),
            },
        };
        r.finish()?;
        Ok(record)
    }

    /// One line for the audit trail (`stampede wal inspect`).
    pub fn describe(&self) -> String {
        let what = if self.given_back {
            "idempotency-given-back"
        } else {
            "idempotency-claimed"
        };
        format!("{what} key={} at_ms={}", self.key, self.at_ms)
    }
}

impl wal::Entry for ClaimRecord<'_> {
    fn kind(&self) -> u8 {
        CLAIM_KIND
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        out.put_str(self.key)?;
        out.put_u128(self.fingerprint);
        out.put_u64(self.at_ms);
        out.put_u8(u8::from(self.given_back));
        Ok(())
    }
}

/// A record of the key store, decoded.
#[derive(Debug)]
pub enum KeyStoreRecord<'a> {
    Answer(KeyRecord<'a>),
    Claim(ClaimRecord<'a>),
}

impl<'a> KeyStoreRecord<'a> {
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<KeyStoreRecord<'a>, codec::Error> {
        Ok(match kind {
            CLAIM_KIND => KeyStoreRecord::Claim(ClaimRecord::decode(payload)?),
            _ => KeyStoreRecord::Answer(KeyRecord::decode(payload)?),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            KeyStoreRecord::Answer(r) => r.describe(),
            KeyStoreRecord::Claim(r) => r.describe(),
        }
    }

    /// Encodes it again, framed at `lsn` (the fuzzer's round trip).
    pub fn frame(&self, lsn: u64, out: &mut Vec<u8>) -> Result<(), wal::record::EncodeError> {
        match self {
            KeyStoreRecord::Answer(r) => wal::record::frame(r, lsn, out),
            KeyStoreRecord::Claim(r) => wal::record::frame(r, lsn, out),
        }
    }
}
