//! Reading the log back at start-up.
//!
//! Segments are read in LSN order and every record is handed to the
//! caller (the engine's replay). What may be wrong, and what happens:
//!
//! - **A torn tail**: the end of the last segment holds a record that is
//!   cut short, or damaged with nothing but zeros after it. That is what a
//!   crash mid-write leaves; those bytes were never acknowledged. The
//!   segment is cut there (logged with file and offset) and start-up goes on.
//! - **Damage anywhere else** (a bad checksum or length with data after
//!   it, a gap in LSNs, a malformed record): start-up stops with an error
//!   naming the file and offset, because acknowledged changes would be
//!   lost silently. `RecoveryMode::TruncateCorrupt`, an explicit operator
//!   choice, cuts the log at the first damage instead and drops what follows.

use super::record::{self, Damage, Frame, SEGMENT_HEADER_LEN};
use super::storage::Storage;
use super::Error;

/// What recovery does about damage that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Stop start-up with an error naming file and offset.
    #[default]
    Strict,
    /// Cut the log at the first damage and drop everything after it.
    TruncateCorrupt,
}

/// Where the log ended and what recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// LSN the next appended record gets.
    pub next_lsn: u64,
    /// The segment to go on appending to, if any.
    pub tail_segment: Option<String>,
    pub segments: usize,
    pub records: u64,
    /// A torn tail cut off: file and offset.
    pub torn_tail: Option<(String, u64)>,
    /// Damage cut off under `TruncateCorrupt`: file, offset, what.
    pub cut_corruption: Option<(String, u64, String)>,
}

/// Damage found while reading the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageAt {
    pub file: String,
    pub offset: u64,
    pub what: String,
    /// The end of a torn write in the last segment (start-up cuts it).
    pub torn: bool,
    /// Index (in LSN order) of the damaged segment.
    segment: usize,
}

/// How far [`read_log`] got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEnd {
    pub next_lsn: u64,
    pub tail_segment: Option<String>,
    pub segments: usize,
    pub records: u64,
    /// LSN the first segment starts at.
    pub first_lsn: Option<u64>,
    /// The first damage, where reading stopped.
    pub damage: Option<DamageAt>,
    names: Vec<String>,
}

/// Reads the log without changing it, calling `visit(file, offset,
/// frame)` for each sound record in LSN order from `from_lsn` on (a
/// snapshot covers the ones before; `None`: from wherever the log starts),
/// and stops at the first damage (including a `visit` error: the log
/// contradicts itself).
pub fn read_log(
    storage: &dyn Storage,
    from_lsn: Option<u64>,
    mut visit: impl FnMut(&str, u64, &Frame<'_>) -> Result<(), String>,
) -> Result<LogEnd, Error> {
    let mut names: Vec<String> = storage
        .list()
        .map_err(|e| Error::io("(log directory)", e))?
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    let mut end = LogEnd {
        next_lsn: from_lsn.unwrap_or(1),
        ..LogEnd::default()
    };
    let count = names.len();
    let mut expected: Option<u64> = None;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == count;
        let bytes = storage.read(name).map_err(|e| Error::io(name, e))?;
        let damage = |offset: usize, what: String, torn: bool| DamageAt {
            file: name.clone(),
            offset: offset as u64,
            what,
            torn,
            segment: i,
        };
        let first = match record::parse_segment_header(&bytes) {
            Ok(first) => first,
            Err(d) => {
                // A header cut short in the last segment: the crash came
                // between its creation and its sync.
                let torn = last && bytes.len() < SEGMENT_HEADER_LEN;
                end.damage = Some(damage(0, format!("segment header: {d}"), torn));
                break;
            }
        };
        if let Some(expected) = expected.filter(|&e| e != first) {
            end.damage = Some(damage(
                0,
                format!("segment starts at lsn {first}, expected {expected}"),
                false,
            ));
            break;
        }
        if let Some(from) = from_lsn.filter(|&f| expected.is_none() && first > f) {
            // Records between the snapshot and the log are gone: no cut
            // can mend that.
            return Err(Error::Corrupt {
                file: name.clone(),
                offset: 0,
                what: format!(
                    "the log starts at lsn {first}, but the snapshot needs it from {from}"
                ),
            });
        }
        end.first_lsn.get_or_insert(first);
        end.segments += 1;
        end.tail_segment = Some(name.clone());
        end.next_lsn = first.max(from_lsn.unwrap_or(0));
        let mut lsn = first;
        let mut offset = SEGMENT_HEADER_LEN;
        while offset < bytes.len() && end.damage.is_none() {
            let rest = &bytes[offset..];
            match record::decode(rest) {
                Ok(d) if d.lsn != lsn => {
                    end.damage = Some(damage(
                        offset,
                        format!("record has lsn {}, expected {lsn}", d.lsn),
                        false,
                    ));
                }
                Ok(d) if from_lsn.is_some_and(|f| d.lsn < f) => {
                    // Covered by the snapshot.
                    lsn += 1;
                    offset += d.len;
                }
                Ok(d) => match visit(name, offset as u64, &d) {
                    Ok(()) => {
                        end.records += 1;
                        lsn += 1;
                        end.next_lsn = lsn;
                        offset += d.len;
                    }
                    Err(why) => {
                        end.damage = Some(damage(
                            offset,
                            format!("record {} cannot be applied: {why}", d.lsn),
                            false,
                        ));
                    }
                },
                Err(d) => {
                    end.damage = Some(damage(offset, d.to_string(), last && is_torn(rest, d)))
                }
            }
        }
        if end.damage.is_some() {
            break;
        }
        expected = Some(lsn);
    }
    if let (Some(from), None) = (from_lsn, &end.damage) {
        if end.next_lsn < from {
            return Err(Error::Corrupt {
                file: end.tail_segment.clone().unwrap_or_default(),
                offset: 0,
                what: format!(
                    "the log ends at lsn {}, before the snapshot's {from}",
                    end.next_lsn
                ),
            });
        }
    }
    end.names = names;
    Ok(end)
}

/// Reads every segment in `storage`, calling `apply` for each record in
/// LSN order, then deals with damage: a torn tail is cut; anything else is
/// an error naming file and offset, or under `TruncateCorrupt` a cut there.
/// `apply` returns an error message if the record cannot be applied (the
/// log contradicts itself), which counts as damage at that record.
pub fn recover(
    storage: &dyn Storage,
    mode: RecoveryMode,
    from_lsn: Option<u64>,
    mut apply: impl FnMut(&Frame<'_>) -> Result<(), String>,
) -> Result<RecoveryReport, Error> {
    let end = read_log(storage, from_lsn, |_, _, frame| apply(frame))?;
    if let (None, Some(first)) = (from_lsn, end.first_lsn.filter(|&f| f > 1)) {
        // Older segments were deleted after a checkpoint, and no sound
        // checkpoint is left to stand for them.
        return Err(Error::Corrupt {
            file: end.names.first().cloned().unwrap_or_default(),
            offset: 0,
            what: format!(
                "the log starts at lsn {first} and no sound checkpoint covers what came before"
            ),
        });
    }
    let mut report = RecoveryReport {
        next_lsn: end.next_lsn,
        tail_segment: end.tail_segment.clone(),
        segments: end.segments,
        records: end.records,
        ..RecoveryReport::default()
    };
    let Some(damage) = end.damage else {
        return Ok(report);
    };
    let io = |e| Error::io(&damage.file, e);
    if !damage.torn && mode == RecoveryMode::Strict {
        return Err(Error::Corrupt {
            file: damage.file,
            offset: damage.offset,
            what: format!(
                "{}; start with --recovery truncate-corrupt to drop the log from here on",
                damage.what
            ),
        });
    }
    if damage.torn {
        crate::log_line!(
            "stampede: log {}: torn write at offset {} ({}); cutting the unacknowledged bytes",
            damage.file,
            damage.offset,
            damage.what
        );
        report.torn_tail = Some((damage.file.clone(), damage.offset));
    } else {
        crate::log_line!(
            "stampede: log {}: damage at offset {} ({}); cutting the log there as asked",
            damage.file,
            damage.offset,
            damage.what
        );
        report.cut_corruption = Some((damage.file.clone(), damage.offset, damage.what.clone()));
    }
    if damage.offset < SEGMENT_HEADER_LEN as u64 {
        // The whole segment goes; the one before it (if any) is the tail.
        storage.remove(&damage.file).map_err(io)?;
        report.tail_segment = damage.segment.checked_sub(1).map(|i| end.names[i].clone());
    } else {
        storage.truncate(&damage.file, damage.offset).map_err(io)?;
        report.tail_segment = Some(damage.file.clone());
    }
    for later in &end.names[damage.segment + 1..] {
        storage.remove(later).map_err(|e| Error::io(later, e))?;
    }
    storage.sync_dir().map_err(io)?;
    Ok(report)
}

/// Whether damage at the start of `rest` is the end of a torn write: the
/// record runs past the end of the file, or nothing but zeros follows it.
fn is_torn(rest: &[u8], damage: Damage) -> bool {
    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
    match damage {
        Damage::Truncated => true,
        Damage::BadLength => zeros(rest),
        Damage::BadCrc => {
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("decode read 4 bytes"));
            let end = record::RECORD_HEADER_LEN + len as usize;
            rest.len() <= end || zeros(&rest[end..])
        }
        Damage::Malformed => false,
    }
}
