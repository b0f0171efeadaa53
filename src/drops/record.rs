//! The drops' log records (kinds 8 to 10; the engine's are 1 to 6, the
//! key store's 7). A checkpoint's drop image is these same records, in
//! the order that rebuilds each drop.
//!
//! ```text
//! put    (8):  drop str | n u16 | n × sku str | prequeue_opens_at_ms u64 | opens_at_ms u64
//!              | closes? u8 (+ u64) | admit_per_s u64 (0: all at once) | seed bytes (32) | at_ms u64
//! join   (9):  drop str | customer_id str | at_ms u64
//! opened (10): drop str | at_ms u64
//! admitted (13): drop str | through u64 (positions 1..=through admitted) | at_ms u64
//! ```
//!
//! The seed is in the log from the drop's creation: it is on the server's
//! disk, never in an answer before the opening.

use std::borrow::Cow;

use crate::codec::{self, Put, Reader};
use crate::wal;

use super::order::SEED_BYTES;
use super::Spec;

pub use crate::wal::kinds::{
    DROP_ADMITTED as ADMITTED_KIND, DROP_JOIN as JOIN_KIND, DROP_OPENED as OPENED_KIND,
    DROP_PUT as PUT_KIND,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropRecord<'a> {
    /// A drop created or changed (while scheduled; the seed never changes).
    Put {
        drop: &'a str,
        spec: Cow<'a, Spec>,
        seed: [u8; SEED_BYTES],
        at_ms: u64,
    },
    /// A customer joined the line.
    Join {
        drop: &'a str,
        customer_id: &'a str,
        at_ms: u64,
    },
    /// The pre-queue was ordered and admissions began.
    Opened { drop: &'a str, at_ms: u64 },
    /// Positions 1 to `through` were admitted by `at_ms` (written as the
    /// schedule admits them, at most every few hundred ms).
    Admitted {
        drop: &'a str,
        through: u64,
        at_ms: u64,
    },
}

impl<'a> DropRecord<'a> {
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<DropRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = match kind {
            PUT_KIND => {
                let drop = r.str()?;
                let n = r.u16()?;
                let mut skus = Vec::with_capacity(usize::from(n).min(1024));
                for _ in 0..n {
                    skus.push(r.str()?.to_owned());
                }
                let prequeue_opens_at_ms = r.u64()?;
                let opens_at_ms = r.u64()?;
                let closes_at_ms = match r.u8()? {
                    0 => None,
                    1 => Some(r.u64()?),
                    _ => return Err(codec::Error::Malformed("a drop's closing flag")),
                };
                let admit_per_s = match r.u64()? {
                    0 => None,
                    n => Some(n),
                };
                let seed = r
                    .bytes()?
                    .try_into()
                    .map_err(|_| codec::Error::Malformed("a drop's seed is 32 bytes"))?;
                DropRecord::Put {
                    drop,
                    spec: Cow::Owned(Spec {
                        skus,
                        prequeue_opens_at_ms,
                        opens_at_ms,
                        closes_at_ms,
                        admit_per_s,
                    }),
                    seed,
                    at_ms: r.u64()?,
                }
            }
            JOIN_KIND => DropRecord::Join {
                drop: r.str()?,
                customer_id: r.str()?,
                at_ms: r.u64()?,
            },
            OPENED_KIND => DropRecord::Opened {
                drop: r.str()?,
                at_ms: r.u64()?,
            },
            ADMITTED_KIND => DropRecord::Admitted {
                drop: r.str()?,
                through: r.u64()?,
                at_ms: r.u64()?,
            },
            _ => return Err(codec::Error::Malformed("not a drop record")),
        };
        r.finish()?;
        Ok(record)
    }

    pub fn drop_name(&self) -> &'a str {
        match self {
            DropRecord::Put { drop, .. }
            | DropRecord::Join { drop, .. }
            | DropRecord::Opened { drop, .. }
            | DropRecord::Admitted { drop, .. } => drop,
        }
    }

    pub fn at_ms(&self) -> u64 {
        match self {
            DropRecord::Put { at_ms, .. }
            | DropRecord::Join { at_ms, .. }
            | DropRecord::Opened { at_ms, .. }
            | DropRecord::Admitted { at_ms, .. } => *at_ms,
        }
    }

    /// One line for the audit trail (`stampede wal inspect`); the seed is
    /// shown as its commitment only.
    pub fn describe(&self) -> String {
        match self {
            DropRecord::Put {
                drop,
                spec,
                seed,
                at_ms,
            } => format!(
                "drop-put drop={drop} skus={} prequeue_opens_at_ms={} opens_at_ms={} closes_at_ms={} admit_per_s={} seed_sha256={} at_ms={at_ms}",
                spec.skus.join(","),
                spec.prequeue_opens_at_ms,
                spec.opens_at_ms,
                spec.closes_at_ms.map_or("none".to_owned(), |c| c.to_string()),
                spec.admit_per_s.map_or("all".to_owned(), |r| r.to_string()),
                super::order::hex(&super::order::commitment(seed)),
            ),
            DropRecord::Join {
                drop,
                customer_id,
                at_ms,
            } => format!("drop-join drop={drop} customer={customer_id} at_ms={at_ms}"),
            DropRecord::Opened { drop, at_ms } => format!("drop-opened drop={drop} at_ms={at_ms}"),
            DropRecord::Admitted {
                drop,
                through,
                at_ms,
            } => format!("drop-admitted drop={drop} through_position={through} at_ms={at_ms}"),
        }
    }
}

impl wal::Entry for DropRecord<'_> {
    fn kind(&self) -> u8 {
        match self {
            DropRecord::Put { .. } => PUT_KIND,
            DropRecord::Join { .. } => JOIN_KIND,
            DropRecord::Opened { .. } => OPENED_KIND,
            DropRecord::Admitted { .. } => ADMITTED_KIND,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        match self {
            DropRecord::Put {
                drop,
                spec,
                seed,
                at_ms,
            } => {
                out.put_str(drop)?;
                let n = u16::try_from(spec.skus.len())
                    .map_err(|_| codec::Error::Malformed("more than 65535 SKUs in a drop"))?;
                out.put_u16(n);
                for sku in &spec.skus {
                    out.put_str(sku)?;
                }
                out.put_u64(spec.prequeue_opens_at_ms);
                out.put_u64(spec.opens_at_ms);
                match spec.closes_at_ms {
                    None => out.put_u8(0),
                    Some(c) => {
                        out.put_u8(1);
                        out.put_u64(c);
                    }
                }
                out.put_u64(spec.admit_per_s.unwrap_or(0));
                out.put_bytes(seed)?;
                out.put_u64(*at_ms);
            }
            DropRecord::Join {
                drop,
                customer_id,
                at_ms,
            } => {
                out.put_str(drop)?;
                out.put_str(customer_id)?;
                out.put_u64(*at_ms);
            }
            DropRecord::Opened { drop, at_ms } => {
                out.put_str(drop)?;
                out.put_u64(*at_ms);
            }
            DropRecord::Admitted {
                drop,
                through,
                at_ms,
            } => {
                out.put_str(drop)?;
                out.put_u64(*through);
                out.put_u64(*at_ms);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Entry;

    #[test]
    fn records_round_trip() {
        let spec = Spec {
            skus: vec!["a".into(), "b-2".into()],
            prequeue_opens_at_ms: 10,
            opens_at_ms: 20,
            closes_at_ms: Some(30),
            admit_per_s: Some(50),
        };
        for record in [
            DropRecord::Put {
                drop: "d",
                spec: Cow::Borrowed(&spec),
                seed: [7; 32],
                at_ms: 5,
            },
            DropRecord::Put {
                drop: "d",
                spec: Cow::Owned(Spec {
                    closes_at_ms: None,
                    admit_per_s: None,
                    ..spec.clone()
                }),
                seed: [9; 32],
                at_ms: 6,
            },
            DropRecord::Join {
                drop: "d",
                customer_id: "c-1",
                at_ms: 11,
            },
            DropRecord::Opened {
                drop: "d",
                at_ms: 20,
            },
            DropRecord::Admitted {
                drop: "d",
                through: 7,
                at_ms: 21,
            },
        ] {
            let mut bytes = Vec::new();
            record.encode(&mut bytes).unwrap();
            assert_eq!(DropRecord::decode(record.kind(), &bytes).unwrap(), record);
            // Cut short anywhere: an error, never a panic or a wrong record.
            for cut in 0..bytes.len() {
                assert!(DropRecord::decode(record.kind(), &bytes[..cut]).is_err());
            }
        }
    }
}
