//! What a gateway's (verified) webhook means (contract v1.2, "Payments",
//! "What a webhook means"): succeeded, failed, canceled or ignored; which
//! hold it names, if any; its payment and order references; the event id
//! it is applied once by.

use serde_json::Value;

use super::config::Scheme;

/// How the payment ended, as the event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    Succeeded,
    Failed,
    Canceled,
    /// A type that says nothing of a payment's end: 200 `ignored`.
    Ignored,
}

/// A gateway event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    /// What the event is applied once by: the body's `id` (stripe) or
    /// `webhook-id` (standard).
    pub id: String,
    /// The event's type, as sent.
    pub kind: String,
    pub meaning: Meaning,
    /// The hold the event names, if it names one.
    pub hold: Option<String>,
    /// The payment's reference at the gateway, matched against the one a
    /// hold recorded when the event names no hold.
    pub payment_ref: Option<String>,
    /// The confirmation's order reference: the event's, else the
    /// `payment_ref`.
    pub order_ref: Option<String>,
}

/// Why a verified body is not an event (400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnEvent(pub String);

/// Reads `body` (already verified) as `scheme`'s event; `webhook_id` is
/// the standard scheme's id header.
pub fn read(
    scheme: Scheme,
    body: &[u8],
    webhook_id: Option<&str>,
) -> Result<GatewayEvent, NotAnEvent> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| NotAnEvent(format!("the body is not JSON: {e}")))?;
    let text = |v: &Value, path: &[&str]| -> Option<String> {
        let mut at = v;
        for key in path {
            at = at.get(key)?;
        }
        at.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let kind = text(&value, &["type"]).ok_or_else(|| NotAnEvent("the event has no type".into()))?;
    match scheme {
        Scheme::Stripe => {
            let id =
                text(&value, &["id"]).ok_or_else(|| NotAnEvent("the event has no id".into()))?;
            let object = value
                .get("data")
                .and_then(|d| d.get("object"))
                .unwrap_or(&Value::Null);
            let paid = text(object, &["payment_status"]).as_deref() == Some("paid");
            let meaning = match kind.as_str() {
                "payment_intent.succeeded" | "checkout.session.async_payment_succeeded" => {
                    Meaning::Succeeded
                }
                "checkout.session.completed" if paid => Meaning::Succeeded,
                "payment_intent.payment_failed" | "checkout.session.async_payment_failed" => {
                    Meaning::Failed
                }
                "payment_intent.canceled" | "checkout.session.expired" => Meaning::Canceled,
                _ => Meaning::Ignored,
            };
            let session = kind.starts_with("checkout.session.");
            let payment_ref = match session {
                true => text(object, &["payment_intent"]),
                false => text(object, &["id"]),
            };
            let hold = text(object, &["metadata", "stampede_hold"])
                .or_else(|| text(object, &["client_reference_id"]));
            let order_ref =
                text(object, &["metadata", "order_ref"]).or_else(|| payment_ref.clone());
            Ok(GatewayEvent {
                id,
                kind,
                meaning,
                hold,
                payment_ref,
                order_ref,
            })
        }
        Scheme::Standard => {
            let id = webhook_id
                .filter(|s| !s.is_empty())
                .ok_or_else(|| NotAnEvent("no webhook-id".into()))?
                .to_owned();
            let meaning = match kind.as_str() {
                "payment.succeeded" => Meaning::Succeeded,
                "payment.failed" => Meaning::Failed,
                "payment.canceled" => Meaning::Canceled,
                _ => Meaning::Ignored,
            };
            let data = value.get("data").unwrap_or(&Value::Null);
            let payment_ref = text(data, &["payment_ref"]);
            let order_ref = text(data, &["order_ref"]).or_else(|| payment_ref.clone());
            Ok(GatewayEvent {
                id,
                kind,
                meaning,
                hold: text(data, &["hold"]),
                payment_ref,
                order_ref,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_types_map_to_their_meaning_and_name_their_hold() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_9","metadata":{"stampede_hold":"h-1","order_ref":"o-7"}}}}"#;
        let e = read(Scheme::Stripe, body, None).unwrap();
        assert_eq!(
            (
                e.id.as_str(),
                e.meaning,
                e.hold.as_deref(),
                e.payment_ref.as_deref(),
                e.order_ref.as_deref()
            ),
            (
                "evt_1",
                Meaning::Succeeded,
                Some("h-1"),
                Some("pi_9"),
                Some("o-7")
            )
        );
        // A checkout session: its payment_intent is the reference; paid or not.
        let session = |status: &str| {
            format!(
                r#"{{"id":"evt_2","type":"checkout.session.completed","data":{{"object":{{"id":"cs_1","payment_intent":"pi_2","payment_status":"{status}","client_reference_id":"h-2"}}}}}}"#
            )
        };
        let paid = read(Scheme::Stripe, session("paid").as_bytes(), None).unwrap();
        assert_eq!(
            (
                paid.meaning,
                paid.hold.as_deref(),
                paid.payment_ref.as_deref()
            ),
            (Meaning::Succeeded, Some("h-2"), Some("pi_2"))
        );
        assert_eq!(
            paid.order_ref.as_deref(),
            Some("pi_2"),
            "no order_ref: the payment_ref"
        );
        let unpaid = read(Scheme::Stripe, session("unpaid").as_bytes(), None).unwrap();
        assert_eq!(unpaid.meaning, Meaning::Ignored);
        for (kind, meaning) in [
            (
                "checkout.session.async_payment_succeeded",
                Meaning::Succeeded,
            ),
            ("payment_intent.payment_failed", Meaning::Failed),
            ("checkout.session.async_payment_failed", Meaning::Failed),
            ("payment_intent.canceled", Meaning::Canceled),
            ("checkout.session.expired", Meaning::Canceled),
            ("charge.refunded", Meaning::Ignored),
        ] {
            let body = format!(r#"{{"id":"e","type":"{kind}","data":{{"object":{{"id":"x"}}}}}}"#);
            assert_eq!(
                read(Scheme::Stripe, body.as_bytes(), None).unwrap().meaning,
                meaning,
                "{kind}"
            );
        }
    }

    #[test]
    fn standard_events_take_their_id_from_the_header() {
        let body = br#"{"type":"payment.failed","data":{"payment_ref":"p-1"}}"#;
        let e = read(Scheme::Standard, body, Some("msg_1")).unwrap();
        assert_eq!(
            (e.id.as_str(), e.meaning, e.hold, e.payment_ref.as_deref()),
            ("msg_1", Meaning::Failed, None, Some("p-1"))
        );
        assert!(read(Scheme::Standard, body, None).is_err());
        assert!(read(Scheme::Standard, b"not json", Some("m")).is_err());
        assert!(
            read(Scheme::Stripe, br#"{"type":"x"}"#, None).is_err(),
            "a stripe event needs its id"
        );
    }
}
