//! The audit trail: `stampede wal inspect` (every record as a line) and
//! `stampede wal verify` (every record and checkpoint checked). Read-only,
//! safe on a stopped server's data directory. Each record's payload is
//! decoded by its owner (the engine's changes, the key store's answers);
//! one that does not decode is damage, as it would be at start-up.

use std::io::Write;

use crate::engine::HoldId;
use crate::records::Record;
use crate::wal::{self, DamageAt, Frame, Storage};

/// Which records `inspect` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records that name this SKU (its stock changes and the holds
    /// created on it).
    pub sku: Option<String>,
    /// Only records of this hold.
    pub hold: Option<HoldId>,
}

/// What reading the whole log and its checkpoints found.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub records: u64,
    pub segments: usize,
    pub next_lsn: u64,
    /// Every checkpoint file: name, LSN, whether its checksum is sound.
    pub checkpoints: Vec<(String, u64, bool)>,
    /// The first damage in the log, where reading stopped.
    pub damage: Option<DamageAt>,
}

impl Inspection {
    /// Nothing damaged: every record and checkpoint is sound.
    pub fn is_sound(&self) -> bool {
        self.damage.is_none() && self.checkpoints.iter().all(|c| c.2)
    }

    /// What an operator is told, a line each.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .checkpoints
            .iter()
            .map(|(file, lsn, sound)| match sound {
                true => format!("{file}: checkpoint at lsn {lsn}, checksum sound"),
                false => format!("{file}: checkpoint at lsn {lsn} fails its checksum"),
            })
            .collect();
        lines.push(format!(
            "{} records in {} segments, next lsn {}",
            self.records, self.segments, self.next_lsn
        ));
        match &self.damage {
            None => {}
            Some(d) if d.torn => lines.push(format!(
                "{}: torn write at offset {} ({}): start-up will cut these unacknowledged bytes",
                d.file, d.offset, d.what
            )),
            Some(d) => lines.push(format!(
                "{}: damaged at offset {} ({}): start-up will refuse this log (see serve --recovery)",
                d.file, d.offset, d.what
            )),
        }
        lines
    }
}

/// One record decoded by its owner: its line, and whether `filter` wants it.
fn describe(frame: &Frame<'_>, filter: &Filter) -> Result<(String, bool), String> {
    let record = Record::decode(frame.kind, frame.payload)?;
    let wanted = match &record {
        Record::Change(change) => {
            filter.sku.as_deref().is_none_or(|s| change.names_sku(s))
                && filter.hold.is_none_or(|h| change.hold_id() == Some(h))
        }
        Record::Drop(drop) => {
            filter.sku.as_deref().is_none_or(|s| match drop {
                crate::drops::record::DropRecord::Put { spec, .. } => {
                    spec.skus.iter().any(|k| k == s)
                }
                _ => false,
            }) && filter.hold.is_none()
        }
        Record::Key(_) | Record::Outbox(_) | Record::Ring(_) => {
            filter.sku.is_none() && filter.hold.is_none()
        }
    };
    Ok((record.describe(), wanted))
}

/// Reads every checkpoint and record in `storage`; with `out`, writes
/// `lsn file@offset description` for each record `filter` wants (a closed
/// `out`, as under `| head`, ends the listing, not the reading).
pub fn inspect(
    storage: &dyn Storage,
    filter: &Filter,
    mut out: Option<&mut dyn Write>,
) -> Result<Inspection, wal::Error> {
    let checkpoints = wal::snapshot::check_all(storage)?;
    let end = wal::read_log(storage, None, |file, offset, frame| {
        let (line, wanted) = describe(frame, filter)?;
        if let (Some(out), true) = (out.as_mut(), wanted) {
            let _ = writeln!(out, "{} {file}@{offset} {line}", frame.lsn);
        }
        Ok(())
    })?;
    Ok(Inspection {
        records: end.records,
        segments: end.segments,
        next_lsn: end.next_lsn,
        checkpoints,
        damage: end.damage,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest};
    use crate::wal::{Durability, Journal, RecoveryMode, SimStorage, Wal};

    /// A log with two SKUs, a hold, its confirm and a stored answer.
    fn log() -> (SimStorage, HoldId) {
        let storage = SimStorage::new();
        let report = wal::recover(&storage, RecoveryMode::Strict, None, |_| Ok(())).unwrap();
        let options = wal::Options {
            durability: Durability::Fsync,
            segment_bytes_max: 1 << 20,
        };
        let log = Arc::new(Wal::open(Arc::new(storage.clone()), options, &report).unwrap());
        let mut engine = Engine::new(Options::default(), Arc::new(ManualClock::new(1_000)));
        engine.attach_journal(log.clone());
        engine.set_stock("a", 5, None).unwrap();
        engine.set_stock("b", 5, None).unwrap();
        let items = [ItemRequest { sku: "a", qty: 2 }];
        let hold = engine
            .reserve(&ReserveRequest {
                customer_id: "c-1",
                items: &items,
                ttl_ms: None,
                fill: Fill::All,
            })
            .unwrap();
        engine.confirm(hold.id, Some("o-1")).unwrap();
        log.append(&crate::idempotency::KeyRecord {
            key: "k-1",
            fingerprint: 1,
            status: 201,
            location: None,
            body: b"{}",
            at_ms: 1_000,
        })
        .unwrap();
        log.close().unwrap();
        (storage, hold.id)
    }

    fn lines(storage: &SimStorage, filter: &Filter) -> (Vec<String>, Inspection) {
        let mut out = Vec::new();
        let found = inspect(storage, filter, Some(&mut out)).unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), found)
    }

    #[test]
    fn every_record_is_a_line_and_filters_pick_them() {
        let (storage, id) = log();
        let (all, found) = lines(&storage, &Filter::default());
        assert!(found.is_sound());
        assert_eq!((all.len(), found.records), (5, 5));
        assert!(all[0].starts_with("1 00000000000000000001.wal@24 sku-set sku=a stock=5"));
        assert!(all[2].contains(&format!("hold-created id={id} customer=c-1 items=ax2")));
        assert!(all[3].contains("hold-confirmed") && all[3].contains("order_ref=o-1"));
        assert!(all[4].contains("idempotency-stored key=k-1 status=201 body_bytes=2"));
        let by_sku = Filter {
            sku: Some("b".into()),
            ..Filter::default()
        };
        assert_eq!(lines(&storage, &by_sku).0.len(), 1);
        let by_hold = Filter {
            hold: Some(id),
            ..Filter::default()
        };
        assert_eq!(lines(&storage, &by_hold).0.len(), 2);
    }

    #[test]
    fn a_record_its_owner_cannot_read_is_damage_naming_the_offset() {
        let (storage, _) = log();
        let name = wal::segment_name(1);
        let mut bytes = storage.bytes(&name).unwrap();
        // A sound frame (valid CRC) of a kind nobody writes, at the end.
        struct Unknown;
        impl wal::Entry for Unknown {
            fn kind(&self) -> u8 {
                42
            }
            fn encode(&self, _: &mut Vec<u8>) -> Result<(), crate::codec::Error> {
                Ok(())
            }
        }
        let at = bytes.len();
        wal::record::frame(&Unknown, 6, &mut bytes).unwrap();
        storage.set_bytes(&name, bytes);
        let found = inspect(&storage, &Filter::default(), None).unwrap();
        let damage = found.damage.clone().expect("damage");
        assert_eq!((damage.offset, damage.torn), (at as u64, false));
        assert!(!found.is_sound());
        assert!(found
            .summary()
            .last()
            .unwrap()
            .contains("start-up will refuse"));
    }
}
