//! Checkpoint files: an image of the engine's state at a log position,
//! so recovery replays only the records after it and older segments can
//! be deleted.
//!
//! File `snapshot-<lsn, 20 digits>.snap`:
//!
//! ```text
//! magic "STMPSNP1" (8) | version u32 | lsn u64 | image length u64 | image | crc32c of all before (u32)
//! ```
//!
//! Written as a temp file, fsynced, renamed, then the directory fsynced;
//! only after that are older segments and snapshots deleted. A snapshot
//! that fails its checksum is passed over for an older one.

use super::storage::Storage;
use super::Error;

const MAGIC: [u8; 8] = *b"STMPSNP1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 28;

fn name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

fn lsn_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// Writes the image taken at `lsn` durably.
pub fn write(storage: &dyn Storage, lsn: u64, image: &[u8]) -> Result<(), Error> {
    let final_name = name(lsn);
    let tmp = format!("{final_name}.tmp");
    let mut bytes = Vec::with_capacity(HEADER_LEN + image.len() + 4);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
    bytes.extend_from_slice(image);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let io = |e| Error::io(&tmp, e);
    let mut file = storage.create(&tmp).map_err(io)?;
    file.append(&bytes).map_err(io)?;
    file.sync_data().map_err(io)?;
    drop(file);
    storage.rename(&tmp, &final_name).map_err(io)?;
    storage.sync_dir().map_err(io)
}

/// Every snapshot file, oldest first: its name, lsn, and whether it
/// passes its checksum (for `wal verify`).
pub fn check_all(storage: &dyn Storage) -> Result<Vec<(String, u64, bool)>, Error> {
    snapshot_files(storage)?
        .into_iter()
        .map(|(lsn, file)| {
            let bytes = storage.read(&file).map_err(|e| Error::io(&file, e))?;
            let sound = parse(&bytes, lsn).is_some();
            Ok((file, lsn, sound))
        })
        .collect()
}

/// The newest snapshot that passes its checksum: its lsn and image.
/// Damaged ones are reported and passed over.
pub fn load_latest(storage: &dyn Storage) -> Result<Option<(u64, Vec<u8>)>, Error> {
    let mut found = snapshot_files(storage)?;
    while let Some((lsn, file)) = found.pop() {
        let bytes = storage.read(&file).map_err(|e| Error::io(&file, e))?;
        match parse(&bytes, lsn) {
            Some(image) => return Ok(Some((lsn, image.to_vec()))),
            None => crate::log_line!(
                "stampede: snapshot {file} fails its checksum; trying an older one"
            ),
        }
    }
    Ok(None)
}

/// The snapshot files, by lsn, oldest first.
fn snapshot_files(storage: &dyn Storage) -> Result<Vec<(u64, String)>, Error> {
    let mut found: Vec<(u64, String)> = storage
        .list()
        .map_err(|e| Error::io("(log directory)", e))?
        .into_iter()
        .filter_map(|n| lsn_of(&n).map(|lsn| (lsn, n)))
        .collect();
    found.sort();
    Ok(found)
}

fn parse(bytes: &[u8], lsn: u64) -> Option<&[u8]> {
    if bytes.len() < HEADER_LEN + 4 || bytes[0..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let version = u32::from_le_bytes(body[8..12].try_into().ok()?);
    let stored_lsn = u64::from_le_bytes(body[12..20].try_into().ok()?);
    let len = u64::from_le_bytes(body[20..28].try_into().ok()?) as usize;
    (version == VERSION && stored_lsn == lsn && len == body.len() - HEADER_LEN)
        .then(|| &body[HEADER_LEN..])
}

/// After a snapshot at `lsn` is durable: deletes every segment whose
/// records all come at or before `lsn` (never the last segment), every
/// older snapshot, and leftover temp files. Returns how many files went.
pub fn prune(storage: &dyn Storage, lsn: u64) -> Result<usize, Error> {
    let names = storage
        .list()
        .map_err(|e| Error::io("(log directory)", e))?;
    let mut segments: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|n| Some((n.strip_suffix(".wal")?.parse::<u64>().ok()?, n)))
        .collect();
    segments.sort();
    let mut doomed: Vec<&String> = Vec::new();
    for pair in segments.windows(2) {
        // Segment 0 ends where segment 1 begins.
        if pair[1].0 <= lsn + 1 {
            doomed.push(pair[0].1);
        }
    }
    doomed.extend(
        names
            .iter()
            .filter(|n| lsn_of(n).is_some_and(|l| l < lsn) || n.ends_with(".snap.tmp")),
    );
    for n in &doomed {
        storage.remove(n).map_err(|e| Error::io(n, e))?;
    }
    if !doomed.is_empty() {
        storage
            .sync_dir()
            .map_err(|e| Error::io("(log directory)", e))?;
    }
    Ok(doomed.len())
}
