//! The redis store's server-side scripts (Lua, run with EVALSHA and loaded
//! again on NOSCRIPT). Each one reads everything it needs and makes every
//! check before its first write, takes the time from Redis `TIME` (the one
//! clock every node shares), and answers a fixed shape: `{0, ...}` on
//! success, `{code, ...}` on a refusal (see [`Refusal`] codes in
//! `redis.rs`). Every change is idempotent by hold id: fred sends a
//! command again after a reconnect, and a second run finds the first's
//! work done and answers as it did.
//!
//! Keys (`P` is `store.redis.key_prefix`; a SKU's keys share the hash tag
//! `{sku}`; a hold's keys share the tag `{T}` of its *slot*, the Redis
//! Cluster hash slot of its first SKU, with `T = store::slots::tag(slot)`,
//! so a hold whose SKUs share a slot is one script on one Redis shard):
//! - `P:{sku}`: hash `stock`, `held`, `sold`, `limit`;
//! - `P:{sku}:c`: hash customer -> units held + owned (the per-customer
//!   tally, kept for every SKU, so a limit set later needs no recount;
//!   dropped by Redis once the SKU has had no reservation for the longest
//!   a hold can live plus its retention: memory follows a SKU's recent
//!   customers, not all of them ever);
//! - `P:{T}:h:ID`: hash of a hold: `c` customer, `s` status (`h` held, `c`
//!   confirmed, `r` released, `e` expired), `t0` created, `t1` expires,
//!   `o` order_ref, `i` items (`sku qty sku qty ...`: SKU names hold no
//!   spaces), `pg`, `pr`, `ps` its payment's gateway, reference and time
//!   (a held hold with them is `pending_payment`); an ended hold is kept
//!   `holds.retention_ms`, then Redis drops it;
//! - `P:{T}:pe:GATEWAY:EVENT`: a gateway event settled on a hold of slot
//!   T, or, unmatched, in the slot of `GATEWAY:EVENT` itself: its first
//!   outcome, kept `payments.dedupe_ms`;
//! - `P:{T}:pr:GATEWAY:REF`: the hold a payment reference was recorded
//!   for (T: the slot of `GATEWAY:REF`), kept while the hold may be read;
//! - `P:{T}:x`: the slot's held holds by expiry;
//! - `P:due`: slot -> a time at or before the earliest expiry in the
//!   slot's `x` (lowered with each reservation and extension, set by the
//!   sweeper after it swept the slot, compare-and-set; a slot already due
//!   is moved 1 ms earlier by a lowering, so that a sweep under way fails
//!   its compare-and-set and the slot is swept again): what every node
//!   sweeps from;
//! - `P:k:KEY`: an idempotency key's state and answer (`f` fingerprint,
//!   `st` '0' in flight or the answer's status, `l` location, `b` body,
//!   `at` when; in flight: `tok` the running request's token, `sd` the
//!   seed its ids are drawn from, `dl` when another may take over);
//! - `P:{sku}:a:OP`: an adjust already applied (kept a while, so that a
//!   command sent again does not apply its delta twice), holding the delta
//!   applied, or `u` once undone;
//! - `P:{bj}`: the journal of changes across stock buckets under way
//!   (`BUCKET_JOURNAL`), finished or undone by the sweep if the node that
//!   began one stopped half-way;
//! - `P:epoch`: the counter that numbers node starts (hold ids);
//! - `P:{drops}:log`: the drops' log, a stream of commands (see
//!   `store::redis::drops`), and `P:{drops}:image`, the book through one
//!   of its entries, below which the log was cut (`DROP_COMPACT`);
//! - `P:{sku}:g`: the drop that gates the SKU, if any (its name);
//! - `P:{events}`: the event stream (see `store::redis_events`), with
//!   `P:{events}:opened:DROP` (drop.opened told; kept a week), `P:{events}:gone:URL`
//!   (an endpoint answered 410) and, on a Redis Cluster, `P:{events}:moved`
//!   (slot -> the last id moved from the slot's `P:{T}:ev`, the events
//!   its scripts told).

/// Shared by every script: the clock, key names, the view of a hold.
const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// Sets a SKU's stock (creating it). KEYS: the SKU's hash. ARGV: prefix,
/// stock, limit ('' keeps it). `{created, stock, held, sold, limit}`, or
/// `{-1, committed}`.
const SET_STOCK: &str = include_str!("scripts/set_stock.lua");

/// Adds a signed delta to a SKU's stock, once per operation id (fred
/// sends a command again after a reconnect; a delta must not land twice).
/// KEYS: the SKU's hash, the operation's marker. ARGV: prefix, delta, the
/// largest stock, how long the marker is kept (ms). `{0, stock, held,
/// sold, limit}` (a repeat: the SKU as it is now), `{-1, committed}`,
/// `{-2}` unknown, `{-3, new stock}` too large.
/// `{-4}`: the operation was undone (`ADJUST_UNDO`); the marker keeps
/// the delta applied.
const ADJUST: &str = include_str!("scripts/adjust.lua");

/// Undoes an adjust step of a cut across stock buckets, and fences it: the
/// step's marker becomes `u`, so the step, if it arrives later, is refused
/// (`{-4}`). KEYS: the bucket's hash, the step's marker. ARGV: prefix, how
/// long the marker is kept (ms). `{1, stock}` given back, `{0}` nothing
/// to give back.
const ADJUST_UNDO: &str = include_str!("scripts/adjust_undo.lua");

/// The journal of changes across stock buckets (`P:{bj}`: field -> what
/// the change is, `|` the time it began). KEYS: the journal, an
/// operation's status (`P:{bj}:o:OP`: `run`, `done` or `undone`). ARGV:
/// prefix, then `put` field value (`{0, value stored}`); `begin` field
/// value ttl: `put` once the status is `run` (`{2}` done before, `{3}`
/// running or stopped half-way, `{4}` undone); `free` field stored status
/// ttl: compare-and-delete, leaving the status (`{1}` freed); or `list`
/// (`{0, now, field, value, ...}`).
const BUCKET_JOURNAL: &str = include_str!("scripts/bucket_journal.lua");

/// Places a hold, all or nothing (or partial). KEYS: the n SKU hashes,
/// the n tallies, the hold, its slot's expiry index, on one Redis
/// server `P:due`, then the n SKUs' gate marks. ARGV: prefix, id, customer, ttl_ms, fill ('a' or 'p'),
/// n, then n quantities, then n SKU names, then how long a tally outlives
/// the SKU's last reservation (ms: the longest a hold can live plus its
/// retention, so no hold outlives its tally), then the hold's slot ('' on
/// a cluster, where the node lowers `P:due` itself: another slot).
/// The view, or `{1, i}` unknown SKU, `{2, i, available}` short,
/// `{3, i, limit, current}` over the customer's limit, `{9, i, drop}` a
/// SKU gated by a drop the node did not pass (then the drops the node
/// passed, ` name name `: last ARGV).
const RESERVE: &str = include_str!("scripts/reserve.lua");

/// Reads a hold. KEYS: the hold. ARGV: prefix. The view or `{4}`.
const GET: &str = include_str!("scripts/get.lua");

/// Confirms a hold. KEYS: the hold, its slot's expiry index, its slot's
/// todo, and on a cluster its SKUs' hashes (else `{'need', ...}`, see
/// `declared`). ARGV: prefix, id, order_ref ('' for none), retention_ms.
/// The view (an 8th member 1: a hold across slots to settle), `{4}` not
/// found, `{5, status}` not active, `{6, expired_at}`.
const CONFIRM: &str = include_str!("scripts/confirm.lua");

/// Releases a hold (or expires it, if its time is up). KEYS: the hold,
/// its slot's expiry index, its slot's todo, and on a cluster its SKUs'
/// hashes and tallies (else `{'need', ...}`). ARGV: prefix, id,
/// retention_ms. The view (8th member as confirm's), `{4}`, `{5,
/// 'confirmed'}`.
const RELEASE: &str = include_str!("scripts/release.lua");

/// Extends a hold. KEYS: the hold, its slot's expiry index, and on a
/// cluster its SKUs' tallies (else `{'need', ...}`). ARGV: prefix, id,
/// ttl_ms, max_ttl_ms, how long a tally outlives a reservation (ms). The
/// view, `{4}`, `{5, status}`, `{6, expired_at}`.
const EXTEND: &str = include_str!("scripts/extend.lua");

/// Records a hold's payment (`/payment`). KEYS as extend's, the todo
/// third. ARGV: prefix, id, gateway, payment_ref, pending_ttl_ms,
/// pending_max_ms, how long a tally outlives the hold (ms). The view,
/// `{4}`, `{5, status}`, `{6, expired_at}`, `{7, payment_ref}` another
/// payment recorded.
const PAYMENT: &str = include_str!("scripts/payment.lua");

/// Settles a gateway event on a hold, once (the outcome table). KEYS: the
/// hold, its slot's expiry index and todo, the event's mark (same slot),
/// and on a cluster the hold's SKUs' hashes and tallies (else `{'need',
/// ...}`). ARGV: prefix, id, `s`ucceeded / `f`ailed / `c`anceled, gateway,
/// payment_ref ('' none), order_ref ('' none), '1' if the hold was found
/// by its payment_ref, dedupe_ms, retention_ms, tally_ms. The view with
/// the outcome as 12th member (8th as confirm's), `{8, outcome}` a repeat,
/// `{9}` no such hold, `{10}` a hold across slots still being placed.
const SETTLE: &str = include_str!("scripts/settle.lua");

/// A gateway event that names no hold: told once. KEYS: the event's mark.
/// ARGV: prefix, gateway, payment_ref ('' none), type, dedupe_ms. `{0,
/// 'unmatched'}` or `{8, outcome}` a repeat.
const UNMATCHED: &str = include_str!("scripts/unmatched.lua");

/// Expires up to a batch of a slot's holds whose time is up. KEYS: the
/// slot's expiry index, the slot's todo, and on a cluster the due holds
/// and their SKUs' hashes and tallies (else `{'need', ...}`: the holds
/// first, then, read, their SKUs). ARGV: prefix, batch,
/// retention_ms, the slot's tag. `{expired, more_due, earliest, across,
/// todo_first}`: `earliest` is the first expiry left in the slot, -1 for
/// none; `across` how many expired holds across slots it listed in the
/// todo; `todo_first` when the oldest todo entry was listed, -1 for none.
const SWEEP: &str = include_str!("scripts/sweep.lua");

/// A slot's earliest expiry and its todo's first entry (Redis Cluster: the
/// look through all slots for a `P:due` entry a failover lost). KEYS: the
/// slot's expiry index, its todo. ARGV: prefix. `{earliest, todo_first}`,
/// -1 for none.
const DUE_PEEK: &str = include_str!("scripts/due_peek.lua");

/// The slots whose due time has come (Redis's clock), up to a batch.
/// KEYS: `P:due`. ARGV: prefix, batch. `{slot, due, slot, due, ...}`.
const DUE_LIST: &str = include_str!("scripts/due_list.lua");

/// After a sweep of a slot: sets the slot's due time to its earliest
/// expiry left (or drops it, -1), but only if nobody lowered it since the
/// sweeper read it (a reservation made meanwhile keeps its lower time).
/// KEYS: `P:due`. ARGV: prefix, slot, the due time read, earliest.
/// `{1}` set, `{0}` left as it was.
const DUE_SETTLE: &str = include_str!("scripts/due_settle.lua");

/// Lowers a slot's due time (never raises it; a slot already due is moved
/// 1 ms earlier, see `lower_due`): on a Redis Cluster, where `P:due` is in
/// another slot than the hold, the node runs this before and after each
/// reservation and extension. KEYS: `P:due`. ARGV: prefix, slot, at_ms.
/// `{0}`.
const DUE_LOWER: &str = include_str!("scripts/due_lower.lua");

// ---- Holds across hash slots (Redis Cluster): a saga ------------------
//
// The hold's record is written first in its home slot (`s` = 'p',
// pending, with the request in `q`), and listed in the slot's `P:{T}:todo`
// (id -> when). Then each SKU is taken in SKU order by its own script in
// its own slot, which leaves a marker `P:{sku}:r:ID`: the units granted,
// '0', 'x' (a tombstone: undone, or never to be taken) or 's' (settled).
// Every step is idempotent by that marker. A refusal undoes the taken
// SKUs in reverse and tombstones the rest; then the record is committed
// (`s` = 'h', `m` = '1') or aborted (`s` = 'x', unreadable). Nothing of a
// saga is undone before its record is fenced (`s` = 'u', undoing:
// SAGA_FENCE), which the commit refuses: a saga is committed or undone,
// never both. Ending such a
// hold (confirm, release, expiry) changes its record, lists it in todo,
// and settles each SKU by its marker. Whatever a dead node left in todo,
// any node finishes: a pending reserve is undone (after a grace), an
// ended hold is settled.

/// Begins a saga. KEYS: the record, the slot's todo. ARGV: prefix, id,
/// customer, ttl_ms, fill, requested items ('sku qty ...'), retention.
/// `{0}` begun, `{1, status}` the record exists (a resend).
const SAGA_BEGIN: &str = include_str!("scripts/saga_begin.lua");

/// Takes one SKU of a saga. KEYS: the SKU's hash, its tally, the marker,
/// its gate mark.
/// ARGV: prefix, customer, qty, fill ('a' or 'p'), marker_ms, the drops
/// passed (` name name `), the SKU. `{0, granted}` (a resend: the same),
/// `{1}` unknown SKU, `{2, available}` short, `{3, limit, current}` over
/// the limit, `{9, drop}` gated by a drop not passed, `{7}` tombstoned
/// (undone already) or already settled (a resend that arrives after its
/// hold ended takes nothing).
const SAGA_TAKE: &str = include_str!("scripts/saga_take.lua");

/// Undoes one SKU of a saga (or makes sure it is never taken). KEYS: the
/// SKU's hash, its tally, the marker. ARGV: prefix, customer, marker_ms.
/// `{0}`.
const SAGA_UNDO: &str = include_str!("scripts/saga_undo.lua");

/// Settles one SKU of an ended saga hold by its marker. KEYS: the SKU's
/// hash, its tally, the marker. ARGV: prefix, customer, to ('c', or 'r'/'e'
/// giving the units back), marker_ms. `{0}`, or `{10}` if the SKU was
/// undone (a tombstone: recovery fenced the saga, so it never held; a
/// settle that meets one is a bug, never a silent 0).
const SAGA_SETTLE: &str = include_str!("scripts/saga_settle.lua");

/// Commits a saga: the hold is held from now. KEYS: the record, the slot's
/// todo, the slot's expiry index. ARGV: prefix, id, granted items. The
/// view, or `{8, status}` if it is no longer pending (undone by recovery).
const SAGA_COMMIT: &str = include_str!("scripts/saga_commit.lua");

/// Fences a saga before anything of it is undone: a pending record
/// (`p`) becomes `u` (undoing), which `SAGA_COMMIT` refuses, so a saga
/// is either committed before the fence (then it is not undone) or never.
/// KEYS: the record. ARGV: prefix. `{0}` undo it (pending, undoing,
/// aborted, or no record), `{1, status}` it is committed: leave it.
const SAGA_FENCE: &str = include_str!("scripts/saga_fence.lua");

/// Ends a saga that did not hold anything (or whose node died before it
/// committed). KEYS: the record, the slot's todo. ARGV: prefix, id,
/// retention. `{0}`.
const SAGA_ABORT: &str = include_str!("scripts/saga_abort.lua");

/// What is left to do in a slot's todo. KEYS: the slot's todo, and on a
/// cluster the records it lists (else `{'need', ...}`). ARGV:
/// prefix, batch, grace_ms, the slot's tag. `{id, status, customer,
/// items, ...}` for ended holds still to settle (items granted) and
/// pending reserves older than the grace (items requested).
const TODO_LIST: &str = include_str!("scripts/todo_list.lua");

/// Takes an ended hold off its slot's todo once it is settled. KEYS: the
/// slot's todo. ARGV: prefix, id. `{0}`.
const TODO_DONE: &str = include_str!("scripts/todo_done.lua");

/// Starts a request with an idempotency key. KEYS: the key's hash, the
/// live keys it counts among (a sorted set by expiry, pruned only when
/// full: all keys on one server, the slot's on a cluster; a key counts
/// until its first request's time plus the key's ttl, within a request's
/// run of when the key itself goes). ARGV: prefix, fingerprint (hex), how
/// long a first request may run before another may take over from it
/// (ms), this request's token (a command sent again after a reconnect
/// finds its own token and starts afresh, not "in use"), how long the key
/// is kept at first (ms), how many live keys the set may count, the key's
/// ttl once answered (ms; its count's end). The key keeps its first
/// request's token as its seed (`sd`): every id a request under the key
/// draws comes from it, so a request that takes over from a first that
/// ended without an answer (abandoned: `dl` 0) or ran past its time
/// makes the same changes again, found made, never twice. `{0, seed}`
/// run it, `{1, status, location, body, at_ms}` replay, `{2}` in use,
/// `{3}` reused, `{4}` full (a new key, and the set counts its most).
const KEY_BEGIN: &str = include_str!("scripts/key_begin.lua");

/// Keeps a key's answer. KEYS: the key's hash, its live keys' set (see
/// `KEY_BEGIN`; declared, not written). ARGV: prefix, fingerprint,
/// status, location ('' none), body, at_ms, ttl_ms. `{0}`, or `{2}` if the
/// key is no longer this request's (it expired and was taken again).
const KEY_COMPLETE: &str = include_str!("scripts/key_complete.lua");

/// A first request that ended without an answer worth keeping (a 503,
/// the client gone): its change may have been made, so the key is not
/// given back; the next request under it may take over at once (`dl` 0)
/// and, drawing the same ids, finds made what was. KEYS: the key's hash.
/// ARGV: prefix.
const KEY_ABANDON: &str = include_str!("scripts/key_abandon.lua");

/// Appends a command to the drops' log. KEYS: the log. ARGV: prefix,
/// kind, the record (hex), the sender's nonce. `{0, id}`: Redis's id,
/// whose milliseconds are the command's time.
const DROP_APPEND: &str = include_str!("scripts/drop_append.lua");

/// Reads the drops' log after an id, unless a compaction cut entries
/// after it: then the book's image instead. KEYS: the log, its image (a
/// hash: `id` the last entry it covers, `b` the image in hex, `t` the id
/// the log was cut below). ARGV: prefix, the last id read, how many at
/// most. `{0, entries}` (XRANGE's answer), or `{1, image id, image}`.
const DROP_READ: &str = include_str!("scripts/drop_read.lua");

/// Compacts the drops' log: keeps the image of the book through an entry,
/// unless the image kept is as new, and cuts the log below that entry or
/// below `ARGV[4]` ms ago, whichever is older (a node behind by less than
/// that reads on; one behind by more takes the image). KEYS: the log, its
/// image. ARGV: prefix, the image's last entry id, the image (hex), the
/// horizon in ms. `{0, entries cut}`, or `{1, 0}`: a newer image is kept.
const DROP_COMPACT: &str = include_str!("scripts/drop_compact.lua");

/// Reads the event stream after an id, as `DROP_READ`, unless the entry
/// at that id (the last the node read) is gone while older ones are kept:
/// not trimmed (a trim takes the oldest first), so lost, with whatever
/// came after it, by a failover to a replica that had not received them
/// (new entries may then reuse ids at or below it, which a read after it
/// would skip). KEYS: the stream. ARGV: prefix, the last id read ('0-0':
/// none), how many at most. `{0, entries}`, or `{1, last id}` lost.
const EVENTS_AFTER: &str = include_str!("scripts/events_after.lua");

/// Frees a slot's recovery lease if it is still the one taken with this
/// token (after it expired, another node may hold it). KEYS: the lease.
/// ARGV: prefix, the token. `{1}` freed, `{0}` not this token's.
const LEASE_FREE: &str = include_str!("scripts/lease_free.lua");

/// Marks a SKU gated by a drop (`ARGV[2]`), or unmarks it (`ARGV[2]`
/// empty) if it is still marked by `ARGV[3]`. KEYS: the SKU's mark.
/// `{0}`.
const GATE_MARK: &str = include_str!("scripts/gate_mark.lua");

/// The newest entries of a stream, newest first. KEYS: the stream. ARGV:
/// prefix, how many at most. XREVRANGE's answer.
const STREAM_LAST: &str = include_str!("scripts/stream_last.lua");

/// Tells an event once (every node that applies a drop's opening asks;
/// one appends it). KEYS: the event stream, the event's once-mark, the
/// stream's event counter (`P:{events}:n`). ARGV:
/// prefix (with the stream's bound), kind, data, when it happened (ms),
/// how long the mark is kept (ms). `{1}` told, `{0}` told before, or
/// too old to tell: the mark is dropped after its time (so marks do not
/// pile up, one per drop for ever), and an event older than that, less a
/// minute for two primaries' clocks, was told when it happened (its mark
/// may be gone: told again now, by a node that starts and reads the
/// drops' log from its beginning, it would be told twice).
const TELL_ONCE: &str = include_str!("scripts/tell_once.lua");

/// Moves slots' events (Redis Cluster) into the event stream, each once:
/// per slot the last id moved (`KEYS[2]`, slot -> id) says where the last
/// move ended, and entries at or before it are skipped (a node that died
/// between a move and its trim, or two nodes moving a slot at once, add
/// nothing twice). KEYS: the event stream, the moved ids, the stream's
/// event counter. ARGV: prefix
/// (with the stream's bound, no slot tag), then per entry, each slot's in
/// id order: its slot, id (`ms-seq`), kind, data. `{0, slot, last id
/// moved, slot, ...}` for each slot named.
const EVENTS_MOVE: &str = include_str!("scripts/events_move.lua");

/// A slot's events to move (Redis Cluster): first drops those moved
/// already, then reads the next. KEYS: the slot's stream. ARGV: prefix,
/// the least id kept ('' to drop nothing), how many at most (0: drop
/// only). XRANGE's answer.
const EVENTS_READ: &str = include_str!("scripts/events_read.lua");

// ---- Webhooks on the redis store: a consumer group per endpoint --------

/// Makes endpoint's group on the event stream (from the stream's end, if
/// new: an endpoint gets the events from its first start on, and the
/// group's last event number is the stream's now) and clears its 410
/// mark (a start enables it again). KEYS: the stream, the endpoint's gone
/// mark, the groups' last event numbers, the stream's event counter.
/// ARGV: prefix, group. `{0}`.
const WH_GROUP: &str = include_str!("scripts/wh_group.lua");

/// An endpoint's next events for this node: those another consumer (a
/// node gone) held longer than min_idle, then new ones. KEYS: the stream,
/// the gone mark, the groups' last event numbers. ARGV: prefix, group,
/// consumer, count, min_idle. `{1}` the endpoint answered 410 to some
/// node, or `{0, claimed, new, lost}` (claimed and new XRANGE-shaped; an
/// entry trimmed meanwhile has no fields; lost: events trimmed from the
/// stream before the group read them, from the gaps in their numbers,
/// and claimed ones trimmed before their delivery ended).
const WH_READ: &str = include_str!("scripts/wh_read.lua");

/// Keeps this node's deliveries its own (their idle time back to 0, so no
/// other node claims them). KEYS: the stream. ARGV: prefix, group,
/// consumer, ids... `{0}`.
const WH_KEEP: &str = include_str!("scripts/wh_keep.lua");

/// A delivery's end (delivered or given up), or a 410. KEYS: the stream,
/// the gone mark. ARGV: prefix, group, id ('' for a 410). `{0}`.
const WH_SETTLE: &str = include_str!("scripts/wh_settle.lua");

/// Whether a script may tell events ([`Scripts::tells`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tells {
    Never,
    Maybe,
    /// The answer's 8th member is 1 when it did.
    AsAnswered,
}

/// Every script with the prelude in front.
pub struct Scripts {
    pub set_stock: fred::types::scripts::Script,
    pub adjust: fred::types::scripts::Script,
    pub adjust_undo: fred::types::scripts::Script,
    pub bucket_journal: fred::types::scripts::Script,
    pub reserve: fred::types::scripts::Script,
    pub get: fred::types::scripts::Script,
    pub confirm: fred::types::scripts::Script,
    pub release: fred::types::scripts::Script,
    pub extend: fred::types::scripts::Script,
    pub payment: fred::types::scripts::Script,
    pub settle: fred::types::scripts::Script,
    pub unmatched: fred::types::scripts::Script,
    pub sweep: fred::types::scripts::Script,
    pub due_list: fred::types::scripts::Script,
    pub due_settle: fred::types::scripts::Script,
    pub due_peek: fred::types::scripts::Script,
    pub due_lower: fred::types::scripts::Script,
    pub saga_begin: fred::types::scripts::Script,
    pub saga_take: fred::types::scripts::Script,
    pub saga_undo: fred::types::scripts::Script,
    pub saga_settle: fred::types::scripts::Script,
    pub saga_commit: fred::types::scripts::Script,
    pub saga_fence: fred::types::scripts::Script,
    pub saga_abort: fred::types::scripts::Script,
    pub todo_list: fred::types::scripts::Script,
    pub todo_done: fred::types::scripts::Script,
    pub key_begin: fred::types::scripts::Script,
    pub key_complete: fred::types::scripts::Script,
    pub key_abandon: fred::types::scripts::Script,
    pub drop_append: fred::types::scripts::Script,
    pub drop_read: fred::types::scripts::Script,
    pub drop_compact: fred::types::scripts::Script,
    pub lease_free: fred::types::scripts::Script,
    pub events_after: fred::types::scripts::Script,
    pub gate_mark: fred::types::scripts::Script,
    pub stream_last: fred::types::scripts::Script,
    pub tell_once: fred::types::scripts::Script,
    pub events_move: fred::types::scripts::Script,
    pub events_read: fred::types::scripts::Script,
    pub wh_group: fred::types::scripts::Script,
    pub wh_read: fred::types::scripts::Script,
    pub wh_keep: fred::types::scripts::Script,
    pub wh_settle: fred::types::scripts::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

impl Scripts {
    pub fn new() -> Scripts {
        let s = |body: &str| fred::types::scripts::Script::from_lua(format!("{PRELUDE}{body}"));
        Scripts {
            set_stock: s(SET_STOCK),
            adjust: s(ADJUST),
            adjust_undo: s(ADJUST_UNDO),
            bucket_journal: s(BUCKET_JOURNAL),
            reserve: s(RESERVE),
            get: s(GET),
            confirm: s(CONFIRM),
            release: s(RELEASE),
            extend: s(EXTEND),
            payment: s(PAYMENT),
            settle: s(SETTLE),
            unmatched: s(UNMATCHED),
            sweep: s(SWEEP),
            due_list: s(DUE_LIST),
            due_settle: s(DUE_SETTLE),
            due_peek: s(DUE_PEEK),
            due_lower: s(DUE_LOWER),
            saga_begin: s(SAGA_BEGIN),
            saga_take: s(SAGA_TAKE),
            saga_undo: s(SAGA_UNDO),
            saga_settle: s(SAGA_SETTLE),
            saga_commit: s(SAGA_COMMIT),
            saga_fence: s(SAGA_FENCE),
            saga_abort: s(SAGA_ABORT),
            todo_list: s(TODO_LIST),
            todo_done: s(TODO_DONE),
            key_begin: s(KEY_BEGIN),
            key_complete: s(KEY_COMPLETE),
            key_abandon: s(KEY_ABANDON),
            drop_append: s(DROP_APPEND),
            drop_read: s(DROP_READ),
            drop_compact: s(DROP_COMPACT),
            lease_free: s(LEASE_FREE),
            events_after: s(EVENTS_AFTER),
            gate_mark: s(GATE_MARK),
            stream_last: s(STREAM_LAST),
            tell_once: s(TELL_ONCE),
            events_move: s(EVENTS_MOVE),
            events_read: s(EVENTS_READ),
            wh_group: s(WH_GROUP),
            wh_read: s(WH_READ),
            wh_keep: s(WH_KEEP),
            wh_settle: s(WH_SETTLE),
        }
    }

    /// Whether `script` may tell events (then on a Redis Cluster it is
    /// given its slot's tag and its slot is moved after): always, or, for
    /// the reserve script, as its answer says.
    pub fn tells(&self, script: &fred::types::scripts::Script) -> Tells {
        if std::ptr::eq(script, &self.reserve) {
            return Tells::AsAnswered;
        }
        let always = [
            &self.set_stock,
            &self.adjust,
            &self.adjust_undo,
            &self.confirm,
            &self.release,
            &self.sweep,
            &self.settle,
            &self.unmatched,
        ];
        match one_of(script, &always) {
            true => Tells::Maybe,
            false => Tells::Never,
        }
    }

    /// Whether `script` is a step of a hold across slots (a saga): its
    /// record and its SKUs' markers live on different primaries.
    pub fn is_saga_step(&self, script: &fred::types::scripts::Script) -> bool {
        one_of(
            script,
            &[
                &self.saga_begin,
                &self.saga_take,
                &self.saga_undo,
                &self.saga_settle,
                &self.saga_commit,
                &self.saga_fence,
                &self.saga_abort,
            ],
        )
    }

    pub fn all(&self) -> [&fred::types::scripts::Script; 43] {
        [
            &self.set_stock,
            &self.adjust,
            &self.adjust_undo,
            &self.bucket_journal,
            &self.reserve,
            &self.get,
            &self.confirm,
            &self.release,
            &self.extend,
            &self.payment,
            &self.settle,
            &self.unmatched,
            &self.sweep,
            &self.due_list,
            &self.due_settle,
            &self.due_peek,
            &self.due_lower,
            &self.saga_begin,
            &self.saga_take,
            &self.saga_undo,
            &self.saga_settle,
            &self.saga_commit,
            &self.saga_fence,
            &self.saga_abort,
            &self.todo_list,
            &self.todo_done,
            &self.key_begin,
            &self.key_complete,
            &self.key_abandon,
            &self.drop_append,
            &self.drop_read,
            &self.drop_compact,
            &self.lease_free,
            &self.events_after,
            &self.gate_mark,
            &self.stream_last,
            &self.tell_once,
            &self.events_move,
            &self.events_read,
            &self.wh_group,
            &self.wh_read,
            &self.wh_keep,
            &self.wh_settle,
        ]
    }
}

/// Whether `script` is one of `these` (the same script, not an equal one).
fn one_of(script: &fred::types::scripts::Script, these: &[&fred::types::scripts::Script]) -> bool {
    these.iter().any(|s| std::ptr::eq(script, *s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script that tells events but is not said to would, on a Redis
    /// Cluster, write `P:{events}` from another slot (refused by Redis).
    #[test]
    fn every_script_that_tells_events_says_so() {
        let scripts = Scripts::new();
        let bodies = [
            (SET_STOCK, &scripts.set_stock),
            (ADJUST, &scripts.adjust),
            (ADJUST_UNDO, &scripts.adjust_undo),
            (BUCKET_JOURNAL, &scripts.bucket_journal),
            (RESERVE, &scripts.reserve),
            (GET, &scripts.get),
            (CONFIRM, &scripts.confirm),
            (RELEASE, &scripts.release),
            (EXTEND, &scripts.extend),
            (PAYMENT, &scripts.payment),
            (SETTLE, &scripts.settle),
            (UNMATCHED, &scripts.unmatched),
            (SWEEP, &scripts.sweep),
            (DUE_LIST, &scripts.due_list),
            (DUE_SETTLE, &scripts.due_settle),
            (DUE_PEEK, &scripts.due_peek),
            (DUE_LOWER, &scripts.due_lower),
            (SAGA_BEGIN, &scripts.saga_begin),
            (SAGA_TAKE, &scripts.saga_take),
            (SAGA_UNDO, &scripts.saga_undo),
            (SAGA_SETTLE, &scripts.saga_settle),
            (SAGA_COMMIT, &scripts.saga_commit),
            (SAGA_FENCE, &scripts.saga_fence),
            (SAGA_ABORT, &scripts.saga_abort),
            (TODO_LIST, &scripts.todo_list),
            (TODO_DONE, &scripts.todo_done),
            (KEY_BEGIN, &scripts.key_begin),
            (KEY_COMPLETE, &scripts.key_complete),
            (KEY_ABANDON, &scripts.key_abandon),
            (DROP_APPEND, &scripts.drop_append),
            (DROP_READ, &scripts.drop_read),
            (DROP_COMPACT, &scripts.drop_compact),
            (LEASE_FREE, &scripts.lease_free),
            (EVENTS_AFTER, &scripts.events_after),
            (GATE_MARK, &scripts.gate_mark),
            (STREAM_LAST, &scripts.stream_last),
            (EVENTS_READ, &scripts.events_read),
            (WH_GROUP, &scripts.wh_group),
            (WH_READ, &scripts.wh_read),
            (WH_KEEP, &scripts.wh_keep),
            (WH_SETTLE, &scripts.wh_settle),
        ];
        assert_eq!(
            bodies.len() + 2,
            scripts.all().len(),
            "a script is missing here"
        );
        for (body, script) in bodies {
            let tells = ["tell_", "finish(", "settle(", "emit("]
                .iter()
                .any(|f| body.contains(f));
            assert_eq!(tells, scripts.tells(script) != Tells::Never, "{body}");
        }
        // These two write P:{events} itself, in its own slot.
        assert_eq!(scripts.tells(&scripts.tell_once), Tells::Never);
        assert_eq!(scripts.tells(&scripts.events_move), Tells::Never);
    }
}
