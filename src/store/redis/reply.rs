//! Reading scripts' replies: every field checked, never a default.

use super::*;

pub(super) fn sku_view(
    sku: &str,
    stock: u64,
    held: u64,
    sold: u64,
    limit: u64,
) -> Result<SkuView, Error> {
    Ok(SkuView {
        sku: CompactString::from(sku),
        stock,
        available: stock.saturating_sub(held + sold),
        held,
        sold,
        customer_limit: limit,
    })
}

/// A saga's items as its record writes them: `sku qty sku qty ...`.
pub(super) fn parse_items(text: &str) -> Result<Vec<(String, u32)>, Error> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(2)
        .map(|pair| match pair {
            [sku, qty] => qty
                .parse()
                .map(|q| ((*sku).to_owned(), q))
                .map_err(|_| bad_reply(format!("saga item {pair:?}"))),
            _ => Err(bad_reply(format!("saga items {text:?}"))),
        })
        .collect()
}

/// Whether a command was refused, having done nothing, because its slot
/// is moving between primaries (Redis Cluster): `TRYAGAIN`, or a
/// redirection (`ASK`, `MOVED`) the client was told not to follow.
pub(super) fn slot_moving(e: &fred::error::Error) -> bool {
    e.details().starts_with("TRYAGAIN")
        || (*e.kind() == fred::error::ErrorKind::Routing
            && e.details().starts_with("Too many redirections"))
}

pub(super) fn unavailable(e: fred::error::Error) -> Error {
    Error::NotDurable(format!(
        "Redis did not answer: {e}; the change may have been made"
    ))
}

pub(super) fn bad_reply(what: String) -> Error {
    Error::NotDurable(format!("an unexpected reply from Redis ({what})"))
}

/// Field `i` of a script's reply, a count or a code: missing, garbled or
/// negative is an error, never a number.
pub(super) fn int(reply: &[Value], i: usize) -> Result<u64, Error> {
    let v = reply
        .get(i)
        .ok_or_else(|| bad_reply(format!("field {i} missing from {reply:?}")))?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad_reply(format!("field {i} is not a count: {v:?}")))
}

pub(super) fn text(reply: &[Value], i: usize) -> String {
    reply.get(i).and_then(|v| v.as_string()).unwrap_or_default()
}

pub(super) fn status(s: &str) -> Result<Status, Error> {
    Ok(match s {
        "held" => Status::Held,
        "pending_payment" => Status::PendingPayment,
        "confirmed" => Status::Confirmed,
        "released" => Status::Released,
        "expired" => Status::Expired,
        other => return Err(bad_reply(format!("status {other:?}"))),
    })
}

/// `{0, status, customer, created, expires, order_ref, items}`.
pub(super) fn view(id: HoldId, reply: &[Value]) -> Result<Reservation, Error> {
    let items_text = text(reply, 6);
    let mut items: SmallVec<[ItemView; 1]> = SmallVec::new();
    let mut words = items_text.split(' ').filter(|w| !w.is_empty());
    while let (Some(sku), Some(qty)) = (words.next(), words.next()) {
        items.push(ItemView {
            sku: CompactString::from(unbucketed(sku)),
            qty: qty
                .parse()
                .map_err(|_| bad_reply(format!("item qty {qty:?}")))?,
        });
    }
    let order_ref = text(reply, 5);
    Ok(Reservation {
        id,
        status: status(&text(reply, 1))?,
        customer_id: CompactString::from(text(reply, 2)),
        items,
        created_at_ms: int(reply, 3)?,
        expires_at_ms: int(reply, 4)?,
        order_ref: (!order_ref.is_empty()).then(|| CompactString::from(order_ref)),
        payment: payment(reply)?,
    })
}

/// A view's payment: members 9 to 11 (gateway, payment_ref, since), empty
/// when none (and absent from a reserve's own answer).
fn payment(reply: &[Value]) -> Result<Option<Box<engine::Payment>>, Error> {
    let gateway = text(reply, 8);
    if gateway.is_empty() {
        return Ok(None);
    }
    Ok(Some(Box::new(engine::Payment {
        gateway: CompactString::from(gateway),
        payment_ref: CompactString::from(text(reply, 9)),
        since_ms: int(reply, 10)?,
    })))
}
