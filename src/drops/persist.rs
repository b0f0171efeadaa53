//! The book in the log: appending a record, replaying one at start-up,
//! the checkpoint image (each drop as the records that rebuild it), and
//! on the redis store the commands every node applies in order.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::line::Line;
use super::record::DropRecord;
use super::{Applied, DropBook, Error, Shared};
use crate::wal::{self, Journal};

impl DropBook {
    pub(super) fn append(&self, record: &DropRecord<'_>) -> Result<u64, wal::Error> {
        match self.wal.get() {
            Some(wal) => wal.append(record),
            None => Ok(0),
        }
    }

    /// Replay of the log: [`DropBook::replay`], and an opening's
    /// `drop.opened` told again under `lsn` (the record's), as it was live
    /// (the event feed rebuilt after a restart).
    pub fn replay_logged(&self, record: DropRecord<'_>, lsn: u64) -> Result<u64, String> {
        let opened = match &record {
            DropRecord::Opened { drop, at_ms } => Some((drop.to_string(), *at_ms)),
            _ => None,
        };
        let at = self.replay(record)?;
        if let (Some((name, at_ms)), Some(hub)) = (opened, self.events.get()) {
            let book = self.book.read();
            if let Some(line) = book.drops.get(name.as_str()) {
                let line = line.lock();
                let seed = super::order::hex(&line.seed);
                hub.drop_opened(lsn, &line.name, &seed, line.entrants(), at_ms);
            }
        }
        Ok(at)
    }

    /// Takes and lets go every drop's lock in turn: an opening being told
    /// now has been told after it (the event feed's barrier).
    pub fn quiesce(&self) {
        let book = self.book.read();
        for line in book.drops.values() {
            drop(line.lock());
        }
    }

    /// Replay: applies one logged drop record (decoded by
    /// [`crate::records`]); returns its time.
    pub fn replay(&self, record: DropRecord<'_>) -> Result<u64, String> {
        let mut book = self.book.write();
        let name = record.drop_name();
        let missing = || format!("a record of drop {name}, never created");
        match &record {
            DropRecord::Put {
                spec, seed, at_ms, ..
            } => {
                let shared = match book.drops.get(name).cloned() {
                    Some(shared) => {
                        let mut line = shared.lock();
                        for sku in &line.spec.skus {
                            book.by_sku.remove(sku);
                        }
                        line.replace_spec(spec.clone().into_owned());
                        drop(line);
                        shared
                    }
                    None => {
                        let line = Line::new(name, spec.clone().into_owned(), *seed, *at_ms);
                        let shared = Arc::new(Mutex::new(line));
                        book.drops.insert(name.into(), shared.clone());
                        shared
                    }
                };
                for sku in &spec.skus {
                    book.by_sku.insert(sku.clone(), shared.clone());
                }
                self.any.store(true, Ordering::Release);
            }
            DropRecord::Join {
                customer_id, at_ms, ..
            } => {
                let mut line = book.drops.get(name).ok_or_else(missing)?.lock();
                if !line.is_entrant(customer_id) {
                    line.join(customer_id, *at_ms);
                }
            }
            DropRecord::Opened { at_ms, .. } => {
                book.drops
                    .get(name)
                    .ok_or_else(missing)?
                    .lock()
                    .open(*at_ms, 0);
            }
            DropRecord::Admitted { through, at_ms, .. } => {
                let mut line = book.drops.get(name).ok_or_else(missing)?.lock();
                line.note_admitted(*through, *at_ms)?;
            }
        }
        Ok(record.at_ms())
    }

    /// Replaces the whole book with `image` (made by
    /// [`DropBook::with_locked`]): on the redis store, a node whose read
    /// position the compaction of the shared log passed takes the book
    /// the log's image holds. An image that does not decode leaves the
    /// book as it was.
    pub fn reset_to_image(&self, image: &[u8]) -> Result<(), String> {
        let fresh = DropBook {
            opens_on_read: self.opens_on_read,
            ..DropBook::new(self.options, self.clock.clone())
        };
        let mut bytes = image;
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).map_err(|e| format!("a drops image: {e}"))?;
            let record =
                DropRecord::decode(d.kind, d.payload).map_err(|e| format!("a drops image: {e}"))?;
            fresh.replay(record)?;
            bytes = &bytes[d.len..];
        }
        let whole = std::mem::take(&mut *fresh.book.write());
        let any = !whole.drops.is_empty();
        *self.book.write() = whole;
        self.any.store(any, Ordering::Release);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Runs `f` with every drop locked (no drop record can be appended
    /// meanwhile) and returns its result with the drops' image: each drop
    /// as the records that rebuild it, framed as the log frames them.
    pub fn with_locked<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<u8>) {
        let book = self.book.read();
        let mut names: Vec<&Arc<str>> = book.drops.keys().collect();
        names.sort();
        let lines: Vec<_> = names.iter().map(|n| book.drops[*n].lock()).collect();
        let r = f();
        let mut out = Vec::new();
        let mut frame = |record: &DropRecord<'_>| {
            wal::record::frame(record, 0, &mut out)
                .expect("bug: a drop record that was logged encodes again");
        };
        for line in &lines {
            frame(&DropRecord::Put {
                drop: &line.name,
                spec: Cow::Borrowed(&line.spec),
                seed: line.seed,
                at_ms: line.created_at_ms,
            });
            let pre = line.prequeue_len();
            for (i, (customer_id, at_ms)) in line.joins().enumerate() {
                if i == pre {
                    if let Some(at_ms) = line.opened_at_ms() {
                        frame(&DropRecord::Opened {
                            drop: &line.name,
                            at_ms,
                        });
                    }
                }
                frame(&DropRecord::Join {
                    drop: &line.name,
                    customer_id,
                    at_ms,
                });
            }
            if let (true, Some(at_ms)) = (pre == line.entrants(), line.opened_at_ms()) {
                frame(&DropRecord::Opened {
                    drop: &line.name,
                    at_ms,
                });
            }
            if let (through @ 1.., at_ms) = line.logged_admissions() {
                frame(&DropRecord::Admitted {
                    drop: &line.name,
                    through,
                    at_ms,
                });
            }
        }
        (r, out)
    }

    /// The replicated book's opener: the drops due to open by `now` and
    /// not opened, and those with admissions to record (each to be sent
    /// to the shared log as an `opened` or `admitted` command).
    pub fn due_commands(&self, now: u64) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let lines: Vec<Shared> = self.book.read().drops.values().cloned().collect();
        let (mut open, mut admit) = (Vec::new(), Vec::new());
        for shared in lines {
            let line = shared.lock();
            if !line.is_opened() && now >= line.spec.opens_at_ms {
                open.push(line.name.clone());
            } else if self.admissions_due(&line, now) {
                admit.push(line.name.clone());
            }
        }
        (open, admit)
    }

    /// Applies one record of a replicated book's log as a command, at the
    /// time the log gave it (`at_ms`, never decreasing along the log):
    /// the same rules as a request to a book of its own, so every node
    /// that applies the log in order has the same drops and gives the same
    /// answers. A record refused (a join once the drop is full, say)
    /// changes nothing.
    pub fn apply_command(&self, record: DropRecord<'_>, at_ms: u64) -> Result<Applied, Error> {
        match record {
            DropRecord::Put {
                drop, spec, seed, ..
            } => {
                let put = self.put_at(drop, spec.into_owned(), seed, at_ms)?;
                Ok(Applied::Put(put.value.0, put.value.1))
            }
            DropRecord::Join {
                drop, customer_id, ..
            } => {
                let joined = self.join_at(drop, customer_id, at_ms)?;
                Ok(Applied::Join(joined.value.0, joined.value.1))
            }
            DropRecord::Opened { drop, .. } => {
                let shared = self.line(drop)?;
                self.open_if_due(&mut shared.lock(), at_ms)?;
                Ok(Applied::Opened)
            }
            DropRecord::Admitted { drop, .. } => {
                let shared = self.line(drop)?;
                self.record_admissions(&mut shared.lock(), at_ms)?;
                Ok(Applied::Admitted)
            }
        }
    }
}
