//! Verifies `N` gateway webhooks' signatures of one scheme, for
//! `scripts/payments-bench.sh`: callgrind counts the instructions of two
//! runs (N = 1,000 and 3,000) and divides the difference, so start-up
//! drops out.
//!
//!   cargo run --release --example signature_cost -- stripe|standard N

use stampede::payments::{signature, Gateway, Scheme};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (scheme, n) = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("stripe"), Some(n)) => (Scheme::Stripe, n),
        (Some("standard"), Some(n)) => (Scheme::Standard, n),
        _ => {
            eprintln!("usage: signature_cost stripe|standard N");
            std::process::exit(2);
        }
    };
    let n: u64 = n.parse().expect("N is a count");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let gateway = Gateway {
        name: "g".into(),
        scheme,
        secrets: vec![secret.into()],
        tolerance_s: 300,
    };
    // A Stripe payment_intent.succeeded of the usual size (~1.5 KB).
    let body = format!(
        r#"{{"id":"evt_3MtwBwLkdIwHu7ix0VD5Q2Jf","object":"event","type":"payment_intent.succeeded","data":{{"object":{{"id":"pi_3MtwBwLkdIwHu7ix28a3tqPa","object":"payment_intent","amount":2000,"currency":"usd","metadata":{{"stampede_hold":"r_0000000000000000000100000000"}},"pad":"{}"}}}}}}"#,
        "x".repeat(1200)
    );
    let t: u64 = 1_700_000_000;
    let mac = |key: &[u8], msg: &[u8]| {
        use hmac::{Hmac, Mac};
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes()
    };
    let headers: Vec<(&str, String)> = match scheme {
        Scheme::Stripe => {
            let sig = mac(secret.as_bytes(), format!("{t}.{body}").as_bytes());
            let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
            vec![("stripe-signature", format!("t={t},v1={hex}"))]
        }
        Scheme::Standard => {
            use base64::Engine as _;
            let key = signature::standard_key(secret).unwrap();
            let sig = mac(&key, format!("msg_1.{t}.{body}").as_bytes());
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", t.to_string()),
                (
                    "webhook-signature",
                    format!(
                        "v1,{}",
                        base64::engine::general_purpose::STANDARD.encode(sig)
                    ),
                ),
            ]
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut ok = 0;
    for _ in 0..n {
        ok += u64::from(
            signature::verify(&gateway, header, std::hint::black_box(body.as_bytes()), t).is_ok(),
        );
    }
    assert_eq!(ok, n, "every signature verifies");
}
