//! The event feed (contract, "Events"): `stock.out`, `stock.back`,
//! `hold.expired`, `hold.confirmed` and `drop.opened`, told by the engine
//! and the drops under the locks of each change ([`Hub::emit`]), kept in a
//! bounded ring, and shown to subscribers only once the change is durable.
//!
//! # Ids
//!
//! An event's id is `LSN << 16 | k`: the LSN of its change's log record,
//! and its place among that change's events (a change yields at most a
//! few dozen: one per item, plus one). It is a function of the log alone,
//! so replay gives every event the id it had, and a restart's LSNs are all
//! higher than before.
//!
//! # Visibility
//!
//! `emit` stages the event and raises `published`; the pump ([`Hub::pump`],
//! one task) waits until the highest LSN staged is durable, then runs the
//! barrier (every publisher's locks taken and let go in turn: a change
//! appends its record and tells its events under the same locks, so after
//! it every event of an LSN up to the target is staged), moves the staged
//! events up to that LSN into the ring in id order, and raises `visible`.
//! Subscribers read events up to `visible` only: no storefront hears of a
//! change a crash could still take back, and ids reach them in order.
//! Nothing in this path waits on a subscriber.
//!
//! # Memory, and restarts
//!
//! At most `events.retained_max` events are kept; a subscriber resuming
//! from before the oldest kept one is told `reset` first. The embedded
//! store keeps them through restarts, kill -9 included (contract v1.2,
//! errata): a checkpoint carries the ring ([`Hub::image`]), and replay
//! tells again, under their own ids, the events of the records after it.

pub mod config;
pub mod gzip;
pub mod record;
mod tell;
pub mod webhooks;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;

/// The kinds of event, in the contract's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StockOut,
    StockBack,
    HoldExpired,
    HoldConfirmed,
    DropOpened,
    PaymentFailed,
    PaymentOrphaned,
    PaymentUnmatched,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::StockOut,
        Kind::StockBack,
        Kind::HoldExpired,
        Kind::HoldConfirmed,
        Kind::DropOpened,
        Kind::PaymentFailed,
        Kind::PaymentOrphaned,
        Kind::PaymentUnmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StockOut => "stock.out",
            Kind::StockBack => "stock.back",
            Kind::HoldExpired => "hold.expired",
            Kind::HoldConfirmed => "hold.confirmed",
            Kind::DropOpened => "drop.opened",
            Kind::PaymentFailed => "payment.failed",
            Kind::PaymentOrphaned => "payment.orphaned",
            Kind::PaymentUnmatched => "payment.unmatched",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// This kind's bit in a [`Kinds`] set.
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The kinds a stream may read without a key (`events.public_types` may
/// list only these): they carry no customer data.
pub const PUBLIC_KINDS: [Kind; 3] = [Kind::StockOut, Kind::StockBack, Kind::DropOpened];

/// A set of kinds (a `?types=` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(pub u8);

impl Kinds {
    pub const ALL: Kinds = Kinds(0b1111_1111);

    pub fn has(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// `stock.out,stock.back`: the kinds named; an unknown one is named
    /// back as the error.
    pub fn parse(list: &str) -> Result<Kinds, String> {
        let mut set = 0;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            set |= Kind::parse(name).ok_or_else(|| name.to_owned())?.bit();
        }
        Ok(Kinds(set))
    }
}

/// One event, its SSE frame already written.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: Kind,
    /// The LSN of the change it tells of.
    pub lsn: u64,
    /// `id: N\nevent: T\ndata: {...}\n\n`
    pub frame: Bytes,
}

/// The most stream writes a second all subscribers together get under a
/// steady flow of events: past `STREAM_WRITES_PER_S × flush_interval`
/// subscribers, streams are written less often than every
/// `events.flush_interval_ms` (1,000 streams: every 200 ms). Measured:
/// BENCHMARKS.md, "Events".
pub const STREAM_WRITES_PER_S: u64 = 5_000;

/// Bounds, from `[events]`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retained_max: usize,
    pub subscribers_max: usize,
    /// The least time between two raises of `visible` (`events.flush_interval_ms`).
    pub flush_interval: std::time::Duration,
}

struct Ring {
    /// In id order: what the pump moved, what replay told.
    events: VecDeque<Arc<Event>>,
    last_id: u64,
    /// Told but not yet moved into `events` by the pump (any order).
    staged: Vec<Arc<Event>>,
    /// Per LSN staged, the next event's place `k` among its change's.
    next_k: std::collections::HashMap<u64, u16>,
    /// The id of the newest event dropped from the ring (0: none).
    evicted_id: u64,
}

/// Chunks kept for streams at the same place.
const CHUNKS_CACHED: usize = 32;

struct CachedChunk {
    key: (u64, u8, u64, usize),
    bytes: Bytes,
    /// The same as one gzip segment, once a gzip stream asked for it.
    gz: Arc<std::sync::OnceLock<Bytes>>,
    count: usize,
    next: u64,
    left: usize,
}

/// What [`Hub::read_chunk`] gives a stream.
pub enum Chunk {
    /// The frames (possibly none) and how many events they hold.
    Frames(Bytes, usize),
    Reset {
        oldest_id: u64,
    },
}

/// What a subscriber reads after its cursor.
pub enum Read {
    /// Events after the cursor, up to what is visible (maybe none).
    Events(Vec<Arc<Event>>),
    /// Events after the cursor are no longer kept: the oldest kept id (or
    /// the next to come), for `event: reset`.
    Reset { oldest_id: u64 },
}

pub struct Hub {
    options: Options,
    ring: Mutex<Ring>,
    /// Ids below it are not known here (the redis store: older than its
    /// stream keeps; the embedded store: before a checkpoint written
    /// without its ring): a resume from below is told `reset`.
    floor: AtomicU64,
    /// While the log is replayed: events go straight into the ring (their
    /// changes are durable), and no webhook is queued (the outbox replays
    /// its own records).
    replaying: std::sync::atomic::AtomicBool,
    /// Takes and lets go, in turn, every lock a change tells its events
    /// under (see the module docs); none: nothing to wait for.
    barrier: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    published: tokio::sync::watch::Sender<u64>,
    visible: tokio::sync::watch::Sender<u64>,
    /// Raised once when the server stops: streams end.
    closed: tokio::sync::watch::Sender<bool>,
    subscribers: AtomicUsize,
    /// Webhook deliveries, for the events some endpoint wants.
    outbox: std::sync::OnceLock<Arc<webhooks::Outbox>>,
    /// Chunks recently built for streams (see [`Hub::read_chunk`]).
    chunks: Mutex<VecDeque<CachedChunk>>,
}

impl Hub {
    /// An empty hub.
    pub fn new(options: Options) -> Hub {
        Hub {
            options,
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                last_id: 0,
                staged: Vec::new(),
                next_k: std::collections::HashMap::new(),
                evicted_id: 0,
            }),
            floor: AtomicU64::new(0),
            replaying: std::sync::atomic::AtomicBool::new(false),
            barrier: std::sync::OnceLock::new(),
            published: tokio::sync::watch::channel(0).0,
            visible: tokio::sync::watch::channel(0).0,
            closed: tokio::sync::watch::channel(false).0,
            subscribers: AtomicUsize::new(0),
            outbox: std::sync::OnceLock::new(),
            chunks: Mutex::new(VecDeque::new()),
        }
    }

    /// A hub whose first event will be `floor` or above (the redis store:
    /// ids are the event stream's, and `floor` the oldest it keeps); a
    /// subscriber resuming from before it is told `reset`.
    pub fn starting_at(options: Options, floor: u64) -> Hub {
        let hub = Hub::new(options);
        let floor = floor.max(1);
        hub.ring.lock().last_id = floor - 1;
        hub.published.send_replace(floor - 1);
        hub.visible.send_replace(floor - 1);
        hub.floor.store(floor, Ordering::Release);
        hub
    }

    /// Ids below `floor` are not known here: a resume from below is told
    /// `reset` (a checkpoint written without its ring).
    pub fn set_floor(&self, floor: u64) {
        self.floor.store(floor, Ordering::Release);
    }

    /// The barrier the pump runs before it moves staged events (see the
    /// module docs); set once, before any event is told.
    pub fn set_barrier(&self, barrier: Box<dyn Fn() + Send + Sync>) {
        let _ = self.barrier.set(barrier);
    }

    /// Replay starts: events told now go straight into the ring.
    pub fn start_replay(&self) {
        self.replaying.store(true, Ordering::Release);
    }

    /// Replay ended: what it told is visible (its changes are durable).
    pub fn finish_replay(&self) {
        self.replaying.store(false, Ordering::Release);
        let last = {
            let mut ring = self.ring.lock();
            // Replay's places are all told: only live ones are counted.
            ring.next_k.clear();
            ring.last_id
        };
        self.published.send_replace(last);
        self.visible.send_replace(last);
    }

    /// Adds one event told elsewhere (the redis store's event stream),
    /// its data already JSON, under an id at least `id` (above the last).
    pub fn publish_at(&self, id: u64, kind: Kind, data: &str) {
        let mut ring = self.ring.lock();
        let id = id.max(ring.last_id + 1);
        self.push(&mut ring, id, 0, kind, data);
        drop(ring);
        self.published.send_replace(id);
    }

    /// Forgets every event told so far: each subscriber is told `reset`
    /// at its next read (the redis store, when its event stream lost
    /// events the node had read and told: a failover; see
    /// `store::redis::events`). Events after this get higher ids.
    pub fn forget_all(&self) {
        let mut ring = self.ring.lock();
        let cut = ring.last_id + 1;
        ring.events.clear();
        ring.last_id = cut;
        ring.evicted_id = cut;
        drop(ring);
        self.chunks.lock().clear();
        // Streams wake (the pump raises `visible`) and read the reset.
        self.published.send_replace(cut);
    }

    /// Appends an event to the ring (its frame written), keeping at most
    /// `events.retained_max`.
    fn push(&self, ring: &mut Ring, id: u64, lsn: u64, kind: Kind, data: &str) {
        let frame = format!("id: {id}\nevent: {}\ndata: {data}\n\n", kind.as_str());
        self.push_event(
            ring,
            Arc::new(Event {
                id,
                kind,
                lsn,
                frame: Bytes::from(frame),
            }),
        );
    }

    /// Appends an event made already (ids only grow along the ring).
    fn push_event(&self, ring: &mut Ring, event: Arc<Event>) {
        ring.last_id = event.id;
        ring.events.push_back(event);
        while ring.events.len() > self.options.retained_max {
            if let Some(old) = ring.events.pop_front() {
                ring.evicted_id = old.id;
            }
        }
    }

    /// The ring as a checkpoint keeps it: its evicted id, then each event
    /// kept and staged (`event`/`events` records, see [`crate::records`]),
    /// in id order. Call it with every publisher's locks held, so nothing
    /// is staged meanwhile.
    pub fn image(&self, out: &mut Vec<u8>) {
        let ring = self.ring.lock();
        let mut staged: Vec<&Arc<Event>> = ring.staged.iter().collect();
        staged.sort_by_key(|e| e.id);
        let head = record::RingRecord::Evicted {
            id: ring
                .evicted_id
                .max(self.floor.load(Ordering::Acquire).saturating_sub(1)),
        };
        crate::wal::record::frame(&head, 0, out).expect("bug: a ring record encodes");
        for e in ring.events.iter().chain(staged) {
            let r = record::RingRecord::Event {
                id: e.id,
                lsn: e.lsn,
                kind: e.kind,
                frame: &e.frame,
            };
            crate::wal::record::frame(&r, 0, out).expect("bug: a ring record encodes");
        }
    }

    /// Puts back one record of a checkpoint's ring ([`Hub::image`]).
    pub fn restore(&self, record: record::RingRecord<'_>) -> Result<(), String> {
        let mut ring = self.ring.lock();
        match record {
            record::RingRecord::Evicted { id } => {
                ring.evicted_id = ring.evicted_id.max(id);
                ring.last_id = ring.last_id.max(id);
            }
            record::RingRecord::Event {
                id,
                lsn,
                kind,
                frame,
            } => {
                if id <= ring.last_id {
                    return Err(format!("event {id} after {}", ring.last_id));
                }
                let event = Arc::new(Event {
                    id,
                    kind,
                    lsn,
                    frame: Bytes::copy_from_slice(frame),
                });
                self.push_event(&mut ring, event);
            }
        }
        Ok(())
    }

    /// From now on events the webhooks want go to `outbox` too.
    pub fn attach_outbox(&self, outbox: Arc<webhooks::Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// Adds one event (the caller holds the locks of its change); returns
    /// the LSN of the outbox record it appended for webhooks, or 0.
    pub fn publish(&self, lsn: u64, at_ms: u64, kind: Kind, data: &impl Serialize) -> u64 {
        let data = serde_json::to_string(data).expect("event data serializes");
        let mut ring = self.ring.lock();
        let k = ring.next_k.entry(lsn).or_insert(0);
        let id = (lsn << 16) | u64::from(*k);
        *k = k.saturating_add(1);
        if self.replaying.load(Ordering::Acquire) {
            // In LSN order, durable: straight into the ring, no webhook.
            if id > ring.last_id {
                self.push(&mut ring, id, lsn, kind, &data);
            }
            return 0;
        }
        let frame = format!("id: {id}\nevent: {}\ndata: {data}\n\n", kind.as_str());
        ring.staged.push(Arc::new(Event {
            id,
            kind,
            lsn,
            frame: Bytes::from(frame),
        }));
        drop(ring);
        self.published.send_replace(id);
        match self.outbox.get() {
            Some(outbox) if outbox.wants(kind) => outbox.queue(id, kind, at_ms, data.as_bytes()),
            _ => 0,
        }
    }

    /// Moves the staged events of LSNs up to `lsn` into the ring, in id
    /// order (the barrier has run: none of them is still to come).
    fn move_staged(&self, lsn: u64) {
        let mut ring = self.ring.lock();
        let mut ready: Vec<Arc<Event>> = Vec::new();
        ring.staged.retain(|e| match e.lsn <= lsn {
            true => {
                ready.push(e.clone());
                false
            }
            false => true,
        });
        ring.next_k.retain(|&l, _| l > lsn);
        ready.sort_by_key(|e| e.id);
        for e in ready {
            if e.id > ring.last_id {
                self.push_event(&mut ring, e);
            }
        }
    }

    /// Makes published events visible once their changes are durable, until
    /// the hub closes. `durable(lsn)` waits for the log.
    pub async fn pump<F, Fut>(&self, durable: F)
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut published = self.published.subscribe();
        let mut closed = self.closed.subscribe();
        loop {
            let target = self.ring.lock().staged.iter().map(|e| e.lsn).max();
            if let Some(lsn) = target {
                if !durable(lsn).await {
                    // The log failed: nothing more becomes durable.
                    return;
                }
                if let Some(barrier) = self.barrier.get() {
                    barrier();
                }
                self.move_staged(lsn);
            }
            let id = self.ring.lock().last_id;
            if id > *self.visible.borrow() {
                self.visible.send_replace(id);
                // Streams wake at most this often: under a stream of
                // changes each writes a batch, not an event at a time.
                tokio::time::sleep(self.wake_gap()).await;
            }
            tokio::select! {
                changed = published.changed() => if changed.is_err() { return },
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    /// The least time between two raises of `visible`: the flush interval,
    /// stretched so that all streams together write at most
    /// [`STREAM_WRITES_PER_S`] times a second (each write to a socket
    /// costs the server, whatever its size).
    pub fn wake_gap(&self) -> std::time::Duration {
        let stretched = std::time::Duration::from_micros(
            (self.subscribers() as u64).saturating_mul(1_000_000) / STREAM_WRITES_PER_S,
        );
        self.options.flush_interval.max(stretched)
    }

    /// The id the next subscriber without `Last-Event-ID` starts after.
    pub fn visible_id(&self) -> u64 {
        *self.visible.borrow()
    }

    pub fn watch_visible(&self) -> tokio::sync::watch::Receiver<u64> {
        self.visible.subscribe()
    }

    pub fn watch_closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Events of `kinds` after `cursor`, up to `visible` and at most `max`;
    /// `Reset` when some after `cursor` are no longer kept. Also returns
    /// the cursor to continue from (past events of other kinds too) and
    /// how many visible events are still to read after it.
    pub fn read(&self, cursor: u64, kinds: Kinds, visible: u64, max: usize) -> (Read, u64, usize) {
        let ring = self.ring.lock();
        let oldest = ring.events.front().map_or(ring.last_id + 1, |e| e.id);
        // Before this process's first id, or before the oldest kept.
        let floor = self.floor.load(Ordering::Acquire);
        if (cursor > 0 && floor > 0 && cursor < floor - 1)
            || (ring.evicted_id > 0 && cursor < ring.evicted_id)
        {
            return (Read::Reset { oldest_id: oldest }, oldest - 1, 0);
        }
        let start = ring.events.partition_point(|e| e.id <= cursor);
        let end = ring.events.partition_point(|e| e.id <= visible);
        let mut out = Vec::new();
        let mut next = cursor;
        let mut i = start;
        while i < end && out.len() < max {
            let e = &ring.events[i];
            if kinds.has(e.kind) {
                out.push(e.clone());
            }
            next = e.id;
            i += 1;
        }
        (Read::Events(out), next, end - i)
    }

    /// [`Hub::read`] as one chunk of frames, ready to write. Streams at the
    /// same place with the same filter (the usual case: every caught-up
    /// stream) share one chunk: it is built once, and each stream's write
    /// is a reference to it. `gzip`: the chunk as a gzip segment
    /// ([`gzip::segment`]), compressed once too.
    pub fn read_chunk(
        &self,
        cursor: u64,
        kinds: Kinds,
        visible: u64,
        max: usize,
        gzip: bool,
    ) -> (Chunk, u64, usize) {
        let key = (cursor, kinds.0, visible, max);
        let shared = |bytes: &Bytes, gz: &std::sync::OnceLock<Bytes>| match gzip {
            true if !bytes.is_empty() => gz.get_or_init(|| gzip::segment(bytes)).clone(),
            _ => bytes.clone(),
        };
        let cached = {
            let chunks = self.chunks.lock();
            chunks.iter().find(|c| c.key == key).and_then(|c| {
                let evicted = self.ring.lock().evicted_id;
                (evicted == 0 || cursor >= evicted)
                    .then(|| (c.bytes.clone(), c.gz.clone(), c.count, c.next, c.left))
            })
        };
        if let Some((bytes, gz, count, next, left)) = cached {
            // Compressed outside the cache's lock (once: others wait).
            return (Chunk::Frames(shared(&bytes, &gz), count), next, left);
        }
        let (read, next, left) = self.read(cursor, kinds, visible, max);
        let events = match read {
            Read::Reset { oldest_id } => return (Chunk::Reset { oldest_id }, next, left),
            Read::Events(events) => events,
        };
        let bytes = match &events[..] {
            [] => Bytes::new(),
            [one] => one.frame.clone(),
            many => {
                let mut joined = Vec::with_capacity(many.iter().map(|e| e.frame.len()).sum());
                for e in many {
                    joined.extend_from_slice(&e.frame);
                }
                Bytes::from(joined)
            }
        };
        let gz = Arc::new(std::sync::OnceLock::new());
        {
            let mut chunks = self.chunks.lock();
            if chunks.len() >= CHUNKS_CACHED {
                chunks.pop_front();
            }
            chunks.push_back(CachedChunk {
                key,
                bytes: bytes.clone(),
                gz: gz.clone(),
                count: events.len(),
                next,
                left,
            });
        }
        (Chunk::Frames(shared(&bytes, &gz), events.len()), next, left)
    }

    /// A subscriber's place: `None` when `events.subscribers_max` are
    /// attached.
    pub fn subscribe(self: &Arc<Self>) -> Option<Subscription> {
        let n = self.subscribers.fetch_add(1, Ordering::AcqRel);
        if n >= self.options.subscribers_max {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Subscription { hub: self.clone() })
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// The oldest id kept (or the next to come, if none is).
    pub fn oldest_id(&self) -> u64 {
        let ring = self.ring.lock();
        ring.events.front().map_or(ring.last_id + 1, |e| e.id)
    }

    /// Events kept, and the id of the newest.
    pub fn retained(&self) -> (usize, u64) {
        let ring = self.ring.lock();
        (ring.events.len(), ring.last_id)
    }

    /// `drop.opened`, from the drops (under the drop's lock).
    pub fn drop_opened(
        &self,
        lsn: u64,
        drop: &str,
        seed_hex: &str,
        entrants: usize,
        at_ms: u64,
    ) -> u64 {
        #[derive(Serialize)]
        struct Data<'a> {
            drop: &'a str,
            seed: &'a str,
            entrants: usize,
            at_ms: u64,
        }
        self.publish(
            lsn,
            at_ms,
            Kind::DropOpened,
            &Data {
                drop,
                seed: seed_hex,
                entrants,
                at_ms,
            },
        )
    }
}

/// A subscriber counted against `events.subscribers_max` until dropped.
pub struct Subscription {
    pub hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
