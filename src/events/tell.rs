//! What the engine tells, as the feed's events: each `engine::Event`
//! encoded as its kind's JSON data (the contract's fields, in the
//! contract's names) and published under its change's LSN.

use serde::Serialize;

use super::{Hub, Kind};
use crate::engine::{self, EventSink};

/// An event's data, encoded straight from borrowed parts.
#[derive(Serialize)]
struct Item<'a> {
    sku: &'a str,
    qty: u32,
}

fn items<'a>(items: &'a [(&'a str, u32)]) -> Vec<Item<'a>> {
    items.iter().map(|&(sku, qty)| Item { sku, qty }).collect()
}

impl EventSink for Hub {
    fn emit(&self, lsn: u64, at_ms: u64, event: engine::Event<'_>) -> u64 {
        match event {
            engine::Event::StockOut { sku } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    sku: &'a str,
                    at_ms: u64,
                }
                self.publish(lsn, at_ms, Kind::StockOut, &Data { sku, at_ms })
            }
            engine::Event::StockBack { sku, available } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    sku: &'a str,
                    available: u64,
                    at_ms: u64,
                }
                self.publish(
                    lsn,
                    at_ms,
                    Kind::StockBack,
                    &Data {
                        sku,
                        available,
                        at_ms,
                    },
                )
            }
            engine::Event::HoldExpired {
                id,
                customer,
                items: held,
            } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    id: &'a str,
                    customer_id: &'a str,
                    items: Vec<Item<'a>>,
                    at_ms: u64,
                }
                let id = id.text();
                self.publish(
                    lsn,
                    at_ms,
                    Kind::HoldExpired,
                    &Data {
                        id: id.as_str(),
                        customer_id: customer,
                        items: items(held),
                        at_ms,
                    },
                )
            }
            engine::Event::HoldConfirmed {
                id,
                customer,
                items: held,
                order_ref,
                payment_ref,
            } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    id: &'a str,
                    customer_id: &'a str,
                    items: Vec<Item<'a>>,
                    order_ref: Option<&'a str>,
                    payment_ref: Option<&'a str>,
                    at_ms: u64,
                }
                let id = id.text();
                self.publish(
                    lsn,
                    at_ms,
                    Kind::HoldConfirmed,
                    &Data {
                        id: id.as_str(),
                        customer_id: customer,
                        items: items(held),
                        order_ref,
                        payment_ref,
                        at_ms,
                    },
                )
            }
            engine::Event::PaymentFailed {
                hold,
                gateway,
                payment_ref,
            } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    hold: &'a str,
                    gateway: &'a str,
                    payment_ref: Option<&'a str>,
                    at_ms: u64,
                }
                let hold = hold.text();
                self.publish(
                    lsn,
                    at_ms,
                    Kind::PaymentFailed,
                    &Data {
                        hold: hold.as_str(),
                        gateway,
                        payment_ref,
                        at_ms,
                    },
                )
            }
            engine::Event::PaymentOrphaned {
                hold,
                gateway,
                payment_ref,
                items: held,
            } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    hold: &'a str,
                    gateway: &'a str,
                    payment_ref: Option<&'a str>,
                    items: Vec<Item<'a>>,
                    at_ms: u64,
                }
                let hold = hold.text();
                self.publish(
                    lsn,
                    at_ms,
                    Kind::PaymentOrphaned,
                    &Data {
                        hold: hold.as_str(),
                        gateway,
                        payment_ref,
                        items: items(held),
                        at_ms,
                    },
                )
            }
            engine::Event::PaymentUnmatched {
                gateway,
                payment_ref,
                kind,
            } => {
                #[derive(Serialize)]
                struct Data<'a> {
                    gateway: &'a str,
                    payment_ref: Option<&'a str>,
                    #[serde(rename = "type")]
                    kind: &'a str,
                    at_ms: u64,
                }
                self.publish(
                    lsn,
                    at_ms,
                    Kind::PaymentUnmatched,
                    &Data {
                        gateway,
                        payment_ref,
                        kind,
                        at_ms,
                    },
                )
            }
        }
    }
}
