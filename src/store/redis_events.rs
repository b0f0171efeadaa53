//! The event feed on the redis store, on one Redis server (contract:
//! Events).
//!
//! Every script whose change tells an event (a SKU's `available` reaching
//! 0 or rising from it, a hold confirmed or expired) appends it to one
//! stream, `P:{events}` (fields `k` the type, `d` the data as JSON), in
//! the same script: an event is in Redis exactly when its change is, on
//! Redis's disk under `durability = "fsync"`, whichever node made it.
//! `drop.opened` is appended by every node that applies a drop's opening
//! from the drops' log, once (`TELL_ONCE`, a mark per drop). The stream
//! keeps about `events.retained_max` entries (`XADD MAXLEN ~`).
//!
//! Each node reads the stream into its own [`Hub`] every
//! `events.flush_interval_ms` (and at start-up, the newest
//! `events.retained_max` entries), so any node serves `GET /v1/events`
//! with every node's events, and `Last-Event-ID` resumes through any node,
//! across restarts. An event's id is its stream id, milliseconds then
//! sequence: `ms << 20 | seq`; it only grows (Redis's stream ids do).
//!
//! Not on a Redis Cluster: a script there cannot write the stream's slot
//! (503 `not_ready`, as before). Webhooks are not delivered on the redis
//! store (said at start-up).

use std::sync::Arc;

use fred::prelude::*;

use super::drops::{entries, field, StreamId};
use super::{Error, RedisStore, Scope};
use crate::events::{Hub, Kind, Options};

/// How many entries one read of the stream takes at most.
const READ_BATCH: usize = 1_000;

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
        _ => eprintln!(
            "stampede: event stream entry {}-{} is malformed; skipped",
            id.0, id.1
        ),
    }
}

impl RedisStore {
    /// Whether this store keeps the event feed (one Redis server).
    pub fn events_on(&self) -> bool {
        !self.clustered
    }

    pub(super) fn events_key(&self) -> String {
        format!("{}:{{events}}", self.prefix)
    }

    /// Start-up: a hub holding the stream's newest `retained_max` events.
    pub async fn events_start(&self, options: Options) -> Result<Arc<Hub>, Error> {
        let reply: Value = self
            .scripts
            .stream_last
            .evalsha_with_reload(
                self.pool.next(),
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
        Ok(hub)
    }

    /// Reads what the stream gained into `hub`.
    pub async fn events_tick(&self, hub: &Hub) -> Result<(), Error> {
        let mut read = self.events_read.lock().await;
        loop {
            let got = self
                .stream_after(&self.events_key(), *read, READ_BATCH)
                .await?;
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
        if !self.events_on() {
            return Ok(());
        }
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
            ],
            vec![
                self.argv_prefix.clone(),
                Kind::DropOpened.as_str().to_owned(),
                data.to_string(),
            ],
        )
        .await?;
        Ok(())
    }
}
