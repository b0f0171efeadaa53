//! Verifying a gateway's webhook signature on the raw bytes, before
//! anything parses them (contract v1.2, "Payments"). Every comparison is
//! in constant time (`Mac::verify_slice`); any configured secret may have
//! made the signature (rotation); a timestamp further than the gateway's
//! `tolerance_s` from now is refused.
//!
//! - `stripe`: `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>...]`,
//!   each `v1` the HMAC-SHA256 of `<t>.<body>` keyed with the secret's
//!   bytes as configured (the `whsec_...` text itself, as Stripe does).
//! - `standard`: Standard Webhooks 1.0: `webhook-id`, `webhook-timestamp`,
//!   `webhook-signature` (space-separated `v1,<base64>`), the HMAC-SHA256 of
//!   `<id>.<timestamp>.<body>` keyed with the base64 after `whsec_` (or
//!   the secret's bytes without that prefix).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{Gateway, Scheme};

/// Why a webhook's signature is refused (400 `invalid_signature`; the
/// text never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no {0} header")]
    Missing(&'static str),
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error("the signature's time is {skew_s} s from now, over the gateway's tolerance_s = {tolerance_s}")]
    Stale { skew_s: u64, tolerance_s: u64 },
    #[error("no signature matches any of the gateway's secrets")]
    NoMatch,
}

/// What a verified webhook brings besides its body: the event id
/// `webhook-id` (standard; a stripe event's id is in its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub webhook_id: Option<String>,
}

/// Verifies `body` as `gateway` signs it; `header` reads a request header
/// by its lowercase name; `now_s` is the time in Unix seconds.
pub fn verify<'h>(
    gateway: &Gateway,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_s: u64,
) -> Result<Verified, Refused> {
    match gateway.scheme {
        Scheme::Stripe => verify_stripe(gateway, &header, body, now_s),
        Scheme::Standard => verify_standard(gateway, &header, body, now_s),
    }
}

fn fresh(t: u64, now_s: u64, tolerance_s: u64) -> Result<(), Refused> {
    let skew_s = t.abs_diff(now_s);
    match skew_s <= tolerance_s {
        true => Ok(()),
        false => Err(Refused::Stale {
            skew_s,
            tolerance_s,
        }),
    }
}

/// Whether `tag` is the HMAC-SHA256 of `parts`, in order, under `key`
/// (constant time).
fn matches(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(tag).is_ok()
}

fn verify_stripe<'h>(
    gateway: &Gateway,
    header: &impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_s: u64,
) -> Result<Verified, Refused> {
    const NAME: &str = "Stripe-Signature";
    let value = header("stripe-signature").ok_or(Refused::Missing(NAME))?;
    let mut t = None;
    let mut tags = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => tags.push(v),
            _ => {}
        }
    }
    let t_text = t.ok_or(Refused::Malformed(NAME))?;
    let t: u64 = t_text.parse().map_err(|_| Refused::Malformed(NAME))?;
    if tags.is_empty() {
        return Err(Refused::Malformed(NAME));
    }
    fresh(t, now_s, gateway.tolerance_s)?;
    let parts: [&[u8]; 3] = [t_text.as_bytes(), b".", body];
    let found = tags.iter().filter_map(|tag| hex_decode(tag)).any(|tag| {
        gateway
            .secrets
            .iter()
            .any(|secret| matches(secret.as_bytes(), &parts, &tag))
    });
    match found {
        true => Ok(Verified { webhook_id: None }),
        false => Err(Refused::NoMatch),
    }
}

fn verify_standard<'h>(
    gateway: &Gateway,
    header: &impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_s: u64,
) -> Result<Verified, Refused> {
    let id = header("webhook-id").ok_or(Refused::Missing("webhook-id"))?;
    let ts_text = header("webhook-timestamp").ok_or(Refused::Missing("webhook-timestamp"))?;
    let signatures = header("webhook-signature").ok_or(Refused::Missing("webhook-signature"))?;
    let ts: u64 = ts_text
        .trim()
        .parse()
        .map_err(|_| Refused::Malformed("webhook-timestamp"))?;
    fresh(ts, now_s, gateway.tolerance_s)?;
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.trim().as_bytes(), b".", body];
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys: Vec<Vec<u8>> = gateway
        .secrets
        .iter()
        .filter_map(|s| standard_key(s))
        .collect();
    let found = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| b64.decode(s).ok())
        .any(|tag| keys.iter().any(|key| matches(key, &parts, &tag)));
    match found {
        true => Ok(Verified {
            webhook_id: Some(id.to_owned()),
        }),
        false => Err(Refused::NoMatch),
    }
}

/// A Standard Webhooks secret's key: the base64 after `whsec_`, or the
/// bytes of a secret without that prefix; `None` for a `whsec_` secret
/// that is not base64 (the config refuses one).
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
        None => Some(secret.as_bytes().to_vec()),
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(scheme: Scheme, secrets: &[&str]) -> Gateway {
        Gateway {
            name: "g".into(),
            scheme,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            tolerance_s: 300,
        }
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The Standard Webhooks specification's own test vector.
    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        let g = gateway(
            Scheme::Standard,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        );
        let h = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bad= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let body = br#"{"test": 2432232314}"#;
        let ok = verify(&g, headers(&h), body, 1614265330 + 10).unwrap();
        assert_eq!(
            ok.webhook_id.as_deref(),
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        // One byte changed, a stale time, another secret: refused.
        assert_eq!(
            verify(&g, headers(&h), br#"{"test": 2432232315}"#, 1614265330),
            Err(Refused::NoMatch)
        );
        assert!(matches!(
            verify(&g, headers(&h), body, 1614265330 + 301),
            Err(Refused::Stale { skew_s: 301, .. })
        ));
        let other = gateway(Scheme::Standard, &["whsec_AAAAAAAAAAAAAAAAAAAAAAAA"]);
        assert_eq!(
            verify(&other, headers(&h), body, 1614265330),
            Err(Refused::NoMatch)
        );
    }

    /// A Stripe signature (computed with Python's hmac, an independent
    /// implementation): any of several `v1`, any of several secrets.
    #[test]
    fn a_stripe_signature_verifies_under_any_secret_and_any_v1() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let sig = "59a90dff743f748f8d6083812e877d28ff9bfa61e3dc6089626fd31f3ebb8a95";
        let header = format!("t=1700000000,v1=00ff,v1={sig}");
        let h = [("stripe-signature", header.as_str())];
        let rotated = gateway(
            Scheme::Stripe,
            &["whsec_new_one_0000000", "whsec_test_secret_0123456789"],
        );
        assert_eq!(
            verify(&rotated, headers(&h), body, 1700000000).unwrap(),
            Verified { webhook_id: None }
        );
        let old_only = gateway(Scheme::Stripe, &["whsec_new_one_0000000"]);
        assert_eq!(
            verify(&old_only, headers(&h), body, 1700000000),
            Err(Refused::NoMatch)
        );
        assert!(matches!(
            verify(&rotated, headers(&h), body, 1700000000 - 400),
            Err(Refused::Stale { .. })
        ));
        assert_eq!(
            verify(&rotated, headers(&[]), body, 1700000000),
            Err(Refused::Missing("Stripe-Signature"))
        );
        for bad in ["v1=abc", "t=x,v1=00", "t=1700000000"] {
            let h = [("stripe-signature", bad)];
            assert_eq!(
                verify(&rotated, headers(&h), body, 1700000000),
                Err(Refused::Malformed("Stripe-Signature")),
                "{bad}"
            );
        }
    }
}
