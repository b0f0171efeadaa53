//! What operators see of the redis store (`/readyz`, `/v1/stats`,
//! `/metrics`), and its drops through the boundary (the rules are in
//! `drops.rs`). A drop's change is durable in Redis when its script
//! answers, so a deferring scope has nothing to note.

use std::sync::Arc;

use super::RedisStore;
use crate::drops::line::EntryView;
use crate::drops::{DropView, Spec};
use crate::store::{Drops, Health, Scope, Stats, StoreFuture};

impl Health for RedisStore {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn stats(&self) -> Stats {
        // The state, its log and its keys live in Redis: the engine's and
        // the log's fields are empty.
        let fields = serde_json::json!({
            "store": RedisStore::stats(self),
            "shards": [],
            "log": null,
            "idempotency_keys": null,
            "hot_skus": [],
            "recent_operations": 0,
            "drops": self.drop_book().stats(),
            "webhooks": self.outbox().map(|o| o.stats()),
        });
        Stats {
            fields,
            ..Stats::default()
        }
    }

    fn render_metrics(&self, out: &mut String) {
        if let Some(outbox) = self.outbox() {
            outbox.render(out);
        }
    }

    fn events(&self) -> Option<&Arc<crate::events::Hub>> {
        self.hub.get()
    }
}

impl Drops for RedisStore {
    fn drop_put<'a>(
        &'a self,
        _scope: Scope<'a>,
        name: &'a str,
        spec: Spec,
    ) -> StoreFuture<'a, (bool, DropView)> {
        Box::pin(async move { Ok(self.put_drop(name, spec).await?) })
    }

    fn drop_view<'a>(&'a self, _scope: Scope<'a>, name: &'a str) -> StoreFuture<'a, DropView> {
        Box::pin(async move { Ok(self.view_drop(name).await?) })
    }

    fn drop_join<'a>(
        &'a self,
        _scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, (bool, EntryView)> {
        Box::pin(async move { Ok(self.join_drop(name, customer).await?) })
    }

    fn drop_entry<'a>(
        &'a self,
        _scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, EntryView> {
        Box::pin(async move { Ok(self.entry_of_drop(name, customer).await?) })
    }

    fn gates_any(&self, skus: &mut dyn Iterator<Item = &str>) -> bool {
        self.drop_book().gates_any(skus)
    }
}
