//! A payment gateway, as the load generator plays it (`[flow.payment]`):
//! the events it sends when a payment ends, signed as it signs them
//! (Stripe's `Stripe-Signature`, or Standard Webhooks 1.0).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::scenario::FlowPayment;

/// A webhook as sent: its body and its signature headers.
pub type Signed = (String, Vec<(&'static str, String)>);

/// The webhook a gateway sends for hold `hold`'s payment `payment_ref`:
/// its body and signature headers, signed at `now_s` (Unix seconds).
pub fn webhook(
    p: &FlowPayment,
    event_id: &str,
    hold: &str,
    payment_ref: &str,
    succeeded: bool,
    now_s: u64,
) -> Result<Signed, String> {
    match p.scheme.as_str() {
        "stripe" => {
            let kind = match succeeded {
                true => "payment_intent.succeeded",
                false => "payment_intent.payment_failed",
            };
            let body = format!(
                r#"{{"id":"{event_id}","type":"{kind}","data":{{"object":{{"id":"{payment_ref}","metadata":{{"stampede_hold":"{hold}"}}}}}}}}"#
            );
            let v1 = hex(&hmac(
                p.secret.as_bytes(),
                &[format!("{now_s}.").as_bytes(), body.as_bytes()],
            )?);
            Ok((
                body,
                vec![("stripe-signature", format!("t={now_s},v1={v1}"))],
            ))
        }
        _ => {
            let kind = match succeeded {
                true => "payment.succeeded",
                false => "payment.failed",
            };
            let body = format!(
                r#"{{"type":"{kind}","data":{{"hold":"{hold}","payment_ref":"{payment_ref}"}}}}"#
            );
            let key = match p.secret.strip_prefix("whsec_") {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| "flow.payment.secret: not base64 after whsec_".to_owned())?,
                None => p.secret.as_bytes().to_vec(),
            };
            let mac = hmac(
                &key,
                &[format!("{event_id}.{now_s}.").as_bytes(), body.as_bytes()],
            )?;
            let signature = format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            );
            Ok((
                body,
                vec![
                    ("webhook-id", event_id.to_owned()),
                    ("webhook-timestamp", now_s.to_string()),
                    ("webhook-signature", signature),
                ],
            ))
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|e| e.to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's own verifier accepts what this gateway signs.
    #[test]
    fn stampede_verifies_what_the_gateway_signs() {
        for (scheme, secret) in [
            ("stripe", "whsec_loadgen_secret"),
            ("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ] {
            let p = FlowPayment {
                scheme: scheme.into(),
                secret: secret.into(),
                ..FlowPayment::default()
            };
            let (body, headers) = webhook(&p, "evt_1", "r_1", "pi_1", true, 1_700_000_000).unwrap();
            let gateway = stampede::payments::Gateway {
                name: "g".into(),
                scheme: match scheme {
                    "stripe" => stampede::payments::Scheme::Stripe,
                    _ => stampede::payments::Scheme::Standard,
                },
                secrets: vec![secret.into()],
                tolerance_s: 300,
            };
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            stampede::payments::signature::verify(&gateway, header, body.as_bytes(), 1_700_000_010)
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            let event = stampede::payments::event::read(
                gateway.scheme,
                body.as_bytes(),
                header("webhook-id"),
            )
            .unwrap();
            assert_eq!(event.hold.as_deref(), Some("r_1"));
            assert_eq!(event.payment_ref.as_deref(), Some("pi_1"));
        }
    }
}
