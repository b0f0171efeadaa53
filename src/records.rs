//! The one decode point for the log's records: a record's kind (numbered
//! in [`crate::wal::kinds`]) names its owner, whose decoder reads the
//! payload. Start-up's replay and a checkpoint's tail
//! ([`crate::store::embedded`]), `stampede wal inspect` ([`crate::inspect`]) and the
//! fuzz targets all read records here, so a new kind is added in two
//! places: its number, and its arm below.

use crate::drops::record::DropRecord;
use crate::engine::Change;
use crate::events::record::RingRecord;
use crate::events::webhooks::OutboxRecord;
use crate::idempotency::KeyStoreRecord;
use crate::wal::kinds::{self, Owner};
use crate::wal::record::EncodeError;

/// A log record, decoded by its owner.
#[derive(Debug)]
pub enum Record<'a> {
    Change(Change<'a>),
    Key(KeyStoreRecord<'a>),
    Drop(DropRecord<'a>),
    Outbox(OutboxRecord<'a>),
    Ring(RingRecord<'a>),
}

impl<'a> Record<'a> {
    /// Decodes a record of `kind`; an error names what it was meant to be.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Record<'a>, String> {
        let owner = kinds::owner(kind)
            .ok_or_else(|| format!("a record of kind {kind}, which no owner has"))?;
        Ok(match owner {
            Owner::Engine => Record::Change(
                Change::decode(kind, payload)
                    .map_err(|e| format!("a record of kind {kind}: {e}"))?,
            ),
            Owner::Keys => Record::Key(
                KeyStoreRecord::decode(kind, payload)
                    .map_err(|e| format!("a key store record: {e}"))?,
            ),
            Owner::Drops => Record::Drop(
                DropRecord::decode(kind, payload).map_err(|e| format!("a drop record: {e}"))?,
            ),
            Owner::Outbox => Record::Outbox(
                OutboxRecord::decode(kind, payload)
                    .map_err(|e| format!("an outbox record: {e}"))?,
            ),
            Owner::Ring => Record::Ring(
                RingRecord::decode(kind, payload).map_err(|e| format!("a ring record: {e}"))?,
            ),
        })
    }

    /// One line for the audit trail (`stampede wal inspect`).
    pub fn describe(&self) -> String {
        match self {
            Record::Change(r) => r.describe(),
            Record::Key(r) => r.describe(),
            Record::Drop(r) => r.describe(),
            Record::Outbox(r) => r.describe(),
            Record::Ring(r) => r.describe(),
        }
    }

    /// Encodes it again, framed at `lsn` (the fuzzer's round trip).
    pub fn frame(&self, lsn: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use crate::wal::record::frame;
        match self {
            Record::Change(r) => frame(r, lsn, out),
            Record::Key(r) => r.frame(lsn, out),
            Record::Drop(r) => frame(r, lsn, out),
            Record::Outbox(r) => frame(r, lsn, out),
            Record::Ring(r) => frame(r, lsn, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_no_owner_has_is_an_error_naming_it() {
        let e = Record::decode(19, b"").unwrap_err();
        assert!(e.contains("kind 19"), "{e}");
        // A known kind with a payload its owner refuses names the owner.
        let e = Record::decode(kinds::DROP_PUT, b"\xff").unwrap_err();
        assert!(e.contains("a drop record"), "{e}");
    }
}
