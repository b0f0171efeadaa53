//! Putting the pieces together at start-up: restore the newest checkpoint,
//! replay the log after it, attach the log, expire what came due while the
//! server was down; and taking checkpoints later. The binary calls
//! [`start_core`]; tests call [`open_core`] on simulated files.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::drops::DropBook;
use crate::engine::Engine;
use crate::events::webhooks::Outbox;
use crate::events::Hub;
use crate::idempotency::IdempotencyStore;
use crate::records::Record;
use crate::wal::{
    self, recover, snapshot, DiskStorage, RecoveryMode, RecoveryReport, Storage, Wal,
};

/// The engine, the log it writes to, and the files under the log.
pub struct Core {
    pub engine: Arc<Engine>,
    pub wal: Arc<Wal>,
    pub report: RecoveryReport,
    /// LSN of the checkpoint recovery started from, if any.
    pub restored_lsn: Option<u64>,
    /// Answers to requests with an `Idempotency-Key`.
    pub idempotency: Arc<IdempotencyStore>,
    /// Drops and their lines.
    pub drops: Arc<DropBook>,
    /// Webhook deliveries still to make.
    pub outbox: Arc<Outbox>,
    /// The event feed, told by the engine and the drops from the end of
    /// replay on (so holds that expired while down are told too).
    pub events: Arc<Hub>,
    storage: Arc<dyn Storage>,
}

/// During replay, purge ended holds past their retention this often.
const PURGE_EVERY_RECORDS: u64 = 65_536;

/// Name of the log's directory inside the data directory.
pub const WAL_DIR: &str = "wal";

/// Opens the data dir's log on disk; see [`open_core`].
pub fn start_core(
    config: &Config,
    data_dir: &DataDir,
    mode: RecoveryMode,
    clock: Arc<dyn Clock>,
) -> Result<Core, wal::Error> {
    let storage = Arc::new(
        DiskStorage::new(data_dir.path().join(WAL_DIR)).map_err(|e| wal::Error::io(WAL_DIR, e))?,
    );
    let engine = Engine::new(config.engine_options(data_dir.epoch()), clock.clone());
    let drops = DropBook::new(config.drops_options(), clock.clone());
    let endpoints = config
        .webhook_endpoints()
        .map_err(|e| wal::Error::io("webhooks", std::io::Error::other(e.to_string())))?;
    let outbox = Outbox::new(config.webhook_options(), endpoints, clock.clone());
    let options = wal::Options {
        durability: config.wal.durability,
        segment_bytes_max: config.wal.segment_bytes_max,
    };
    let idempotency = IdempotencyStore::new(
        config.idempotency.ttl_ms,
        config.idempotency.keys_max,
        config.idempotency.answer_bytes_max,
    );
    let owners = Owners {
        idempotency,
        drops,
        outbox,
        events: config.events_options(),
    };
    open_core(storage, engine, owners, mode, options)
}

/// What start-up restores besides the engine: the key store, the drops,
/// the webhook outbox, and the event feed's bounds.
pub struct Owners {
    pub idempotency: IdempotencyStore,
    pub drops: DropBook,
    pub outbox: Outbox,
    pub events: crate::events::Options,
}

impl Owners {
    /// `idempotency` with the config's defaults for the rest.
    pub fn new(idempotency: IdempotencyStore, clock: Arc<dyn crate::clock::Clock>) -> Owners {
        let config = Config::default();
        Owners {
            idempotency,
            drops: DropBook::new(config.drops_options(), clock.clone()),
            outbox: Outbox::new(config.webhook_options(), Vec::new(), clock),
            events: config.events_options(),
        }
    }
}

/// Restores `engine` (new and empty) from the newest sound checkpoint in
/// `storage`, replays the log after it, attaches the log, and expires (and
/// logs) the holds that came due while down.
pub fn open_core(
    storage: Arc<dyn Storage>,
    mut engine: Engine,
    owners: Owners,
    mode: RecoveryMode,
    options: wal::Options,
) -> Result<Core, wal::Error> {
    let Owners {
        idempotency,
        drops,
        outbox,
        events,
    } = owners;
    let hub = Arc::new(Hub::new(events));
    let restored_lsn = match snapshot::load_latest(storage.as_ref())? {
        Some((lsn, image)) => {
            let corrupt = |what| wal::Error::Corrupt {
                file: format!("snapshot at lsn {lsn}"),
                offset: 0,
                what,
            };
            let (engine_image, tail) =
                split_image(&image).ok_or_else(|| corrupt("cut short".to_owned()))?;
            engine.restore(engine_image).map_err(corrupt)?;
            let ring = restore_tail(&idempotency, &drops, &outbox, &hub, tail, engine.now_ms())
                .map_err(corrupt)?;
            if !ring {
                // Written before checkpoints kept the event ring: the
                // events up to it are gone (a resume from there: reset).
                hub.set_floor((lsn + 1) << 16);
            }
            Some(lsn)
        }
        None => None,
    };
    // Replay tells again, under their own ids, the events of the records
    // after the checkpoint (contract v1.2, errata: events kept through a
    // restart).
    engine.attach_events(hub.clone());
    drops.attach_events(hub.clone());
    hub.start_replay();
    let now_ms = engine.now_ms();
    let mut replayed = 0u64;
    let report = recover(
        storage.as_ref(),
        mode,
        restored_lsn.map(|l| l + 1),
        |frame| {
            let at_ms = replay(&engine, &idempotency, &drops, &outbox, frame, now_ms)?;
            replayed += 1;
            if replayed.is_multiple_of(PURGE_EVERY_RECORDS) {
                // Ended holds whose retention was over by then go, as the
                // live sweeper let them go.
                engine.purge(at_ms);
            }
            Ok(())
        },
    )?;
    engine.finish_replay();
    hub.finish_replay();
    let wal = Arc::new(Wal::open(storage.clone(), options, &report)?);
    engine.attach_journal(wal.clone());
    drops.attach_wal(wal.clone());
    outbox.attach_wal(wal.clone());
    let engine = Arc::new(engine);
    let outbox = Arc::new(outbox);
    let drops = Arc::new(drops);
    hub.attach_outbox(outbox.clone());
    {
        let (engine, drops) = (engine.clone(), drops.clone());
        hub.set_barrier(Box::new(move || {
            engine.quiesce();
            drops.quiesce();
        }));
    }
    engine.sweep();
    wal.sync()?;
    Ok(Core {
        engine,
        wal,
        report,
        restored_lsn,
        idempotency: Arc::new(idempotency),
        drops,
        outbox,
        events: hub,
        storage,
    })
}

/// Hands one logged record to its owner (the key store, the drops, the
/// webhook outbox, or the engine); returns when it was made. An error means the log
/// contradicts itself.
pub fn replay(
    engine: &Engine,
    idempotency: &IdempotencyStore,
    drops: &DropBook,
    outbox: &Outbox,
    frame: &wal::Frame<'_>,
    now_ms: u64,
) -> Result<u64, String> {
    match Record::decode(frame.kind, frame.payload)? {
        Record::Outbox(record) => {
            outbox.replay(record)?;
            // No time of its own that purging would need.
            Ok(0)
        }
        Record::Key(record) => idempotency.replay(record, now_ms),
        Record::Drop(record) => drops.replay_logged(record, frame.lsn),
        Record::Change(change) => {
            engine.set_replay_lsn(frame.lsn);
            engine.apply(&change)?;
            Ok(change.at_ms())
        }
        Record::Ring(_) => Err(format!(
            "a record of kind {} (the event ring's) in the log: it is only in checkpoints",
            frame.kind
        )),
    }
}

/// A checkpoint's tail after the engine's image: framed records, the key
/// store's answers, the drops', the webhook outbox's and the event ring's,
/// each handed to its owner. Returns whether it held the ring.
fn restore_tail(
    idempotency: &IdempotencyStore,
    drops: &DropBook,
    outbox: &Outbox,
    hub: &Hub,
    mut bytes: &[u8],
    now_ms: u64,
) -> Result<bool, String> {
    let mut ring = false;
    while !bytes.is_empty() {
        let d = wal::record::decode(bytes).map_err(|e| format!("checkpoint tail: {e}"))?;
        match Record::decode(d.kind, d.payload).map_err(|e| format!("checkpoint tail: {e}"))? {
            Record::Key(record) => {
                idempotency.replay(record, now_ms)?;
            }
            Record::Drop(record) => {
                drops.replay(record)?;
            }
            Record::Outbox(record) => outbox.replay(record)?,
            Record::Ring(record) => {
                ring = true;
                hub.restore(record)
                    .map_err(|e| format!("checkpoint tail: the event ring: {e}"))?;
            }
            Record::Change(_) => {
                return Err(format!("checkpoint tail: a record of kind {}", d.kind))
            }
        }
        bytes = &bytes[d.len..];
    }
    Ok(ring)
}

/// A checkpoint image: the engine's image (its length first), then the
/// idempotency keys', then the drops' (see [`restore_tail`]).
fn join_image(engine_image: &[u8], keys_image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + engine_image.len() + keys_image.len());
    out.extend_from_slice(&(engine_image.len() as u64).to_le_bytes());
    out.extend_from_slice(engine_image);
    out.extend_from_slice(keys_image);
    out
}

fn split_image(image: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(u64::from_le_bytes(image.get(..8)?.try_into().ok()?)).ok()?;
    let rest = &image[8..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub lsn: u64,
    pub image_bytes: usize,
    pub files_removed: usize,
    /// How long every shard was locked to take the image.
    pub stall: std::time::Duration,
}

impl Core {
    /// Writes a checkpoint of the engine at the current log position, then
    /// deletes the segments and checkpoints it makes unnecessary. The image
    /// is taken under all shard locks (the stall); the file is written
    /// after they are released, once the log is durable up to its position.
    pub fn checkpoint(&self) -> Result<Checkpoint, wal::Error> {
        let started = std::time::Instant::now();
        let mut keys_image = Vec::new();
        let mut drops_image = Vec::new();
        let mut outbox_image = Vec::new();
        let mut ring_image = Vec::new();
        // Every shard lock, the key store's lock, every drop's and the
        // outbox's are held while the log position is read: no change of
        // any kind is half logged.
        let (lsn, engine_image) = self.engine.image(|| {
            let (lsn, image) = self.idempotency.with_locked(|| {
                let (lsn, image) = self.drops.with_locked(|| {
                    let (lsn, image) = self.outbox.with_locked(|| {
                        // Every event of a change up to the position is
                        // told by now (under the locks held here).
                        self.events.image(&mut ring_image);
                        self.wal.appended_lsn()
                    });
                    outbox_image = image;
                    lsn
                });
                drops_image = image;
                lsn
            });
            keys_image = image;
            lsn
        });
        let stall = started.elapsed();
        keys_image.extend_from_slice(&drops_image);
        keys_image.extend_from_slice(&outbox_image);
        keys_image.extend_from_slice(&ring_image);
        let image = join_image(&engine_image, &keys_image);
        // The image must never be ahead of the durable log: recovery
        // continues the log right after it.
        self.wal.wait_durable(lsn)?;
        snapshot::write(self.storage.as_ref(), lsn, &image)?;
        let files_removed = snapshot::prune(self.storage.as_ref(), lsn)?;
        Ok(Checkpoint {
            lsn,
            image_bytes: image.len(),
            files_removed,
            stall,
        })
    }
}
