//! Compaction of the drops' stream (see the parent module's bounds): a
//! node keeps its book as the stream's image and cuts the entries before
//! it; a node whose place was cut, or a new node, takes the image.

use std::sync::Arc;

use fred::prelude::*;

use super::super::{Error, RedisStore, Scope};
use super::{entries, parse_id, store_error, Mark, Read, StreamId, Tail};
use crate::drops;
use crate::drops::order;

impl RedisStore {
    /// Up to `count` entries of the drops' stream after `after` (each its
    /// id and its fields, `name, value, ...`), or the book's image if a
    /// compaction cut entries after `after`.
    pub(super) async fn drops_read(&self, after: StreamId, count: usize) -> Result<Read, Error> {
        let reply: Value = self
            .eval(
                self.pool.next(),
                &self.scripts.drop_read,
                vec![self.drops_log_key(), self.drops_image_key()],
                vec![
                    self.argv_prefix.clone(),
                    format!("{}-{}", after.0, after.1),
                    count.to_string(),
                ],
            )
            .await
            .map_err(super::super::unavailable)?;
        let mut parts = reply.into_array().into_iter();
        let tag = parts.next().and_then(|v| v.as_i64());
        match (tag, parts.next(), parts.next()) {
            (Some(0), Some(list), None) => Ok(Read::Entries(entries(list)?)),
            (Some(1), Some(id), Some(image)) => {
                let id = id
                    .as_string()
                    .as_deref()
                    .and_then(parse_id)
                    .ok_or_else(|| super::super::bad_reply("the drops image's id".into()))?;
                let image = image
                    .as_string()
                    .as_deref()
                    .and_then(order::unhex)
                    .ok_or_else(|| super::super::bad_reply("the drops image is not hex".into()))?;
                Ok(Read::Image(id, image))
            }
            _ => Err(super::super::bad_reply("the drops' log read".into())),
        }
    }

    /// A compaction cut entries this node had not read: its book becomes
    /// the image's, read to `id`. Every drop's SKUs are marked again (a
    /// put it skipped may have moved them) and the drops the image opens
    /// are told (once, whichever node tells). A command this node sent
    /// and had not read back is answered as unknown.
    pub(super) fn drops_take_image(
        &self,
        tail: &mut Tail,
        id: StreamId,
        image: &[u8],
    ) -> Result<(), drops::Error> {
        let book = &self.drops.book;
        let was_open: Vec<String> = book
            .views()
            .into_iter()
            .map(|v| v.drop)
            .filter(|name| book.is_opened(name))
            .collect();
        book.reset_to_image(image)
            .map_err(|e| drops::Error::Store(format!("the drops' log image: {e}")))?;
        crate::log_line!(
            "stampede: the drops' log was compacted past this node's place ({}-{}); took its image through {}-{}",
            tail.last.0,
            tail.last.1,
            id.0,
            id.1
        );
        for view in book.views() {
            let drop: Arc<str> = view.drop.as_str().into();
            for sku in view.skus {
                tail.marks.push(Mark {
                    sku,
                    drop: drop.clone(),
                    set: true,
                });
            }
            if book.is_opened(&view.drop) && !was_open.contains(&view.drop) {
                tail.opened.push(view.drop);
            }
        }
        tail.last = id;
        tail.images_taken += 1;
        Ok(())
    }

    /// Compacts the drops' stream: this node's book, read to the end, is
    /// kept as the stream's image, and the entries before it (or before
    /// `horizon_ms` ago, whichever is older) are cut. A node whose place
    /// was cut takes the image; a new node starts from it. Returns the
    /// entries cut, `None` if another node kept a newer image first.
    pub async fn drops_compact(&self, horizon_ms: u64) -> Result<Option<u64>, drops::Error> {
        self.drops_catch_up(None).await?;
        let mut tail = self.drops.tail.lock().await;
        tail.applied = 0;
        tail.compacted_at = Some(std::time::Instant::now());
        if tail.last == (0, 0) {
            return Ok(Some(0));
        }
        // Nothing is applied while the tail is locked: the image is the
        // book exactly through `tail.last`.
        let ((), image) = self.drops.book.with_locked(|| ());
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.drop_compact,
                vec![self.drops_log_key(), self.drops_image_key()],
                vec![
                    self.argv_prefix.clone(),
                    format!("{}-{}", tail.last.0, tail.last.1),
                    order::hex(&image),
                    horizon_ms.to_string(),
                ],
            )
            .await
            .map_err(store_error)?;
        let kept = reply.first().and_then(Value::as_i64) == Some(0);
        Ok(kept.then(|| reply.get(1).and_then(Value::as_i64).unwrap_or(0).max(0) as u64))
    }

    /// Commands this node sent whose answers a request still waits for.
    pub fn drops_awaited(&self) -> usize {
        self.drops.awaited.lock().len()
    }

    /// How many times this node took the stream's image in place of
    /// entries a compaction cut.
    pub async fn drops_images_taken(&self) -> u64 {
        self.drops.tail.lock().await.images_taken
    }
}
