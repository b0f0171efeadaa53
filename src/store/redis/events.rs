//! The event feed on the redis store (contract: Events).
//!
//! Every script whose change tells an event (a SKU's `available` reaching
//! 0 or rising from it, a hold confirmed or expired) appends it to a
//! stream in the same script: an event is in Redis exactly when its
//! change is, on Redis's disk under `durability = "fsync"`, whichever node
//! made it. On one Redis server that stream is the event stream,
//! `P:{events}` (fields `k` the type, `d` the data as JSON). `drop.opened`
//! is appended by every node that applies a drop's opening from the drops'
//! log, once (`TELL_ONCE`, a mark per drop). The stream keeps about
//! `events.retained_max` entries (`XADD MAXLEN ~`).
//!
//! On a Redis Cluster a script cannot write another slot: it appends to
//! its own slot's stream, `P:{T}:ev` (`T` the slot's tag), and events get
//! into `P:{events}` by a move ([`RedisStore::events_move`], the script
//! `EVENTS_MOVE`): read a slot's entries, append to `P:{events}` those past
//! the slot's last moved id (kept in `P:{events}:moved`, in the same
//! script, so each is appended once whoever moves and however often);
//! the slot's stream is trimmed to past that id at its next read
//! (`EVENTS_READ`: one script a slot a move). The node whose script
//! told an event moves its slot at its next tick (a bit per slot, set in
//! `RedisStore::run`); and every node looks through all slots' streams,
//! a share each tick, a full round every [`SCAN_ROUND_MS`], for what a
//! node that died before its move left. Events of different slots reach
//! `P:{events}` in the order they are moved: each SKU's and each hold's
//! in the order they happened (one slot), not across slots.
//!
//! Each node reads `P:{events}` into its own [`Hub`] every
//! `events.flush_interval_ms` (and at start-up, the newest
//! `events.retained_max` entries), so any node serves `GET /v1/events`
//! with every node's events, and `Last-Event-ID` resumes through any node,
//! across restarts. An event's id is its `P:{events}` id, milliseconds
//! then sequence: `ms << 20 | seq`; it only grows (Redis's stream ids do).

use std::sync::Arc;

use fred::prelude::*;

use std::sync::atomic::Ordering::Relaxed;

use super::drops::{entries, field, parse_id, StreamId};
use super::{slots, Error, RedisStore, Scope};
use crate::events::{Hub, Kind, Options};

/// How many entries one read of the stream takes at most.
const READ_BATCH: usize = 1_000;

/// How many entries of a slot's stream one move takes at most.
const MOVE_BATCH: usize = 256;

/// Slots moved at once (their reads, then their moves, concurrent).
const MOVE_SLOTS: usize = 64;

/// On a cluster, how long every node takes to look through all 16384
/// slots' streams once (a share each tick): the longest an event told
/// by a node that died before it moved it waits.
pub const SCAN_ROUND_MS: u64 = 30_000;

/// How long a drop's `drop.opened` mark (`P:{events}:opened:DROP`) is
/// kept: a week. A node that applies an opening older than that tells
/// nothing (see `TELL_ONCE`).
pub const OPENED_MARK_MS: u64 = 7 * 24 * 3_600_000;

/// A stream id as an event id: its milliseconds, then its sequence (20
/// bits; a millisecond with more entries shares the last id's sequence,
/// and the hub keeps ids growing).
pub fn event_id((ms, seq): StreamId) -> u64 {
    (ms << 20) | seq.min((1 << 20) - 1)
}

fn publish(hub: &Hub, id: StreamId, fields: &[Value]) {
    let kind = field(fields, "k").and_then(|k| Kind::parse(&k));
    match (kind, field(fields, "d")) {
        (Some(kind), Some(data)) => hub.publish_at(event_id(id), kind, &data),
        _ => crate::log_line!(
            "stampede: event stream entry {}-{} is malformed; skipped",
            id.0,
            id.1
        ),
    }
}

impl RedisStore {
    pub(super) fn events_key(&self) -> String {
        format!("{}:{{events}}", self.prefix)
    }

    /// The counter that numbers the event stream's events (`n`).
    pub(super) fn events_counter_key(&self) -> String {
        format!("{}:{{events}}:n", self.prefix)
    }

    /// Notes that `slot`'s event stream may hold events to move (cluster).
    pub(super) fn events_to_move(&self, slot: u16) {
        let slot = usize::from(slot) % slots::SLOTS;
        self.events_to_move[slot / 64].fetch_or(1 << (slot % 64), Relaxed);
    }

    /// Takes the slots noted by `events_to_move`.
    fn events_noted(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for (w, word) in self.events_to_move.iter().enumerate() {
            let mut bits = word.swap(0, Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out.push((w * 64 + b) as u16);
            }
        }
        out
    }

    /// The next share of the slots to look through for a dead node's
    /// events: a round every `SCAN_ROUND_MS` at one share per `tick`.
    fn events_scan_share(&self, tick: std::time::Duration) -> Vec<u16> {
        let share = (slots::SLOTS as u64 * tick.as_millis().max(1) as u64).div_ceil(SCAN_ROUND_MS);
        slots::share(&self.events_scan_next, share)
    }

    /// Moves `slots`' events into the event stream (cluster; see the
    /// module's docs). A slot with more than a batch is noted again.
    /// `trim_now`: each slot's stream is trimmed right after, not at its
    /// next read (slots found by the look through all slots: that may be
    /// a round away).
    pub async fn events_move(&self, slots: &[u16], trim_now: bool) -> Result<(), Error> {
        for chunk in slots.chunks(MOVE_SLOTS) {
            // What this node saw moved is dropped as it reads.
            let seen: Vec<Option<StreamId>> = {
                let moved = self.events_moved.lock();
                chunk.iter().map(|s| moved.get(s).copied()).collect()
            };
            let read = futures_util::future::join_all(
                chunk
                    .iter()
                    .zip(seen)
                    .map(|(&slot, seen)| self.events_read(slot, seen, MOVE_BATCH)),
            )
            .await;
            let mut got: Vec<(StreamId, u16, Vec<Value>)> = Vec::new();
            for (&slot, reply) in chunk.iter().zip(read) {
                let entries = entries(Value::Array(reply?))?;
                if entries.len() == MOVE_BATCH {
                    self.events_to_move(slot);
                }
                got.extend(entries.into_iter().map(|(id, f)| (id, slot, f)));
            }
            if got.is_empty() {
                continue;
            }
            // One move, in the order the slots' Redis clocks give.
            got.sort_by_key(|(id, slot, _)| (*id, *slot));
            let mut args = Vec::with_capacity(1 + 4 * got.len());
            args.push(self.argv_prefix.clone());
            for ((ms, seq), slot, fields) in &got {
                args.push(slot.to_string());
                args.push(format!("{ms}-{seq}"));
                args.push(field(fields, "k").unwrap_or_default());
                args.push(field(fields, "d").unwrap_or_default());
            }
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.events_move,
                    vec![
                        self.events_key(),
                        format!("{}:moved", self.events_key()),
                        self.events_counter_key(),
                    ],
                    args,
                )
                .await?;
            // Each slot's last id moved: its stream is trimmed to past it
            // at its next read.
            let mut lasts = Vec::new();
            for pair in reply.get(1..).unwrap_or_default().chunks(2) {
                let [slot, last] = pair else { break };
                let slot = slot.as_u64().and_then(|s| u16::try_from(s).ok());
                let last = last.as_string().and_then(|id| parse_id(&id));
                let (Some(slot), Some(last)) = (slot, last) else {
                    return Err(super::bad_reply(format!("events move {pair:?}")));
                };
                lasts.push((slot, last));
            }
            self.events_moved.lock().extend(lasts.iter().copied());
            let trims = lasts
                .iter()
                .filter(|_| trim_now)
                .map(|&(slot, last)| self.events_read(slot, Some(last), 0));
            for trimmed in futures_util::future::join_all(trims).await {
                trimmed?;
            }
        }
        Ok(())
    }

    /// Up to `count` of `slot`'s events to move (0: none), after dropping
    /// those up to `moved`.
    async fn events_read(
        &self,
        slot: u16,
        moved: Option<StreamId>,
        count: usize,
    ) -> Result<Vec<Value>, Error> {
        let kept_from = moved
            .map(|(ms, seq)| format!("{ms}-{}", seq.saturating_add(1)))
            .unwrap_or_default();
        self.run(
            Scope::Now,
            &self.scripts.events_read,
            vec![self.slot_events_key(slot)],
            vec![self.argv_prefix.clone(), kept_from, count.to_string()],
        )
        .await
    }

    /// `slot`'s event stream (cluster).
    pub(super) fn slot_events_key(&self, slot: u16) -> String {
        format!("{}:{{{}}}:ev", self.prefix, slots::tag(slot))
    }

    /// Start-up: a hub holding the stream's newest `retained_max` events.
    pub async fn events_start(&self, options: Options) -> Result<Arc<Hub>, Error> {
        let reply: Value = self
            .eval(
                self.pool.next(),
                &self.scripts.stream_last,
                vec![self.events_key()],
                vec![
                    self.argv_prefix.clone(),
                    options.retained_max.max(1).to_string(),
                ],
            )
            .await
            .map_err(super::unavailable)?;
        let mut kept = entries(reply)?;
        kept.reverse();
        let floor = kept.first().map_or(0, |(id, _)| event_id(*id));
        let hub = Arc::new(Hub::starting_at(options, floor));
        let mut read = self.events_read.lock().await;
        for (id, fields) in &kept {
            publish(&hub, *id, fields);
            *read = *id;
        }
        let _ = self.hub.set(hub.clone());
        Ok(hub)
    }

    /// Reads what the stream gained into `hub`; on a cluster, first moves
    /// the slots this node told events in, and a share of all slots.
    pub async fn events_tick(&self, hub: &Hub) -> Result<(), Error> {
        crate::fault::inject("event-mover");
        let mut moved = Ok(());
        if self.clustered {
            let noted = self.events_noted();
            moved = self.events_move(&noted, false).await;
            if moved.is_err() {
                // Moved again next tick (a move twice adds nothing).
                for &slot in &noted {
                    self.events_to_move(slot);
                }
            }
            let mut share = self.events_scan_share(self.options.events.flush_interval);
            share.retain(|s| !noted.contains(s));
            moved = moved.and(self.events_move(&share, true).await);
        }
        // Read even if a slot's primary failed: the others' events go on.
        let read = self.events_read_all(hub).await;
        moved.and(read)
    }

    /// Reads what `P:{events}` gained since the last read into `hub`.
    async fn events_read_all(&self, hub: &Hub) -> Result<(), Error> {
        let mut read = self.events_read.lock().await;
        loop {
            let reply: Value = self
                .eval(
                    self.pool.next(),
                    &self.scripts.events_after,
                    vec![self.events_key()],
                    vec![
                        self.argv_prefix.clone(),
                        format!("{}-{}", read.0, read.1),
                        READ_BATCH.to_string(),
                    ],
                )
                .await
                .map_err(super::unavailable)?;
            let mut reply = reply.into_array().into_iter();
            let (code, rest) = (reply.next(), reply.next().unwrap_or(Value::Null));
            if code.and_then(|c| c.as_i64()) == Some(1) {
                // The events this node told after the last one the stream
                // still has may not have happened (a failover lost their
                // changes), and new ones may reuse their ids: every
                // subscriber is told `reset` and reads the state again.
                let last = rest.as_string().and_then(|id| parse_id(&id));
                crate::log_line!(
                    "stampede: the event stream lost events this node had read (a failover to a replica that had not received them?); subscribers are told reset"
                );
                hub.forget_all();
                *read = last.unwrap_or(*read);
                return Ok(());
            }
            let got = entries(rest)?;
            let n = got.len();
            for (id, fields) in got {
                publish(hub, id, &fields);
                *read = id;
            }
            if n < READ_BATCH {
                return Ok(());
            }
        }
    }

    /// `drop.opened` for `drop` (opened in this node's book), once for all
    /// nodes.
    pub(super) async fn tell_drop_opened(&self, drop: &str) -> Result<(), Error> {
        let Some((seed, entrants, at_ms)) = self.drops.book.opening(drop) else {
            return Ok(());
        };
        let data = serde_json::json!({
            "drop": drop,
            "seed": seed,
            "entrants": entrants,
            "at_ms": at_ms,
        });
        self.run(
            Scope::Now,
            &self.scripts.tell_once,
            vec![
                self.events_key(),
                format!("{}:{{events}}:opened:{drop}", self.prefix),
                self.events_counter_key(),
            ],
            vec![
                self.argv_prefix.clone(),
                Kind::DropOpened.as_str().to_owned(),
                data.to_string(),
                at_ms.to_string(),
                OPENED_MARK_MS.to_string(),
            ],
        )
        .await?;
        Ok(())
    }
}
