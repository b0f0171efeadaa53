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

use super::record::{self, Damage, Record, SEGMENT_HEADER_LEN};
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

/// Reads every segment in `storage`, calling `apply` for each record in
/// LSN order. `apply` returns an error message if the record cannot be
/// applied (the log contradicts itself), which recovery reports as
/// corruption at that record.
pub fn recover(
    storage: &dyn Storage,
    mode: RecoveryMode,
    mut apply: impl FnMut(u64, &Record<'_>) -> Result<(), String>,
) -> Result<RecoveryReport, Error> {
    let mut names: Vec<String> = storage
        .list()
        .map_err(|e| Error::io("(log directory)", e))?
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    let mut report = RecoveryReport {
        next_lsn: 1,
        ..RecoveryReport::default()
    };
    let mut expected: Option<u64> = None;
    let count = names.len();
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == count;
        let bytes = storage.read(name).map_err(|e| Error::io(name, e))?;
        let first = match record::parse_segment_header(&bytes) {
            Ok(first) => first,
            Err(_) if last && bytes.len() < SEGMENT_HEADER_LEN => {
                // Created, then the crash came before its header was synced.
                storage.remove(name).map_err(|e| Error::io(name, e))?;
                storage.sync_dir().map_err(|e| Error::io(name, e))?;
                break;
            }
            Err(damage) => {
                let what = format!("segment header: {damage}");
                return cut_or_fail(storage, mode, &names[i..], name, 0, what, report);
            }
        };
        if let Some(expected) = expected {
            if first != expected {
                let what = format!("segment starts at lsn {first}, expected {expected}");
                return cut_or_fail(storage, mode, &names[i..], name, 0, what, report);
            }
        }
        report.segments += 1;
        report.tail_segment = Some(name.clone());
        report.next_lsn = first;
        let mut lsn = first;
        let mut offset = SEGMENT_HEADER_LEN;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            match record::decode(rest) {
                Ok(d) if d.lsn != lsn => {
                    let what = format!("record has lsn {}, expected {lsn}", d.lsn);
                    return cut_or_fail(storage, mode, &names[i..], name, offset, what, report);
                }
                Ok(d) => {
                    if let Err(why) = apply(d.lsn, &d.record) {
                        let what = format!("record {} cannot be applied: {why}", d.lsn);
                        return cut_or_fail(storage, mode, &names[i..], name, offset, what, report);
                    }
                    report.records += 1;
                    lsn += 1;
                    report.next_lsn = lsn;
                    offset += d.len;
                }
                Err(damage) if last && is_torn(rest, damage) => {
                    eprintln!(
                        "stampede: log {name}: torn write at offset {offset} ({damage}); cutting {} unacknowledged bytes",
                        rest.len()
                    );
                    storage
                        .truncate(name, offset as u64)
                        .map_err(|e| Error::io(name, e))?;
                    report.torn_tail = Some((name.clone(), offset as u64));
                    break;
                }
                Err(damage) => {
                    return cut_or_fail(
                        storage,
                        mode,
                        &names[i..],
                        name,
                        offset,
                        damage.to_string(),
                        report,
                    );
                }
            }
        }
        expected = Some(lsn);
    }
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

/// Damage that is not a torn tail: an error, or under `TruncateCorrupt` a
/// cut at `offset` of `names[0]` and the removal of every later segment.
fn cut_or_fail(
    storage: &dyn Storage,
    mode: RecoveryMode,
    names: &[String],
    name: &str,
    offset: usize,
    what: String,
    mut report: RecoveryReport,
) -> Result<RecoveryReport, Error> {
    if mode == RecoveryMode::Strict {
        return Err(Error::Corrupt {
            file: name.to_owned(),
            offset: offset as u64,
            what: format!(
                "{what}; start with --recovery truncate-corrupt to drop the log from here on"
            ),
        });
    }
    eprintln!(
        "stampede: log {name}: damage at offset {offset} ({what}); cutting the log there as asked"
    );
    if offset < SEGMENT_HEADER_LEN {
        // The whole segment goes; the previous one (if any) stays the tail.
        storage.remove(name).map_err(|e| Error::io(name, e))?;
    } else {
        storage
            .truncate(name, offset as u64)
            .map_err(|e| Error::io(name, e))?;
        report.tail_segment = Some(name.to_owned());
    }
    for later in &names[1..] {
        storage.remove(later).map_err(|e| Error::io(later, e))?;
    }
    storage.sync_dir().map_err(|e| Error::io(name, e))?;
    report.cut_corruption = Some((name.to_owned(), offset as u64, what));
    Ok(report)
}
