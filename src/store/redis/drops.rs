//! Drops on the redis store (contract: drops, entries, the seed and every
//! admission are in Redis on the redis store).
//!
//! Every node keeps a [`DropBook`] of its own, built as a replicated state
//! machine: a change is a *command* appended to one Redis stream,
//! `P:{drops}:log` (fields `k` the record's kind, `p` the record as the
//! log encodes it, in hex, `n` the sending node's nonce), and every node
//! applies the stream in order with [`DropBook::apply_command`], at the
//! time the stream gives each entry: the milliseconds of its Redis id,
//! Redis's one clock, never decreasing along the stream. The rules are the
//! embedded book's own, so every node's book is the same, and the sender
//! answers with what applying its own command did (a join finds its
//! position, a second join of the same customer through another node finds
//! it in). An opening and each admission record are commands too, sent by
//! whichever node first finds them due (a request after `opens_at_ms`, or
//! the tail loop every [`TAIL_EVERY`]); a command that finds its work done
//! changes nothing. The seed is drawn by the node that creates the drop
//! and kept in the stream, never shown before the opening.
//!
//! Reads (a view, an entry) read the stream to its end first, so they see
//! every change acknowledged through any node. The gate reads the node's
//! book; a reservation it refuses reads the stream and asks again. A drop
//! this node has not read yet cannot let a reservation through: each SKU
//! of a drop is marked `P:{sku}:g` (its drop's name; set by every node that
//! applies the drop's `put`, before a `PUT` is answered), and the reserve
//! scripts refuse (code 9) a SKU whose drop is not among those the node
//! passed; the node then reads the stream and gates again.
//!
//! Bounds: a join that this node's book (read to the end) already refuses
//! is not sent. The stream is compacted ([`RedisStore::drops_compact`]):
//! a node that has read [`COMPACT_AFTER_ENTRIES`] entries since it last
//! compacted keeps its book, read to the end, as `P:{drops}:image` and cuts
//! the entries before it, keeping those of the last
//! [`COMPACT_HORIZON_MS`]. A node whose place was cut (behind by more than
//! that) or a new node takes the image in place of the entries. The
//! `[drops]` settings must be the same on every node (each book applies
//! them).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

mod compact;

use super::{text, unbucketed, Error, RedisStore, Scope};
use crate::drops::line::EntryView;
use crate::drops::record::DropRecord;
use crate::drops::{self, order, Applied, DropBook, DropView, Spec};
use crate::engine::ReserveRequest;
use crate::wal::Entry as _;

/// How many entries one read of the stream takes at most.
const READ_BATCH: usize = 1_000;

/// How often each node reads the stream and sends the openings and
/// admission records it finds due.
pub const TAIL_EVERY: Duration = Duration::from_millis(100);

/// Compaction of the stream (see [`RedisStore::drops_compact`]): a node
/// compacts once it has read this many entries since it last did (or
/// started), and at most once every [`COMPACT_EVERY`].
pub const COMPACT_AFTER_ENTRIES: u64 = 50_000;

/// The least time between two compactions by one node.
pub const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// A compaction keeps the entries of this many last milliseconds (a node
/// behind by less reads on; one behind by more takes the image).
pub const COMPACT_HORIZON_MS: u64 = 300_000;

/// A stream id: (milliseconds, sequence).
pub(super) type StreamId = (u64, u64);

/// One SKU's gate mark to set (`Some(drop)`) or to clear if it still
/// names `drop`.
struct Mark {
    sku: String,
    drop: Arc<str>,
    set: bool,
}

/// Where the node has read the stream to, and the marks not yet written.
#[derive(Default)]
struct Tail {
    last: StreamId,
    marks: Vec<Mark>,
    /// Drops opened by what was applied, whose `drop.opened` is still to
    /// be told (the event feed).
    opened: Vec<String>,
    /// The number (see `DropLog::reads`) of the last read to the end.
    read_to_end: u64,
    /// Entries applied since this node last compacted (or started), and
    /// when it last compacted.
    applied: u64,
    compacted_at: Option<std::time::Instant>,
    /// Images taken in place of the entries a compaction cut.
    images_taken: u64,
}

/// A command's place in [`DropLog::awaited`], taken out when dropped.
struct Awaited<'a> {
    awaited: &'a parking_lot::Mutex<HashMap<u64, Option<Result<Applied, drops::Error>>>>,
    n: u64,
}

impl Drop for Awaited<'_> {
    fn drop(&mut self) {
        self.awaited.lock().remove(&self.n);
    }
}

/// What one read of the stream gave.
enum Read {
    Entries(Vec<(StreamId, Vec<Value>)>),
    /// A compaction cut entries after the position read from: the book's
    /// image through this entry id.
    Image(StreamId, Vec<u8>),
}

/// The redis store's drops: this node's book and where it has read to.
pub struct DropLog {
    pub book: DropBook,
    tail: tokio::sync::Mutex<Tail>,
    /// Commands this node sent and is waiting for, by nonce, with what
    /// applying them did once applied.
    awaited: parking_lot::Mutex<HashMap<u64, Option<Result<Applied, drops::Error>>>>,
    next_nonce: AtomicU64,
    /// Numbers the reads to the end as they begin: a caller that wants
    /// the stream to its end is served by a read that began after it
    /// asked (several waiting callers, one read).
    reads: AtomicU64,
}

impl DropLog {
    pub fn new(options: drops::Options) -> DropLog {
        DropLog {
            book: DropBook::replicated(options, Arc::new(crate::clock::SystemClock)),
            tail: tokio::sync::Mutex::new(Tail::default()),
            awaited: parking_lot::Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }
}

pub(super) fn parse_id(id: &str) -> Option<StreamId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A stream range's reply as (id, fields) pairs.
pub(super) fn entries(reply: Value) -> Result<Vec<(StreamId, Vec<Value>)>, Error> {
    reply
        .into_array()
        .into_iter()
        .map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err(super::bad_reply("a malformed stream entry".into()));
            };
            let id = id
                .as_string()
                .as_deref()
                .and_then(parse_id)
                .ok_or_else(|| super::bad_reply("a stream entry's id".into()))?;
            Ok((id, fields.into_array()))
        })
        .collect()
}

/// The value of field `name` of a stream entry.
pub(super) fn field(fields: &[Value], name: &str) -> Option<String> {
    fields
        .chunks(2)
        .find(|kv| kv[0].as_str().as_deref() == Some(name))
        .and_then(|kv| kv.get(1))
        .and_then(|v| v.as_string())
}

fn store_error(e: Error) -> drops::Error {
    drops::Error::Store(e.to_string())
}

/// ` a b ` for drops `a` and `b`: what the reserve scripts look a SKU's
/// drop up in.
fn passed_list(passed: &[Arc<str>]) -> Cow<'static, str> {
    if passed.is_empty() {
        return Cow::Borrowed(" ");
    }
    let mut out = String::from(" ");
    for name in passed {
        out.push_str(name);
        out.push(' ');
    }
    Cow::Owned(out)
}

impl RedisStore {
    fn drops_log_key(&self) -> String {
        format!("{}:{{drops}}:log", self.prefix)
    }

    fn drops_image_key(&self) -> String {
        format!("{}:{{drops}}:image", self.prefix)
    }

    pub(super) fn gate_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}:g", self.prefix)
    }

    /// The node's drop book.
    pub fn drop_book(&self) -> &DropBook {
        &self.drops.book
    }

    /// Appends `record` to the stream and returns what applying it did.
    async fn drop_submit(&self, record: &DropRecord<'_>) -> Result<Applied, drops::Error> {
        let mut payload = Vec::new();
        record.encode(&mut payload).map_err(|e| {
            drops::Error::Store(format!("a drop command that does not encode: {e}"))
        })?;
        let n = self.drops.next_nonce.fetch_add(1, Relaxed);
        self.drops.awaited.lock().insert(n, None);
        // Whatever ends this request (an answer, an error, a timeout or a
        // client gone that drops it mid-way), its entry goes.
        let _awaited = Awaited {
            awaited: &self.drops.awaited,
            n,
        };
        let sent = self
            .run(
                Scope::Now,
                &self.scripts.drop_append,
                vec![self.drops_log_key()],
                vec![
                    self.argv_prefix.clone(),
                    record.kind().to_string(),
                    order::hex(&payload),
                    format!("{}-{n}", self.epoch),
                ],
            )
            .await;
        let id = match sent {
            Ok(reply) => parse_id(&text(&reply, 1)),
            Err(e) => return Err(store_error(e)),
        };
        let caught = match id {
            Some(id) => self.drops_catch_up(Some(id)).await,
            None => Err(drops::Error::Store(
                "the drops' log gave no entry id".to_owned(),
            )),
        };
        let applied = self.drops.awaited.lock().remove(&n).flatten();
        caught?;
        applied.unwrap_or_else(|| {
            Err(drops::Error::Store(
                "the drops' log did not give back the command sent".to_owned(),
            ))
        })
    }

    /// Reads the stream and applies it, to its end (`None`) or at least
    /// through `through`; then writes the gate marks the applied `put`s
    /// call for. One reader at a time: a caller that finds the work done
    /// by another reads nothing.
    async fn drops_catch_up(&self, through: Option<StreamId>) -> Result<(), drops::Error> {
        let asked = self.drops.reads.load(SeqCst);
        let mut tail = self.drops.tail.lock().await;
        if through.is_none() && tail.read_to_end > asked && tail.marks.is_empty() {
            return Ok(());
        }
        let this_read = self.drops.reads.fetch_add(1, SeqCst) + 1;
        loop {
            if through.is_some_and(|t| tail.last >= t) {
                break;
            }
            let entries = match self
                .drops_read(tail.last, READ_BATCH)
                .await
                .map_err(store_error)?
            {
                Read::Entries(entries) => entries,
                Read::Image(id, image) => {
                    self.drops_take_image(&mut tail, id, &image)?;
                    continue;
                }
            };
            let read = entries.len();
            for (id, fields) in entries {
                let Tail { marks, opened, .. } = &mut *tail;
                self.drops_apply(id, &fields, marks, opened);
                tail.last = id;
                tail.applied += 1;
            }
            if read == 0 {
                if through.is_some() {
                    return Err(drops::Error::Store(
                        "the drops' log ends before a command this node sent".into(),
                    ));
                }
                break;
            }
            if read < READ_BATCH && through.is_none() {
                break;
            }
        }
        if through.is_none() {
            tail.read_to_end = this_read;
        }
        while let Some(mark) = tail.marks.first() {
            let (value, was) = match mark.set {
                true => (mark.drop.to_string(), String::new()),
                false => (String::new(), mark.drop.to_string()),
            };
            self.run(
                Scope::Now,
                &self.scripts.gate_mark,
                vec![self.gate_key(&mark.sku)],
                vec![self.argv_prefix.clone(), value, was],
            )
            .await
            .map_err(store_error)?;
            tail.marks.remove(0);
        }
        while let Some(drop) = tail.opened.first() {
            self.tell_drop_opened(drop).await.map_err(store_error)?;
            tail.opened.remove(0);
        }
        Ok(())
    }

    /// Applies one entry of the stream (a malformed one, which no node
    /// wrote, is skipped by every node alike).
    fn drops_apply(
        &self,
        id: StreamId,
        fields: &[Value],
        marks: &mut Vec<Mark>,
        opened: &mut Vec<String>,
    ) {
        let field = |name: &str| field(fields, name);
        let payload = field("p").and_then(|p| order::unhex(&p));
        let kind = field("k").and_then(|k| k.parse::<u8>().ok());
        let (Some(kind), Some(payload)) = (kind, payload) else {
            crate::log_line!(
                "stampede: drops' log entry {}-{} is malformed; skipped",
                id.0,
                id.1
            );
            return;
        };
        let record = match DropRecord::decode(kind, &payload) {
            Ok(record) => record,
            Err(e) => {
                crate::log_line!("stampede: drops' log entry {}-{}: {e}; skipped", id.0, id.1);
                return;
            }
        };
        let book = &self.drops.book;
        let put = match &record {
            DropRecord::Put { drop, .. } => Some((*drop, book.skus_of(drop))),
            _ => None,
        };
        let name = record.drop_name().to_owned();
        let was_opened = book.is_opened(&name);
        let applied = book.apply_command(record, id.0);
        if !was_opened && book.is_opened(&name) {
            opened.push(name);
        }
        if let (Some((drop, before)), Ok(_)) = (put, &applied) {
            let drop: Arc<str> = drop.into();
            let after = book.skus_of(&drop);
            for sku in before.iter().filter(|s| !after.contains(s)) {
                marks.push(Mark {
                    sku: sku.clone(),
                    drop: drop.clone(),
                    set: false,
                });
            }
            for sku in after {
                marks.push(Mark {
                    sku,
                    drop: drop.clone(),
                    set: true,
                });
            }
        }
        let ours = field("n").and_then(|n| {
            let (epoch, n) = n.split_once('-')?;
            (epoch.parse::<u32>().ok()? == self.epoch)
                .then(|| n.parse::<u64>().ok())
                .flatten()
        });
        if let Some(n) = ours {
            if let Some(slot) = self.drops.awaited.lock().get_mut(&n) {
                *slot = Some(applied);
            }
        }
    }

    /// Start-up: reads the whole stream (and writes every drop's marks).
    pub async fn drops_start(&self) -> Result<usize, drops::Error> {
        self.drops_catch_up(None).await?;
        Ok(self.drops.book.views().len())
    }

    /// The tail loop's one turn: reads the stream, then sends the
    /// openings and admission records due.
    pub async fn drops_tick(&self) -> Result<(), drops::Error> {
        self.drops_catch_up(None).await?;
        let due = {
            let tail = self.drops.tail.lock().await;
            tail.applied >= COMPACT_AFTER_ENTRIES
                && tail
                    .compacted_at
                    .is_none_or(|at| at.elapsed() >= COMPACT_EVERY)
        };
        if due {
            self.drops_compact(COMPACT_HORIZON_MS).await?;
        }
        let (open, admit) = self.drops.book.due_commands(self.drops.book.now_ms());
        for drop in &open {
            self.drop_submit(&DropRecord::Opened { drop, at_ms: 0 })
                .await?;
        }
        for drop in &admit {
            self.drop_submit(&DropRecord::Admitted {
                drop,
                through: 0,
                at_ms: 0,
            })
            .await?;
        }
        Ok(())
    }

    /// Reads the stream to its end and opens `drop` if it is due.
    async fn drop_ready(&self, drop: &str) -> Result<(), drops::Error> {
        self.drops_catch_up(None).await?;
        if self
            .drops
            .book
            .is_due_unopened(drop, self.drops.book.now_ms())
        {
            self.drop_submit(&DropRecord::Opened { drop, at_ms: 0 })
                .await?;
        }
        Ok(())
    }

    /// `PUT /v1/drops/{drop}`.
    pub(super) async fn put_drop(
        &self,
        name: &str,
        spec: Spec,
    ) -> Result<(bool, DropView), drops::Error> {
        let book = &self.drops.book;
        book.check_name(name)?;
        book.check_spec(&spec)?;
        if let Some(sku) = spec.skus.iter().find(|s| self.buckets_of(s).is_some()) {
            return Err(drops::Error::Invalid {
                field: "skus",
                detail: format!(
                    "sku {sku} is spread over stock buckets (store.redis.buckets): a drop cannot gate it"
                ),
            });
        }
        let seed = drops::draw_seed()?;
        let applied = self
            .drop_submit(&DropRecord::Put {
                drop: name,
                spec: std::borrow::Cow::Owned(spec),
                seed,
                at_ms: 0,
            })
            .await?;
        match applied {
            Applied::Put(created, view) => Ok((created, view)),
            _ => Err(drops::Error::Store(
                "a put applied as another command".into(),
            )),
        }
    }

    /// `GET /v1/drops/{drop}`.
    pub(super) async fn view_drop(&self, name: &str) -> Result<DropView, drops::Error> {
        self.drop_ready(name).await?;
        Ok(self.drops.book.view(name)?.value)
    }

    /// `POST /v1/drops/{drop}/entries`.
    pub(super) async fn join_drop(
        &self,
        name: &str,
        customer: &str,
    ) -> Result<(bool, EntryView), drops::Error> {
        self.drop_ready(name).await?;
        if let Some(entry) = self
            .drops
            .book
            .check_join(name, customer, self.drops.book.now_ms())?
        {
            return Ok((false, entry));
        }
        let applied = self
            .drop_submit(&DropRecord::Join {
                drop: name,
                customer_id: customer,
                at_ms: 0,
            })
            .await?;
        match applied {
            Applied::Join(joined, entry) => Ok((joined, entry)),
            _ => Err(drops::Error::Store(
                "a join applied as another command".into(),
            )),
        }
    }

    /// `GET /v1/drops/{drop}/entries/{customer_id}`.
    pub(super) async fn entry_of_drop(
        &self,
        name: &str,
        customer: &str,
    ) -> Result<EntryView, drops::Error> {
        self.drop_ready(name).await?;
        Ok(self.drops.book.entry(name, customer)?.value)
    }

    /// The gate before a reservation: the drops `req`'s customer passed
    /// (as the scripts take them). `gated_by`: a script refused a SKU of
    /// this drop, not passed; the node reads the stream and gates again,
    /// and a SKU still marked with a drop that (read to the end) does not
    /// gate it has its stale mark cleared.
    pub(super) async fn drops_gate(
        &self,
        req: &ReserveRequest<'_>,
        gated_by: Option<&str>,
    ) -> Result<Cow<'static, str>, Error> {
        let book = &self.drops.book;
        let skus = || req.items.iter().map(|i| unbucketed(i.sku));
        if gated_by.is_none() {
            if book.is_empty() {
                return Ok(passed_list(&[]));
            }
            if let Ok(passed) = book.gate(req.customer_id, skus()) {
                return Ok(passed_list(&passed));
            }
        }
        let ready = async {
            self.drops_catch_up(None).await?;
            for drop in book.drops_of(skus()) {
                if book.is_due_unopened(&drop, self.drops.book.now_ms()) {
                    self.drop_submit(&DropRecord::Opened {
                        drop: &drop,
                        at_ms: 0,
                    })
                    .await?;
                }
            }
            Ok::<_, drops::Error>(())
        };
        ready.await?;
        let passed = book.gate(req.customer_id, skus())?;
        if let Some(stale) = gated_by.filter(|d| !passed.iter().any(|p| &**p == *d)) {
            let gates = book.skus_of(stale);
            for sku in skus().filter(|s| !gates.iter().any(|g| g == s)) {
                self.run(
                    Scope::Now,
                    &self.scripts.gate_mark,
                    vec![self.gate_key(sku)],
                    vec![self.argv_prefix.clone(), String::new(), stale.to_owned()],
                )
                .await?;
            }
        }
        Ok(passed_list(&passed))
    }
}
