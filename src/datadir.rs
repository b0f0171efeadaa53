//! The data directory: an exclusive lock, and the start epoch.
//!
//! Each start of a data directory takes the next epoch number and makes it
//! durable (temp file, fsync, rename, directory fsync) before the engine
//! issues a single hold id; ids carry the epoch, so they are unique for the
//! life of the directory, restarts included. The lock file keeps a second
//! server off the same directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data dir {0}: another stampede process holds its lock; stop it or choose another --data-dir")]
    Locked(PathBuf),
    #[error(
        "data dir {path}: epoch file is corrupt ({content:?}); it must hold one decimal number"
    )]
    BadEpoch { path: PathBuf, content: String },
    #[error("data dir {0}: epoch numbers are used up; start a new data directory")]
    EpochsExhausted(PathBuf),
}

/// An open, locked data directory. The lock is released on drop.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    epoch: u32,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed, locks it and takes the next epoch.
    pub fn open(path: &Path) -> Result<DataDir, Error> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(path).map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(path.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let epoch_path = path.join("EPOCH");
        let previous = match fs::read_to_string(&epoch_path) {
            Ok(text) => Some(text.trim().parse::<u32>().map_err(|_| Error::BadEpoch {
                path: epoch_path.clone(),
                content: text.chars().take(40).collect(),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let epoch = match previous {
            None => 0,
            Some(p) => p
                .checked_add(1)
                .ok_or_else(|| Error::EpochsExhausted(path.to_owned()))?,
        };
        write_durably(path, "EPOCH", format!("{epoch}\n").as_bytes()).map_err(io_err)?;
        Ok(DataDir {
            path: path.to_owned(),
            epoch,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the
/// new content, never a mix: temp file, fsync, rename, directory fsync.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stampede-datadir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn each_open_takes_a_new_epoch() {
        let dir = temp_dir("epoch");
        let first = DataDir::open(&dir).unwrap().epoch();
        let second = DataDir::open(&dir).unwrap().epoch();
        let third = DataDir::open(&dir).unwrap().epoch();
        assert_eq!((first, second, third), (0, 1, 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_dir_is_refused() {
        let dir = temp_dir("lock");
        let held = DataDir::open(&dir).unwrap();
        assert!(matches!(DataDir::open(&dir), Err(Error::Locked(_))));
        drop(held);
        assert!(DataDir::open(&dir).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_epoch_stops_start_up() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("EPOCH"), "twelve").unwrap();
        assert!(matches!(DataDir::open(&dir), Err(Error::BadEpoch { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
