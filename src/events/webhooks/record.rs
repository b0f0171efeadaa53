//! The outbox's log records: an event queued for the endpoints that want
//! it, and a delivery's end.

use super::{Kind, DONE_KIND, QUEUED_KIND};
use crate::codec::{self, Put, Reader};
use crate::wal;

/// The outbox's log records.
///
/// ```text
/// queued (11): id u64 | kind u8 | at_ms u64 | data bytes (the event's JSON)
/// done   (12): id u64 | url str | outcome u8 (0 delivered, 1 given up)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxRecord<'a> {
    Queued {
        id: u64,
        kind: Kind,
        at_ms: u64,
        data: &'a [u8],
    },
    Done {
        id: u64,
        url: &'a str,
        gave_up: bool,
    },
}

impl<'a> OutboxRecord<'a> {
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<OutboxRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = match kind {
            QUEUED_KIND => OutboxRecord::Queued {
                id: r.u64()?,
                kind: *Kind::ALL
                    .get(usize::from(r.u8()?))
                    .ok_or(codec::Error::Malformed("an event kind"))?,
                at_ms: r.u64()?,
                data: r.bytes()?,
            },
            DONE_KIND => OutboxRecord::Done {
                id: r.u64()?,
                url: r.str()?,
                gave_up: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(codec::Error::Malformed("a delivery outcome")),
                },
            },
            _ => return Err(codec::Error::Malformed("not an outbox record")),
        };
        r.finish()?;
        Ok(record)
    }

    pub fn describe(&self) -> String {
        match self {
            OutboxRecord::Queued {
                id, kind, at_ms, ..
            } => {
                format!(
                    "webhook-queued id={id} type={} at_ms={at_ms}",
                    kind.as_str()
                )
            }
            OutboxRecord::Done { id, url, gave_up } => format!(
                "webhook-{} id={id} url={url}",
                if *gave_up { "gave-up" } else { "delivered" }
            ),
        }
    }
}

impl wal::Entry for OutboxRecord<'_> {
    fn kind(&self) -> u8 {
        match self {
            OutboxRecord::Queued { .. } => QUEUED_KIND,
            OutboxRecord::Done { .. } => DONE_KIND,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        match self {
            OutboxRecord::Queued {
                id,
                kind,
                at_ms,
                data,
            } => {
                out.put_u64(*id);
                out.put_u8(*kind as u8);
                out.put_u64(*at_ms);
                out.put_bytes(data)
            }
            OutboxRecord::Done { id, url, gave_up } => {
                out.put_u64(*id);
                out.put_str(url)?;
                out.put_u8(u8::from(*gave_up));
                Ok(())
            }
        }
    }
}
