//! The event feed (contract, "Events"): `stock.out`, `stock.back`,
//! `hold.expired`, `hold.confirmed` and `drop.opened`, told by the engine
//! and the drops under the locks of each change ([`Hub::emit`]), kept in a
//! bounded ring, and shown to subscribers only once the change is durable.
//!
//! # Ids
//!
//! An event's id is `max(previous id + 1, LSN << 16)`: it only grows, and
//! it is derived from the log record of its change. A change yields at
//! most a few dozen events (one per item, plus one), and the changes in
//! flight at once are as many as the threads making them, so ids stay
//! within `(LSN + 1) << 16` and a restart, whose LSNs are all higher than
//! before, starts above every id already given.
//!
//! # Visibility
//!
//! `emit` appends to the ring and raises `published`; the pump
//! ([`Hub::pump`], one task) waits until the highest LSN behind the
//! published events is durable, then raises `visible`. Subscribers read
//! events up to `visible` only: no storefront hears of a change a crash
//! could still take back. Nothing in this path waits on a subscriber.
//!
//! # Memory
//!
//! At most `events.retained_max` events are kept; a subscriber resuming
//! from before the oldest kept one (or from before a restart: the ring is
//! not kept across restarts) is told `reset` first.

pub mod config;
pub mod gzip;
mod tell;
pub mod webhooks;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    events: VecDeque<Arc<Event>>,
    last_id: u64,
    /// The highest LSN behind any event published.
    max_lsn: u64,
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
    /// The first id this process may give; ids below it came before.
    floor: u64,
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
    /// A hub for a process whose log's last LSN is `last_lsn`.
    pub fn new(options: Options, last_lsn: u64) -> Hub {
        // The first id this process may give: above every earlier one.
        let floor = (last_lsn + 1) << 16;
        Hub {
            options,
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                last_id: floor - 1,
                max_lsn: 0,
                evicted_id: 0,
            }),
            floor,
            published: tokio::sync::watch::channel(floor - 1).0,
            visible: tokio::sync::watch::channel(floor - 1).0,
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
        let hub = Hub::new(options, 0);
        let floor = floor.max(1);
        hub.ring.lock().last_id = floor - 1;
        hub.published.send_replace(floor - 1);
        hub.visible.send_replace(floor - 1);
        Hub { floor, ..hub }
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
        ring.last_id = id;
        ring.max_lsn = ring.max_lsn.max(lsn);
        let frame = format!("id: {id}\nevent: {}\ndata: {data}\n\n", kind.as_str());
        ring.events.push_back(Arc::new(Event {
            id,
            kind,
            lsn,
            frame: Bytes::from(frame),
        }));
        while ring.events.len() > self.options.retained_max {
            if let Some(old) = ring.events.pop_front() {
                ring.evicted_id = old.id;
            }
        }
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
        let id = (ring.last_id + 1).max(lsn << 16);
        self.push(&mut ring, id, lsn, kind, &data);
        drop(ring);
        self.published.send_replace(id);
        match self.outbox.get() {
            Some(outbox) if outbox.wants(kind) => outbox.queue(id, kind, at_ms, data.as_bytes()),
            _ => 0,
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
            let (id, lsn) = {
                let ring = self.ring.lock();
                (ring.last_id, ring.max_lsn)
            };
            if id > *self.visible.borrow() {
                if !durable(lsn).await {
                    // The log failed: nothing more becomes durable.
                    return;
                }
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
        if (cursor > 0 && cursor < self.floor - 1 && self.floor > (1 << 16))
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
