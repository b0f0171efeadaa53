//! Webhooks on the redis store (one Redis server or a cluster): the outbox
//! is the event stream itself, with one consumer group per endpoint (`wh:URL`).
//!
//! Each node reads its endpoint's group as consumer `n<epoch>` (at most
//! what its [`Outbox`] has room for: the rest waits in Redis, nothing is
//! dropped) and delivers with the embedded store's delivery code (signing,
//! retries with backoff and full jitter, the retry window, per-endpoint
//! counts). A delivery's end (2xx, or given up) is `XACK`ed; until then
//! the event is in the group's pending list in Redis, so a node killed
//! mid-delivery loses nothing: another node (or the same one started
//! again) claims what a consumer held untouched for `min_idle` and
//! delivers it, with the same `webhook-id` (the event id: receivers dedupe
//! on it). A node keeps what it is still retrying its own by claiming it
//! again every `min_idle / 3`. Each event goes to one node of the group:
//! several nodes do not send it several times, except across such a
//! takeover (at least once). A 410 marks the endpoint gone in Redis:
//! every node stops delivering to it until a node starts again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use super::drops::{entries, field, StreamId};
use super::events::event_id;
use super::{Error, RedisStore, Scope};
use crate::events::webhooks::{Outbox, Settled};
use crate::events::Kind;

/// How many entries one read takes at most, per endpoint.
const READ_BATCH: usize = 256;

/// How often each endpoint's group is read.
const READ_EVERY: Duration = Duration::from_millis(100);

/// Ids per claim that keeps deliveries this node's own.
const KEEP_BATCH: usize = 1_000;

/// One endpoint's group, as this node reads it.
struct Group {
    name: String,
    gone_key: String,
    /// Stream ids of the events handed to the outbox, by event id.
    held: HashMap<u64, StreamId>,
}

impl RedisStore {
    /// The webhook deliveries (`/v1/stats`, `/metrics`), once started.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.get()
    }

    /// Per group, the number of the last event it read (`WH_READ`).
    fn group_numbers_key(&self) -> String {
        format!("{}:{{events}}:wh-n", self.prefix)
    }

    fn group_of(&self, url: &str) -> Group {
        Group {
            name: format!("wh:{url}"),
            gone_key: format!("{}:{{events}}:gone:{url}", self.prefix),
            held: HashMap::new(),
        }
    }

    /// Delivers `outbox`'s endpoints' events from Redis until `closed`;
    /// `min_idle_ms`: how long a delivery another consumer holds untouched
    /// is left to it before this node takes it over.
    pub async fn webhooks_run(
        self: Arc<Self>,
        outbox: Arc<Outbox>,
        min_idle_ms: u64,
        mut closed: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let (tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
        outbox.attach_settled(tx);
        let _ = self.outbox.set(outbox.clone());
        let mut groups: Vec<Group> = outbox.endpoints().map(|e| self.group_of(&e.url)).collect();
        for g in &groups {
            self.run(
                Scope::Now,
                &self.scripts.wh_group,
                vec![
                    self.events_key(),
                    g.gone_key.clone(),
                    self.group_numbers_key(),
                    self.events_counter_key(),
                ],
                vec![self.argv_prefix.clone(), g.name.clone()],
            )
            .await?;
        }
        let consumer = format!("n{}", self.epoch);
        let keep_every = Duration::from_millis((min_idle_ms / 3).max(1));
        let mut kept_at = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(READ_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            if *closed.borrow() {
                return Ok(());
            }
            let turn = tokio::select! {
                changed = closed.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return Ok(()),
                },
                Some(s) = settled.recv() => self.settle(&mut groups, s).await,
                _ = tick.tick() => {
                    let keep = kept_at.elapsed() >= keep_every;
                    if keep {
                        kept_at = tokio::time::Instant::now();
                    }
                    self.read_groups(&outbox, &mut groups, &consumer, min_idle_ms, keep).await
                }
            };
            match turn {
                Ok(()) if failing => {
                    crate::log_line!("stampede: webhook deliveries reach Redis again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    crate::log_line!("stampede: webhook deliveries: {e}; trying again");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    async fn settle(&self, groups: &mut [Group], settled: Settled) -> Result<(), Error> {
        let (index, id) = match settled {
            Settled::Done(index, id) => (index, Some(id)),
            Settled::Gone(index) => (index, None),
        };
        match groups.get_mut(index) {
            Some(g) => self.settle_group(g, id).await,
            None => Ok(()),
        }
    }

    /// Event `id` done in group `g` (`XACK`), or (`None`) the endpoint gone.
    async fn settle_group(&self, g: &mut Group, id: Option<u64>) -> Result<(), Error> {
        let stream_id = match id {
            Some(id) => match g.held.remove(&id) {
                Some((ms, seq)) => format!("{ms}-{seq}"),
                None => return Ok(()),
            },
            None => String::new(),
        };
        self.run(
            Scope::Now,
            &self.scripts.wh_settle,
            vec![self.events_key(), g.gone_key.clone()],
            vec![self.argv_prefix.clone(), g.name.clone(), stream_id],
        )
        .await?;
        Ok(())
    }

    async fn read_groups(
        &self,
        outbox: &Outbox,
        groups: &mut [Group],
        consumer: &str,
        min_idle_ms: u64,
        keep: bool,
    ) -> Result<(), Error> {
        for (index, g) in groups.iter_mut().enumerate() {
            if keep {
                let ids: Vec<String> = g
                    .held
                    .values()
                    .map(|(ms, seq)| format!("{ms}-{seq}"))
                    .collect();
                for chunk in ids.chunks(KEEP_BATCH) {
                    let mut args = vec![
                        self.argv_prefix.clone(),
                        g.name.clone(),
                        consumer.to_owned(),
                    ];
                    args.extend(chunk.iter().cloned());
                    self.run(
                        Scope::Now,
                        &self.scripts.wh_keep,
                        vec![self.events_key()],
                        args,
                    )
                    .await?;
                }
            }
            let room = outbox.room(index).min(READ_BATCH);
            if room == 0 {
                continue;
            }
            let reply: Value = self
                .eval(
                    self.pool.next(),
                    &self.scripts.wh_read,
                    vec![
                        self.events_key(),
                        g.gone_key.clone(),
                        self.group_numbers_key(),
                    ],
                    vec![
                        self.argv_prefix.clone(),
                        g.name.clone(),
                        consumer.to_owned(),
                        room.to_string(),
                        min_idle_ms.to_string(),
                    ],
                )
                .await
                .map_err(super::unavailable)?;
            let mut reply = reply.into_array().into_iter();
            if reply.next().and_then(|v| v.as_i64()) == Some(1) {
                outbox.disable(index);
                continue;
            }
            let wants = outbox
                .endpoints()
                .nth(index)
                .map(|e| e.kinds)
                .ok_or_else(|| super::bad_reply("an endpoint index".into()))?;
            let (Some(claimed), Some(new), Some(lost)) = (reply.next(), reply.next(), reply.next())
            else {
                return Err(super::bad_reply("a webhook read".into()));
            };
            if let Some(lost) = lost.as_u64().filter(|&n| n > 0) {
                outbox.count_dropped(index, lost);
            }
            for part in [claimed, new] {
                for (id, fields) in entries(part)? {
                    let kind = field(&fields, "k").and_then(|k| Kind::parse(&k));
                    let data = field(&fields, "d");
                    let event = event_id(id);
                    match (kind, data) {
                        (Some(kind), Some(data)) if wants.has(kind) => {
                            g.held.insert(event, id);
                            outbox.offer(index, event, kind, id.0, Bytes::from(data));
                        }
                        // Not wanted, trimmed meanwhile, or malformed:
                        // nothing to deliver.
                        _ => {
                            g.held.insert(event, id);
                            self.settle_group(g, Some(event)).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
