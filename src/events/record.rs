//! The event ring's records, in a checkpoint's tail only (never in the
//! log: what the log holds, replay tells again): the ring's evicted id,
//! then each event kept, so a restart resumes the feed where it was.
//!
//! ```text
//! ring-evicted (17): id u64 (the newest id no longer kept; 0: none)
//! ring-event   (18): id u64 | lsn u64 | kind u8 | frame bytes (as sent)
//! ```

use super::Kind;
use crate::codec::{self, Put, Reader};
use crate::wal;
use crate::wal::kinds::{RING_EVENT, RING_EVICTED};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingRecord<'a> {
    Evicted {
        id: u64,
    },
    Event {
        id: u64,
        lsn: u64,
        kind: Kind,
        frame: &'a [u8],
    },
}

impl<'a> RingRecord<'a> {
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<RingRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = match kind {
            RING_EVICTED => RingRecord::Evicted { id: r.u64()? },
            RING_EVENT => RingRecord::Event {
                id: r.u64()?,
                lsn: r.u64()?,
                kind: *Kind::ALL
                    .get(usize::from(r.u8()?))
                    .ok_or(codec::Error::Malformed("an event kind"))?,
                frame: r.bytes()?,
            },
            _ => return Err(codec::Error::Malformed("not a ring record")),
        };
        r.finish()?;
        Ok(record)
    }

    pub fn describe(&self) -> String {
        match self {
            RingRecord::Evicted { id } => format!("ring-evicted id={id}"),
            RingRecord::Event { id, lsn, kind, .. } => {
                format!("ring-event id={id} lsn={lsn} type={}", kind.as_str())
            }
        }
    }
}

impl wal::Entry for RingRecord<'_> {
    fn kind(&self) -> u8 {
        match self {
            RingRecord::Evicted { .. } => RING_EVICTED,
            RingRecord::Event { .. } => RING_EVENT,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        match self {
            RingRecord::Evicted { id } => {
                out.put_u64(*id);
                Ok(())
            }
            RingRecord::Event {
                id,
                lsn,
                kind,
                frame,
            } => {
                out.put_u64(*id);
                out.put_u64(*lsn);
                out.put_u8(*kind as u8);
                out.put_bytes(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Entry;

    #[test]
    fn ring_records_round_trip_and_a_cut_one_is_an_error() {
        for record in [
            RingRecord::Evicted { id: 7 << 16 },
            RingRecord::Event {
                id: (9 << 16) | 2,
                lsn: 9,
                kind: Kind::PaymentOrphaned,
                frame: b"id: 589826\nevent: payment.orphaned\ndata: {}\n\n",
            },
        ] {
            let mut payload = Vec::new();
            record.encode(&mut payload).unwrap();
            assert_eq!(RingRecord::decode(record.kind(), &payload).unwrap(), record);
            for cut in 0..payload.len() {
                assert!(RingRecord::decode(record.kind(), &payload[..cut]).is_err());
            }
        }
    }
}
