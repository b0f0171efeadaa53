//! The journal of changes across stock buckets (`P:{bj}`, script
//! `BUCKET_JOURNAL`): what a change is, written before its first bucket
//! and freed after its last; an op's status (`P:{bj}:o:OP`); and the lease
//! a sweep takes to complete an entry (see `buckets.rs`).

use super::*;

/// What beginning a cut found.
pub(super) enum Begun {
    /// Begun now: the entry as stored (to free it with).
    Now(String),
    /// Done before (a command or request sent again).
    DoneBefore,
    /// Running, or stopped half-way and not yet undone.
    UnderWay,
    /// Undone by a sweep: run it again under a new op.
    Undone,
}

impl RedisStore {
    fn op_status_key(&self, op: &str) -> String {
        format!("{}:o:{op}", self.bucket_journal_key())
    }

    async fn journal(&self, status_key: String, args: Vec<String>) -> Result<Vec<Value>, Error> {
        let mut argv = vec![self.argv_prefix.clone()];
        argv.extend(args);
        self.run(
            Scope::Now,
            &self.scripts.bucket_journal,
            vec![self.bucket_journal_key(), status_key],
            argv,
        )
        .await
    }

    /// Writes `field` = `value` and the time; returns what was stored.
    pub(super) async fn journal_put(&self, field: &str, value: &str) -> Result<String, Error> {
        let reply = self
            .journal(
                self.op_status_key(""),
                vec!["put".into(), field.into(), value.into()],
            )
            .await?;
        stored(&reply)
    }

    /// Begins cut `op` as `field` = `value`, unless its status says it ran.
    pub(super) async fn journal_begin(
        &self,
        field: &str,
        op: &str,
        value: &str,
    ) -> Result<Begun, Error> {
        let reply = self
            .journal(
                self.op_status_key(op),
                vec![
                    "begin".into(),
                    field.into(),
                    value.into(),
                    (2 * ADJUST_MARK_MS).to_string(),
                ],
            )
            .await?;
        match reply.first().and_then(Value::as_i64) {
            Some(0) => Ok(Begun::Now(stored(&reply)?)),
            Some(2) => Ok(Begun::DoneBefore),
            Some(3) => Ok(Begun::UnderWay),
            Some(4) => Ok(Begun::Undone),
            other => Err(bad_reply(format!("journal code {other:?}"))),
        }
    }

    /// Frees `field` if it is still `stored`, leaving its op's `status`
    /// (`""`: none; the field's op is after its last `|`).
    pub(super) async fn journal_free(
        &self,
        field: &str,
        stored: &str,
        status: &str,
    ) -> Result<(), Error> {
        let op = field.rsplit_once('|').map_or("", |(_, op)| op);
        self.journal(
            self.op_status_key(op),
            vec![
                "free".into(),
                field.into(),
                stored.into(),
                status.into(),
                (2 * ADJUST_MARK_MS).to_string(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Redis's time (ms) and every entry.
    pub(super) async fn journal_list(&self) -> Result<(u64, Vec<(String, String)>), Error> {
        let reply = self
            .journal(self.op_status_key(""), vec!["list".into()])
            .await?;
        let now = int(&reply, 1)?;
        let strings: Vec<String> = reply[2..]
            .iter()
            .map(|v| {
                v.as_string()
                    .ok_or_else(|| bad_reply("journal entry".to_owned()))
            })
            .collect::<Result<_, _>>()?;
        let entries = strings
            .chunks(2)
            .filter_map(|pair| match pair {
                [field, value] => Some((field.clone(), value.clone())),
                _ => None,
            })
            .collect();
        Ok((now, entries))
    }

    /// Takes the lease on completing `field` for the grace; `None`:
    /// another node has it.
    pub(super) async fn journal_lease(&self, field: &str) -> Result<Option<Lease>, Error> {
        self.lease_on(format!("{}:lease:{field}", self.bucket_journal_key()))
            .await
    }
}

/// The entry as stored, from a `put` or `begin` answer.
fn stored(reply: &[Value]) -> Result<String, Error> {
    reply
        .get(1)
        .and_then(Value::as_string)
        .ok_or_else(|| bad_reply("journal entry as stored".to_owned()))
}
