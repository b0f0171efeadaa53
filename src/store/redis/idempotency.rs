//! Idempotency keys: a request's start under its key.

use super::*;

impl RedisStore {
    /// [`Store::key_begin`] for the request named `token`: sent twice,
    /// the second finds its own token and is fresh too, not "in use".
    #[doc(hidden)]
    pub async fn key_begin_as(
        &self,
        key: &str,
        fingerprint: u128,
        token: &str,
    ) -> Result<Begin, Error> {
        let idem_key = self.idem_key(key);
        let (live, live_max) = self.idem_live(&idem_key);
        let client = self.pool.next();
        let reply: Value = self
            .eval(
                client,
                &self.scripts.key_begin,
                vec![idem_key.clone(), live],
                vec![
                    self.argv_prefix.clone(),
                    format!("{fingerprint:032x}"),
                    KEY_IN_FLIGHT_MS.to_string(),
                    token.to_owned(),
                    self.options
                        .idempotency_ttl_ms
                        .max(KEY_IN_FLIGHT_MS)
                        .to_string(),
                    live_max.to_string(),
                    self.options.idempotency_ttl_ms.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let reply = reply.into_array();
        // The claim is on the replicas before the change is made (on a
        // cluster they are on different primaries: a failover must not
        // lose the seed and keep the change). If not, nothing was run:
        // the next request under the key may take over at once.
        if let Err(e) = self.replicated(client, Some(slots::slot(&idem_key))).await {
            if int(&reply, 0)? == 0 {
                self.key_abandon(key);
            }
            return Err(e);
        }
        Ok(match int(&reply, 0)? {
            // The key's seed is its first request's token: another is a
            // takeover from that first request.
            0 => match text(&reply, 1) {
                seed if seed == token => Begin::Seeded(seed.into()),
                seed => Begin::Resumed(seed.into()),
            },
            1 => {
                let status =
                    u16::try_from(int(&reply, 1)?).map_err(|_| bad_reply("key status".into()))?;
                let location = text(&reply, 2);
                let body = reply
                    .get(3)
                    .and_then(Value::as_bytes)
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                Begin::Replay(
                    Arc::new(Stored {
                        status,
                        location: (!location.is_empty()).then_some(location),
                        body,
                        stored_at_ms: int(&reply, 4)?,
                    }),
                    0,
                )
            }
            2 => Begin::InUse,
            3 => Begin::Reused,
            4 => Begin::Full,
            code => return Err(bad_reply(format!("key code {code}"))),
        })
    }
}
