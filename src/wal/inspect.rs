//! Human-readable records, for `stampede wal inspect` (the audit trail)
//! and `stampede wal verify`.

use std::fmt::Write;

use super::Record;

/// One line describing `record`.
pub fn describe(record: &Record<'_>) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = match record {
        Record::SkuSet {
            sku,
            stock,
            customer_limit,
            at_ms,
        } => write!(
            s,
            "sku-set sku={sku} stock={stock} customer_limit={customer_limit} at_ms={at_ms}"
        ),
        Record::HoldCreated {
            id,
            customer,
            items,
            created_at_ms,
            expires_at_ms,
        } => {
            let items: Vec<String> = items
                .iter()
                .map(|(sku, qty)| format!("{sku}x{qty}"))
                .collect();
            write!(
                s,
                "hold-created id={id} customer={customer} items={} created_at_ms={created_at_ms} expires_at_ms={expires_at_ms}",
                items.join(",")
            )
        }
        Record::HoldConfirmed {
            id,
            order_ref,
            at_ms,
        } => {
            write!(
                s,
                "hold-confirmed id={id} order_ref={} at_ms={at_ms}",
                order_ref.unwrap_or("-")
            )
        }
        Record::HoldReleased { id, at_ms } => write!(s, "hold-released id={id} at_ms={at_ms}"),
        Record::HoldExpired { id, at_ms } => write!(s, "hold-expired id={id} at_ms={at_ms}"),
        Record::HoldExtended {
            id,
            expires_at_ms,
            at_ms,
        } => write!(
            s,
            "hold-extended id={id} expires_at_ms={expires_at_ms} at_ms={at_ms}"
        ),
        Record::IdempotencyStored {
            key,
            status,
            body,
            at_ms,
            ..
        } => write!(
            s,
            "idempotency-stored key={key} status={status} body_bytes={} at_ms={at_ms}",
            body.len()
        ),
    };
    s
}
