//! The write-ahead log: every engine change, durable before it is
//! acknowledged.
//!
//! # Shape
//!
//! The log frames opaque payloads: an [`Entry`] is a kind byte and bytes
//! its owner encodes (the engine's changes, the key store's answers); the
//! log knows nothing of SKUs, holds or HTTP answers. Callers append while
//! they still hold the locks of the change they describe, so the log's order agrees with the order in which
//! conflicting changes were made, and replay rebuilds the same state.
//! Appending only encodes into a shared buffer (a short, leaf-level lock);
//! one writer thread takes everything waiting, writes it with one write and
//! one fdatasync, then wakes every caller that sync covered (group commit).
//! The next group fills while a sync is in flight.
//!
//! The writer writes when somebody waits, not at every append: a wait
//! raises the queue's `wanted` LSN and wakes the writer. A batch of a
//! thousand ops appends a thousand records and waits once, so it costs one
//! write and one sync, and the writer thread (which shares the cores with
//! the request workers) does not wake a thousand times. Records nobody
//! waits for (the sweeper's expiries) are written within [`IDLE_FLUSH`],
//! or at once when the buffer passes [`FLUSH_BYTES`].
//!
//! [`Journal::append`] returns the record's LSN; a caller acknowledges
//! only after [`Wal::wait_durable`] (or its async twin) for that LSN,
//! which covers its own record and anything it read that others had
//! appended before it.
//!
//! # Failure
//!
//! A failed write or sync is never retried (after a failed fsync the page
//! cache can no longer be trusted): the log turns read-only for good, every
//! append and wait answers [`Error::Unavailable`], the error is logged once.
//!
//! # Files
//!
//! Segments `<first lsn, 20 digits>.wal` (format in [`record`]); a segment
//! is closed at `segment_bytes_max` and a new one begun, with a directory
//! fsync after each creation. [`recovery`] reads them back.

pub mod config;
pub mod kinds;
pub mod record;
pub mod recovery;
pub mod snapshot;
pub mod storage;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Deserialize;

pub use record::Frame;
pub use recovery::{read_log, recover, DamageAt, LogEnd, RecoveryMode, RecoveryReport};
pub use storage::{DiskStorage, Faults, LogFile, SimStorage, Storage};

/// When an append counts as durable (`wal.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After fdatasync: survives a power loss.
    #[default]
    Fsync,
    /// After the write reaches the OS: survives a crash of the process.
    Os,
    /// Nothing is written.
    None,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The log failed to write or sync earlier and is read-only now.
    #[error("the log cannot be written ({0}); the server is read-only until restarted")]
    Unavailable(Arc<str>),
    #[error("log {file} at offset {offset}: {what}")]
    Corrupt {
        file: String,
        offset: u64,
        what: String,
    },
    /// A record could not be encoded (too large); nothing was appended.
    #[error("{0}")]
    Encode(#[from] record::EncodeError),
    #[error("log i/o on {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl Error {
    pub fn io(file: &str, source: std::io::Error) -> Error {
        Error::Io {
            file: file.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// What the log stores: a kind byte and a payload its owner encodes (with
/// `crate::codec`). The log frames it and never looks inside.
pub trait Entry {
    fn kind(&self) -> u8;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), crate::codec::Error>;
}

/// Where changes are recorded. [`Wal`] is the real one.
pub trait Journal: Send + Sync {
    /// Queues `entry`; returns its LSN. Called with shard locks held, so it
    /// must not block on I/O. An entry that cannot be encoded is
    /// [`Error::Encode`], and nothing of it is appended.
    fn append(&self, entry: &dyn Entry) -> Result<u64, Error>;

    /// LSN of the last record appended. Read with the locks of what the
    /// caller read held, it covers every record that made that state.
    fn appended_lsn(&self) -> u64;
}

/// File name of the segment whose first record is `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    pub segment_bytes_max: u64,
}

/// Upper bounds (seconds) of [`Stats::sync_buckets`].
pub const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Group commit figures, for `/v1/stats` and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub groups: u64,
    pub records: u64,
    pub bytes: u64,
    /// Sum of the time each group took to write and sync.
    pub sync_time: Duration,
    /// Groups by the time they took, per [`SYNC_BUCKETS`] (not
    /// cumulative; a group over the last bound is in none).
    pub sync_buckets: [u64; SYNC_BUCKETS.len()],
}

/// Longest a record nobody waits for stays in the buffer.
pub const IDLE_FLUSH: Duration = Duration::from_millis(10);
/// A buffer this large is written whether or not anybody waits.
pub const FLUSH_BYTES: usize = 1 << 20;

struct Queue {
    buf: Vec<u8>,
    /// The highest LSN a caller waits for: the writer writes when this is
    /// in the buffer.
    wanted: u64,
    /// When `buf` last went from empty to not (for [`IDLE_FLUSH`]).
    filled_at: Option<Instant>,
    next_lsn: u64,
    /// LSN of the last record in `buf` (or of the last one ever appended).
    last_lsn: u64,
    records_in_buf: u64,
    closing: bool,
    failed: Option<Arc<str>>,
}

struct Durable {
    lsn: u64,
    failed: Option<Arc<str>>,
    stats: Stats,
}

struct Shared {
    durability: Durability,
    queue: Mutex<Queue>,
    work: Condvar,
    durable: Mutex<Durable>,
    done: Condvar,
    /// The durable LSN, readable without a lock; `u64::MAX` never (a
    /// failure is in `failed_flag`).
    durable_lsn: AtomicU64,
    failed_flag: AtomicBool,
    /// Async waiters: the LSN each waits for and its task's waker. Each
    /// group wakes only the ones it covers. (A `BTreeMap` of oneshot
    /// channels cost two allocations and a tree insert and remove a
    /// request; one `watch` channel before that woke every waiter at every
    /// group.) A waiter that gave up leaves its waker until its LSN is
    /// written (within `IDLE_FLUSH`); waking it then does nothing.
    /// ones it covers (one `watch` channel woke every waiter per group,
    /// which cost more CPU than the work under a few hundred connections).
    waiters: Mutex<Vec<(u64, Waker)>>,
}

/// An open log with its writer thread.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens the log for appending after [`recover`] read it: `report` says
    /// where it ended. With `Durability::None` nothing is ever written.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: Options,
        report: &RecoveryReport,
    ) -> Result<Wal, Error> {
        let next_lsn = report.next_lsn;
        let shared = Arc::new(Shared {
            durability: options.durability,
            queue: Mutex::new(Queue {
                buf: Vec::with_capacity(1 << 20),
                wanted: 0,
                filled_at: None,
                next_lsn,
                last_lsn: next_lsn - 1,
                records_in_buf: 0,
                closing: false,
                failed: None,
            }),
            work: Condvar::new(),
            durable: Mutex::new(Durable {
                lsn: next_lsn - 1,
                failed: None,
                stats: Stats::default(),
            }),
            done: Condvar::new(),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            failed_flag: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        });
        let writer = if options.durability == Durability::None {
            None
        } else {
            let segment = match &report.tail_segment {
                Some(name) => {
                    let file = storage.open_append(name).map_err(|e| Error::io(name, e))?;
                    (name.clone(), file)
                }
                None => new_segment(storage.as_ref(), next_lsn)?,
            };
            let shared = shared.clone();
            let max = options.segment_bytes_max;
            Some(
                std::thread::Builder::new()
                    .name("stampede-wal".into())
                    .spawn(move || {
                        // A writer that panicked (a bug) would leave every
                        // waiter waiting: the process stops, naming it.
                        let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            write_loop(&shared, storage, segment, max)
                        }));
                        if let Err(payload) = wrote {
                            crate::output::fatal(
                                "the log writer (thread stampede-wal)",
                                &crate::output::panic_text(&*payload),
                            );
                        }
                    })
                    .map_err(|e| Error::io("(writer thread)", e))?,
            )
        };
        Ok(Wal {
            shared,
            writer: Mutex::new(writer),
        })
    }

    /// LSN of the last record appended so far.
    pub fn appended_lsn(&self) -> u64 {
        self.shared.queue.lock().last_lsn
    }

    /// Blocks until every record up to `lsn` is durable (per the
    /// durability mode), or the log has failed.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), Error> {
        if self.shared.durability == Durability::None {
            return Ok(());
        }
        self.want(lsn);
        let mut d = self.shared.durable.lock();
        loop {
            if let Some(e) = &d.failed {
                return Err(Error::Unavailable(e.clone()));
            }
            if d.lsn >= lsn {
                return Ok(());
            }
            self.shared.done.wait(&mut d);
        }
    }

    /// [`Wal::wait_durable`] for async callers: parks the task, not the
    /// thread.
    pub async fn wait_durable_async(&self, lsn: u64) -> Result<(), Error> {
        if self.shared.durability == Durability::None {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.poll_durable(cx, lsn)).await
    }

    fn poll_durable(&self, cx: &mut Context<'_>, lsn: u64) -> Poll<Result<(), Error>> {
        let shared = &self.shared;
        let settled = || {
            if shared.failed_flag.load(Ordering::Acquire) {
                Some(Err(self.failure()))
            } else if shared.durable_lsn.load(Ordering::Acquire) >= lsn {
                Some(Ok(()))
            } else {
                None
            }
        };
        if let Some(done) = settled() {
            return Poll::Ready(done);
        }
        {
            // Checked again under the waiters' lock: the writer stores the
            // LSN (or the failure) before it takes that lock to wake, so no
            // wake-up is missed.
            let mut waiters = shared.waiters.lock();
            if let Some(done) = settled() {
                return Poll::Ready(done);
            }
            waiters.push((lsn, cx.waker().clone()));
        }
        self.want(lsn);
        Poll::Pending
    }

    /// Tells the writer somebody waits for `lsn`: it writes the group
    /// holding it now rather than when the buffer fills or idles.
    fn want(&self, lsn: u64) {
        if self.shared.durable_lsn.load(Ordering::Acquire) >= lsn {
            return;
        }
        let mut q = self.shared.queue.lock();
        if lsn > q.wanted {
            q.wanted = lsn;
            self.shared.work.notify_one();
        }
    }

    fn failure(&self) -> Error {
        let reason = self.shared.durable.lock().failed.clone();
        Error::Unavailable(reason.unwrap_or_else(|| "the log writer stopped".into()))
    }

    /// Waits until everything appended so far is durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.wait_durable(self.appended_lsn())
    }

    /// True once a write or sync has failed.
    pub fn is_failed(&self) -> bool {
        self.shared.queue.lock().failed.is_some()
    }

    pub fn stats(&self) -> Stats {
        self.shared.durable.lock().stats
    }

    /// Makes everything appended durable and stops the writer.
    pub fn close(&self) -> Result<(), Error> {
        let result = self.sync();
        self.shared.queue.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

thread_local! {
    /// Where a record is encoded and size-checked before it touches the
    /// shared buffer (one per thread: appends run on many threads at once).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Journal for Wal {
    /// Encodes `record` first, outside the queue's lock: a record that
    /// cannot be encoded is an error before anything shared changes. Under
    /// the lock only the LSN is taken and the sealed bytes copied, neither
    /// of which can fail halfway.
    fn append(&self, entry: &dyn Entry) -> Result<u64, Error> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            record::frame(entry, 0, scratch)?;
            let mut q = self.shared.queue.lock();
            if let Some(e) = &q.failed {
                return Err(Error::Unavailable(e.clone()));
            }
            let lsn = q.next_lsn;
            q.next_lsn += 1;
            q.last_lsn = lsn;
            if self.shared.durability != Durability::None {
                record::seal(scratch, lsn);
                let was_below = q.buf.len() < FLUSH_BYTES;
                let was_empty = q.buf.is_empty();
                if was_empty {
                    q.filled_at = Some(Instant::now());
                }
                q.buf.extend_from_slice(scratch);
                q.records_in_buf += 1;
                // Nobody waits yet (a wait says so itself); a buffer this
                // large is written anyway. The first record of a buffer
                // wakes the writer, asleep on an empty one, to time its
                // IDLE_FLUSH: else a record nobody waits for (a sweep's
                // expiry) stayed unwritten until the next wait.
                if was_empty || (was_below && q.buf.len() >= FLUSH_BYTES) {
                    self.shared.work.notify_one();
                }
            }
            Ok(lsn)
        })
    }

    fn appended_lsn(&self) -> u64 {
        Wal::appended_lsn(self)
    }
}

fn new_segment(storage: &dyn Storage, first_lsn: u64) -> Result<(String, Box<dyn LogFile>), Error> {
    let name = segment_name(first_lsn);
    let mut file = storage.create(&name).map_err(|e| Error::io(&name, e))?;
    file.append(&record::segment_header(first_lsn))
        .and_then(|()| file.sync_data())
        .and_then(|()| storage.sync_dir())
        .map_err(|e| Error::io(&name, e))?;
    Ok((name, file))
}

/// Writes one group, syncs it if asked, and rotates the segment when full.
/// The closed segment is synced before the next exists, so recovery never
/// sees a gap.
fn write_group(
    durability: Durability,
    storage: &dyn Storage,
    name: &mut String,
    file: &mut Box<dyn LogFile>,
    batch: &[u8],
    upto: u64,
    segment_bytes_max: u64,
) -> Result<(), String> {
    let failed = |name: &str, e: std::io::Error| format!("{name}: {e}");
    file.append(batch).map_err(|e| failed(name, e))?;
    if durability == Durability::Fsync {
        file.sync_data().map_err(|e| failed(name, e))?;
    }
    if file.size() >= segment_bytes_max {
        file.sync_data().map_err(|e| failed(name, e))?;
        let (next_name, next_file) = new_segment(storage, upto + 1).map_err(|e| e.to_string())?;
        *name = next_name;
        *file = next_file;
    }
    Ok(())
}

/// The writer thread: takes what is queued, writes it as one group.
fn write_loop(
    shared: &Shared,
    storage: Arc<dyn Storage>,
    segment: (String, Box<dyn LogFile>),
    segment_bytes_max: u64,
) {
    let (mut name, mut file) = segment;
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut woken: Vec<Waker> = Vec::new();
    // The last LSN handed to a group (written, or being written).
    let mut taken = shared.durable_lsn.load(Ordering::Acquire);
    loop {
        let (upto, records) = {
            let mut q = shared.queue.lock();
            loop {
                if q.buf.is_empty() {
                    if q.closing {
                        return; // nothing left
                    }
                    shared.work.wait(&mut q);
                    continue;
                }
                // Somebody waits for a record in the buffer, it is large,
                // or it has waited long enough: write it.
                let filled_at = q.filled_at.unwrap_or_else(Instant::now);
                if q.wanted > taken
                    || q.buf.len() >= FLUSH_BYTES
                    || q.closing
                    || filled_at.elapsed() >= IDLE_FLUSH
                {
                    break;
                }
                shared.work.wait_until(&mut q, filled_at + IDLE_FLUSH);
            }
            q.filled_at = None;
            taken = q.last_lsn;
            std::mem::swap(&mut q.buf, &mut batch);
            let records = std::mem::take(&mut q.records_in_buf);
            (q.last_lsn, records)
        };
        crate::fault::inject("log-writer");
        let started = Instant::now();
        let result = write_group(
            shared.durability,
            storage.as_ref(),
            &mut name,
            &mut file,
            &batch,
            upto,
            segment_bytes_max,
        );
        let mut d = shared.durable.lock();
        match result {
            Ok(()) => {
                d.lsn = upto;
                shared.durable_lsn.store(upto, Ordering::Release);
                d.stats.groups += 1;
                d.stats.records += records;
                d.stats.bytes += batch.len() as u64;
                let took = started.elapsed();
                d.stats.sync_time += took;
                let secs = took.as_secs_f64();
                if let Some(b) = SYNC_BUCKETS.iter().position(|&le| secs <= le) {
                    d.stats.sync_buckets[b] += 1;
                }
            }
            Err(message) => {
                let message: Arc<str> = message.into();
                crate::log_line!("stampede: LOG WRITE FAILED, going read-only for good: {message}");
                d.failed = Some(message.clone());
                shared.failed_flag.store(true, Ordering::Release);
                shared.queue.lock().failed = Some(message);
                shared.done.notify_all();
                drop(d);
                // Every waiter wakes and finds the failure.
                let all = std::mem::take(&mut *shared.waiters.lock());
                all.into_iter().for_each(|(_, waker)| waker.wake());
                return;
            }
        }
        drop(d);
        shared.done.notify_all();
        wake_covered(shared, upto, &mut woken);
        batch.clear();
    }
}

/// Wakes the async waiters whose LSN is now durable.
fn wake_covered(shared: &Shared, upto: u64, woken: &mut Vec<Waker>) {
    {
        let mut waiters = shared.waiters.lock();
        woken.extend(
            waiters
                .extract_if(.., |(lsn, _)| *lsn <= upto)
                .map(|(_, waker)| waker),
        );
    }
    // Woken outside the lock: a wake may run the task's scheduling.
    woken.drain(..).for_each(Waker::wake);
}
