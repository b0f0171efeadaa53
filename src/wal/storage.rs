//! The file layer under the log: a small trait with a disk implementation
//! and a simulated one that injects faults and crashes.
//!
//! Every file the log touches goes through [`Storage`], rooted at the log's
//! directory, so the same log code runs against the real disk and against
//! [`SimStorage`], where a test can fail the n-th write or sync, fill the
//! disk, cut a write short, or "crash" and lose whatever was not synced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

/// A directory of files, as the log needs it.
pub trait Storage: Send + Sync + 'static {
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates `name` empty (replacing any file of that name).
    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    /// Opens `name` to append at its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    /// Cuts `name` to `len` bytes and makes that durable.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals) durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// An open file the log appends to.
pub trait LogFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync: the appended bytes survive a power loss.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Bytes in the file.
    fn size(&self) -> u64;
}

/// The real disk.
#[derive(Debug, Clone)]
pub struct DiskStorage {
    dir: PathBuf,
}

impl DiskStorage {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<DiskStorage> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(DiskStorage { dir })
    }
}

struct DiskFile {
    file: File,
    len: u64,
}

impl LogFile for DiskFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> u64 {
        self.len
    }
}

impl Storage for DiskStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(name))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let file = File::create(self.dir.join(name))?;
        Ok(Box::new(DiskFile { file, len: 0 }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().append(true).open(self.dir.join(name))?;
        let len = file.metadata()?.len();
        Ok(Box::new(DiskFile { file, len }))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// Faults a [`SimStorage`] injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail the n-th `append` from now (1 = the next one).
    pub fail_append_in: Option<u64>,
    /// Fail the n-th `sync_data` from now.
    pub fail_sync_in: Option<u64>,
    /// Total bytes the disk holds; an append past it writes what fits and
    /// fails (a short write, then "no space").
    pub capacity_bytes: Option<u64>,
    /// `sync_data` does not return until the counter reaches the number
    /// (a slow disk whose sync outlasts what the test does meanwhile, with
    /// no clock involved); it gives up after 10 s so a broken test ends.
    pub sync_waits_for: Option<(Arc<std::sync::atomic::AtomicU64>, u64)>,
}

#[derive(Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    /// Bytes that survive a crash.
    synced_len: usize,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<String, SimFile>,
    /// Names whose creation was made durable by `sync_dir`.
    durable_names: BTreeSet<String>,
    faults: Faults,
    appends: u64,
    syncs: u64,
    /// Set by a crash: the process is gone, so every later write fails
    /// until [`SimStorage::restart`].
    dead: bool,
}

/// An in-memory directory with fault injection and crashes. Clones share
/// the same files.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    /// A power loss: every file keeps what was synced plus, for a torn
    /// write, the first `keep(unsynced_len)` unsynced bytes; files whose
    /// creation was never made durable disappear.
    pub fn crash(&self, mut keep: impl FnMut(usize) -> usize) {
        let mut st = self.state.lock();
        let durable = st.durable_names.clone();
        st.files.retain(|name, _| durable.contains(name));
        for file in st.files.values_mut() {
            let unsynced = file.data.len() - file.synced_len;
            let kept = keep(unsynced).min(unsynced);
            file.data.truncate(file.synced_len + kept);
            file.synced_len = file.data.len();
        }
        st.faults = Faults::default();
        st.dead = true;
    }

    /// After a crash: a new process may use the files again.
    pub fn restart(&self) {
        self.state.lock().dead = false;
    }

    /// The bytes of `name`, for tests that damage them.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().files.get(name).map(|f| f.data.clone())
    }

    /// Replaces the bytes of `name` (as durable), for tests that damage them.
    pub fn set_bytes(&self, name: &str, data: Vec<u8>) {
        let mut st = self.state.lock();
        let file = st.files.entry(name.to_owned()).or_default();
        file.synced_len = data.len();
        file.data = data;
        st.durable_names.insert(name.to_owned());
    }

    fn used(st: &SimState) -> u64 {
        st.files.values().map(|f| f.data.len() as u64).sum()
    }
}

struct SimHandle {
    storage: SimStorage,
    name: String,
}

impl LogFile for SimHandle {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.storage.state.lock();
        if st.dead {
            return Err(io::Error::other("process crashed (simulated)"));
        }
        st.appends += 1;
        if let Some(n) = st.faults.fail_append_in {
            if n <= 1 {
                st.faults.fail_append_in = None;
                return Err(injected("write"));
            }
            st.faults.fail_append_in = Some(n - 1);
        }
        let room = match st.faults.capacity_bytes {
            Some(cap) => cap.saturating_sub(SimStorage::used(&st)) as usize,
            None => usize::MAX,
        };
        let file = st
            .files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if bytes.len() > room {
            file.data.extend_from_slice(&bytes[..room]);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        file.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let gate = self.storage.state.lock().faults.sync_waits_for.clone();
        if let Some((counter, target)) = gate {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while counter.load(std::sync::atomic::Ordering::Acquire) < target
                && std::time::Instant::now() < deadline
            {
                std::thread::yield_now();
            }
        }
        let mut st = self.storage.state.lock();
        if st.dead {
            return Err(io::Error::other("process crashed (simulated)"));
        }
        st.syncs += 1;
        if let Some(n) = st.faults.fail_sync_in {
            if n <= 1 {
                st.faults.fail_sync_in = None;
                return Err(injected("fsync"));
            }
            st.faults.fail_sync_in = Some(n - 1);
        }
        let file = st
            .files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.synced_len = file.data.len();
        Ok(())
    }

    fn size(&self) -> u64 {
        let st = self.storage.state.lock();
        st.files.get(&self.name).map_or(0, |f| f.data.len() as u64)
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.bytes(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        self.state
            .lock()
            .files
            .insert(name.to_owned(), SimFile::default());
        Ok(Box::new(SimHandle {
            storage: self.clone(),
            name: name.to_owned(),
        }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        if !self.state.lock().files.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(Box::new(SimHandle {
            storage: self.clone(),
            name: name.to_owned(),
        }))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let file = st
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.data.truncate(len as usize);
        file.synced_len = file.data.len();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.files.remove(name);
        st.durable_names.remove(name);
        Ok(())
    }

    /// Until the next `sync_dir`, a crash loses the file under both names.
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        let file = st
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.files.insert(to.to_owned(), file);
        st.durable_names.remove(from);
        st.durable_names.remove(to);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.durable_names = st.files.keys().cloned().collect();
        Ok(())
    }
}
