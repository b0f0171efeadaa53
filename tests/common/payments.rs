//! Signing gateway webhooks as Stripe does, for the payment tests.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Stripe's `v1`: lowercase hex HMAC-SHA256 of `t.body`, keyed with the
/// secret's text.
pub fn stripe_v1(secret: &str, t: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Stripe event naming its hold in `metadata.stampede_hold`.
pub fn stripe_event(id: &str, kind: &str, hold: Option<&str>, intent: &str) -> String {
    let metadata = match hold {
        Some(h) => serde_json::json!({"stampede_hold": h}),
        None => serde_json::json!({}),
    };
    serde_json::json!({"id": id, "type": kind, "data": {"object": {"id": intent, "metadata": metadata}}})
        .to_string()
}

/// The `Stripe-Signature` header for `body` signed now with `secret`.
pub fn stripe_header(secret: &str, body: &str) -> String {
    let t = now_s();
    format!("Stripe-Signature: t={t},v1={}", stripe_v1(secret, t, body))
}
