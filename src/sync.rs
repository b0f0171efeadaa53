//! The synchronisation primitives the engine uses, in one place.
//!
//! Normal builds use `parking_lot`. Under `--cfg stampede_loom` the same names
//! are loom's, so the loom models in `tests/loom.rs` explore every
//! interleaving of the engine's real locking code. A cfg of our own (not plain
//! `loom`) keeps tokio and crossbeam, which react to `cfg(loom)`, building
//! normally (tokio#2463).

#[cfg(not(stampede_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock};

#[cfg(stampede_loom)]
pub(crate) use self::loom_mutex::{Mutex, MutexGuard, RwLock};

/// Locks `mutex`; if it was held, adds the nanoseconds waited to `waited`.
#[cfg(not(stampede_loom))]
#[inline]
pub(crate) fn lock_timed<'a, T>(
    mutex: &'a Mutex<T>,
    waited: &std::sync::atomic::AtomicU64,
) -> MutexGuard<'a, T> {
    if let Some(guard) = mutex.try_lock() {
        return guard;
    }
    let started = std::time::Instant::now();
    let guard = mutex.lock();
    waited.fetch_add(
        started.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    guard
}

/// Under loom, a plain lock (the model explores the interleavings; nothing
/// is timed).
#[cfg(stampede_loom)]
pub(crate) fn lock_timed<'a, T>(
    mutex: &'a Mutex<T>,
    _waited: &std::sync::atomic::AtomicU64,
) -> MutexGuard<'a, T> {
    mutex.lock()
}

#[cfg(stampede_loom)]
mod loom_mutex {
    /// loom's mutex with parking_lot's signature (no poisoning).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A panic while holding a shard lock is a bug that already
            // failed the model; propagate it rather than hide it.
            self.0.lock().expect("shard lock poisoned")
        }
    }

    /// loom's rwlock with parking_lot's signature (no poisoning).
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("rwlock poisoned")
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("rwlock poisoned")
        }
    }
}
