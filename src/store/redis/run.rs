//! Running a script: the client, declared keys, redirects, WAIT on replicas, clocks.

use super::*;

impl RedisStore {
    /// The connection for a change in `scope`: every change deferred into
    /// one `Pending` (a batch) goes on the same connection, so Redis runs
    /// them in the order they were sent (a pipeline: see
    /// [`Store::pipelines`]); others take the pool's next.
    pub(super) fn client(&self, scope: Scope<'_>) -> &Client {
        match scope {
            Scope::Deferred(pending) => {
                let clients = self.pool.clients();
                let at = (pending as *const Pending as usize) / std::mem::align_of::<Pending>();
                &clients[at % clients.len()]
            }
            Scope::Now => self.pool.next(),
        }
    }

    /// One script on one connection, then `WAIT` for the replicas on that
    /// same connection when asked to (a change is answered only once
    /// `wait_replicas` replicas have it).
    ///
    /// On a cluster every key a script touches is in its KEYS (see
    /// `declared` in `scripts`): the script's event stream is added
    /// here, and a script that answers `{'need', key, ...}` (keys it found
    /// by reading, having written nothing) runs again with them. A slot
    /// that is migrating answers `TRYAGAIN` until every declared key is on
    /// one node: nothing ran, so the script is tried again a few times.
    pub(super) async fn run(
        &self,
        scope: Scope<'_>,
        script: &fred::types::scripts::Script,
        mut keys: Vec<String>,
        mut args: Vec<String>,
    ) -> Result<Vec<Value>, Error> {
        let client = self.client(scope);
        let keys_slot = keys.first().map(|k| slots::slot(k));
        // On a cluster a script that tells events writes them to its own
        // slot's stream, moved into the event stream after (see
        // `store::redis::events`).
        let tells = match (self.clustered, keys_slot) {
            (true, Some(slot)) => match self.scripts.tells(script) {
                Tells::Never => None,
                tells => {
                    if let Some(first) = args.first_mut() {
                        first.push('|');
                        first.push_str(slots::tag(slot));
                    }
                    keys.push(self.slot_events_key(slot));
                    Some((slot, tells))
                }
            },
            _ => None,
        };
        if self.clustered {
            if let Some(first) = args.first_mut() {
                first.push('!');
            }
        }
        let reply = self.eval(client, script, keys, args).await;
        if let Some((slot, tells)) = tells {
            // A script that failed may have run all the same.
            let told = match (&reply, tells) {
                (Ok(Value::Array(a)), Tells::AsAnswered) => a.get(7) == Some(&Value::Integer(1)),
                _ => true,
            };
            if told {
                self.events_to_move(slot);
            }
        }
        let reply: Value = reply.map_err(unavailable)?;
        let replicas = match self.clustered && self.scripts.is_saga_step(script) {
            true => self.saga_replicas(keys_slot),
            false => self.options.redis.wait_replicas,
        };
        self.replicated_on(client, keys_slot, replicas).await?;
        Ok(reply.into_array())
    }

    /// A script, once; on a Redis Cluster (see `run`) again with the keys
    /// it said it needs, and again while its slot moves: after `TRYAGAIN`,
    /// and after a redirection, which the client does not follow itself
    /// (`max_redirections` 0: fred 10 answers an `ASK` by sending `ASKING`
    /// and reading the next reply on a connection that may have other
    /// commands in flight, which takes their reply for its own and leaves
    /// the connection's replies one behind; seen as requests timing out
    /// for good after a reshard). A `MOVED` has the client re-read the
    /// cluster's map first, so the next try goes to the new owner.
    pub(in crate::store) async fn eval<A>(
        &self,
        client: &Client,
        script: &fred::types::scripts::Script,
        mut keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<Value, fred::error::Error>
    where
        A: Into<Value> + Clone + Send,
    {
        if !self.clustered {
            return script.evalsha_with_reload(client, keys, args).await;
        }
        let mut rounds = 0;
        let mut tries = 0;
        loop {
            let reply = script
                .evalsha_with_reload(client, keys.clone(), args.clone())
                .await;
            match &reply {
                Err(e) if slot_moving(e) && tries < TRYAGAIN_TRIES => {
                    tries += 1;
                    tokio::time::sleep(TRYAGAIN_PAUSE).await;
                }
                Ok(Value::Array(a))
                    if a.first().and_then(Value::as_str).as_deref() == Some("need") =>
                {
                    rounds += 1;
                    if rounds > NEED_ROUNDS {
                        return Err(fred::error::Error::new(
                            fred::error::ErrorKind::Unknown,
                            format!("a script still needed keys after {NEED_ROUNDS} rounds"),
                        ));
                    }
                    keys.extend(a[1..].iter().filter_map(Value::as_string));
                }
                _ => return reply,
            }
        }
    }

    /// How many replicas a saga's step waits for: every replica the
    /// primary that ran it has (at the last count, `look_at_primaries`), and
    /// at least `wait_replicas`. A saga's record and its SKUs' markers are
    /// on different primaries: a failover that lost one half and kept the
    /// other could sell a unit twice or leave `held` stuck, so no step is
    /// answered before the replica that would take over has it.
    pub(super) fn saga_replicas(&self, slot: Option<u16>) -> u32 {
        let counted = self
            .owner(&slot)
            .and_then(|server| {
                self.replica_counts
                    .lock()
                    .1
                    .get(&server.to_string())
                    .copied()
            })
            .unwrap_or(0);
        counted.max(self.options.redis.wait_replicas)
    }

    /// Looks at each primary: its clock (`read_clocks`) and its replicas online (`INFO
    /// replication`), at most every [`REPLICAS_COUNT_MS`] (each sweep asks;
    /// and once at start). A primary that does not answer keeps its last
    /// count.
    pub(super) async fn look_at_primaries(&self, force: bool) {
        if !self.clustered {
            return;
        }
        let now = self.now_ms();
        {
            let mut counts = self.replica_counts.lock();
            if !force && now < counts.0.saturating_add(REPLICAS_COUNT_MS) {
                return;
            }
            counts.0 = now;
        }
        let client = self.pool.next();
        let Some(state) = client.cached_cluster_state() else {
            return;
        };
        let primaries = state.unique_primary_nodes();
        let infos = futures_util::future::join_all(primaries.iter().map(|server| async move {
            client
                .with_cluster_node(server.clone())
                .info::<String>(Some(fred::types::InfoKind::Replication))
                .await
        }))
        .await;
        self.read_clocks(client, &primaries).await;
        let mut counts = self.replica_counts.lock();
        for (server, info) in primaries.iter().zip(infos) {
            if let Ok(info) = info {
                let online = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                counts.1.insert(
                    server.to_string(),
                    u32::try_from(online).unwrap_or(u32::MAX),
                );
            }
        }
    }

    /// Measures Redis's clock against this node's (`clock_offset_ms`):
    /// `TIME` on the primary that holds `P:due`, its reply taken as read
    /// halfway through the round trip; at most every [`CLOCK_LOOK_MS`]
    /// unless `force`d. Says once on stderr when the two are more than
    /// [`CLOCK_WARN_MS`] apart (nothing is wrong for it: this node reads
    /// Redis's time through the offset). A failed read keeps the last.
    pub(super) async fn look_at_clock(&self, force: bool) {
        use crate::clock::Clock;
        let own = || crate::clock::SystemClock.now_ms();
        let now = own();
        if !force
            && now
                < self
                    .clock_looked_at
                    .load(Relaxed)
                    .saturating_add(CLOCK_LOOK_MS)
        {
            return;
        }
        self.clock_looked_at.store(now, Relaxed);
        let slot = slots::slot(&self.key("due"));
        let before = own();
        let time: Result<Vec<String>, _> = self
            .pool
            .next()
            .custom(
                fred::types::CustomCommand::new_static(
                    "TIME",
                    fred::types::ClusterHash::Custom(slot),
                    false,
                ),
                Vec::<Value>::new(),
            )
            .await;
        let after = own();
        let offset = (|| {
            let time = time.ok()?;
            let secs: i64 = time.first()?.parse().ok()?;
            let micros: i64 = time.get(1)?.parse().ok()?;
            let mid = i64::try_from(before / 2 + after / 2).ok()?;
            Some(secs * 1000 + micros / 1000 - mid)
        })();
        let Some(offset) = offset else { return };
        let was = self.clock_offset_ms.swap(offset, Relaxed);
        if offset.abs() > CLOCK_WARN_MS && (force || was.abs() <= CLOCK_WARN_MS) {
            crate::log_line!(
                "stampede: warning: this node's clock is {} ms {} Redis's: due times and leases are kept on Redis's clock",
                offset.abs(),
                if offset > 0 { "behind" } else { "ahead of" }
            );
        }
    }

    /// Reads each primary's clock (`TIME`) against this node's, the reply
    /// taken as read halfway through the round trip; says once on stderr
    /// when one is more than [`CLOCK_WARN_MS`] apart (holds there end that
    /// much early or late as this node's clock sees it; the sweep looks
    /// at `P:due` on another primary's clock).
    pub(super) async fn read_clocks(
        &self,
        client: &Client,
        primaries: &[fred::types::config::Server],
    ) {
        use crate::clock::Clock;
        let own = || crate::clock::SystemClock.now_ms();
        let reads = futures_util::future::join_all(primaries.iter().map(|server| async move {
            let before = own();
            let time: Result<Vec<String>, _> = client
                .with_cluster_node(server.clone())
                .custom(
                    fred::types::CustomCommand::new_static(
                        "TIME",
                        fred::types::ClusterHash::Random,
                        false,
                    ),
                    Vec::<Value>::new(),
                )
                .await;
            let after = own();
            let time = time.ok()?;
            let secs: i64 = time.first()?.parse().ok()?;
            let micros: i64 = time.get(1)?.parse().ok()?;
            let mid = i64::try_from(before / 2 + after / 2).ok()?;
            Some(secs * 1000 + micros / 1000 - mid)
        }))
        .await;
        let mut offsets = self.clock_offsets.lock();
        for (server, offset) in primaries.iter().zip(reads) {
            let Some(offset) = offset else { continue };
            let name = server.to_string();
            let was = offsets.insert(name.clone(), offset);
            if offset.abs() > CLOCK_WARN_MS && was.is_none_or(|w| w.abs() <= CLOCK_WARN_MS) {
                crate::log_line!(
                    "stampede: warning: Redis primary {name}'s clock is {offset} ms from this node's: its holds end that much {} than this node's clock says",
                    if offset > 0 { "earlier" } else { "later" }
                );
            }
        }
    }

    /// With `store.redis.wait_replicas`: `WAIT` on `client` (the
    /// connection a change was just sent on) at the primary that owns
    /// `slot`, and a shortfall is an error (the change may have been made).
    pub(super) async fn replicated(
        &self,
        client: &Client,
        keys_slot: Option<u16>,
    ) -> Result<(), Error> {
        self.replicated_on(client, keys_slot, self.options.redis.wait_replicas)
            .await
    }

    /// [`RedisStore::replicated`] for `replicas` replicas.
    pub(super) async fn replicated_on(
        &self,
        client: &Client,
        keys_slot: Option<u16>,
        replicas: u32,
    ) -> Result<(), Error> {
        if replicas > 0 {
            // Inside the command timeout, so that Redis's own answer (how
            // many replicas have it) comes back before fred gives up.
            let timeout = (self.options.redis.command_timeout_ms * 3 / 4).max(1);
            let acked: i64 = match self.owner(&keys_slot) {
                Some(server) => client
                    .with_cluster_node(server)
                    .wait(i64::from(replicas), timeout as i64)
                    .await
                    .map_err(unavailable)?,
                None => client
                    .wait(i64::from(replicas), timeout as i64)
                    .await
                    .map_err(unavailable)?,
            };
            if acked < i64::from(replicas) {
                let wanted = match replicas == self.options.redis.wait_replicas {
                    true => format!("store.redis.wait_replicas = {replicas}"),
                    false => format!("the {replicas} (each step of a hold across slots waits for every replica of its primary)"),
                };
                return Err(Error::NotDurable(format!(
                    "only {acked} of {wanted} replicas have the change within {timeout} ms; it may have been made: retry with the same Idempotency-Key"
                )));
            }
        }
        Ok(())
    }

    /// On Redis Cluster, the primary that owns `slot` (where a change in
    /// it ran, and where `WAIT` must go).
    pub(super) fn owner(&self, slot: &Option<u16>) -> Option<fred::types::config::Server> {
        if !self.clustered {
            return None;
        }
        let state = self.pool.next().cached_cluster_state()?;
        state.get_server((*slot)?).cloned()
    }
}
