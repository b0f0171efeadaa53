//! The outbox: signing, records, retries, over a manual clock.

use super::*;
use crate::wal::Entry;

#[test]
fn timestamps_are_rfc_3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339(1_796_008_238_193), "2026-11-30T03:10:38.193Z");
}

#[test]
fn the_signature_is_standard_webhooks() {
    // The Standard Webhooks reference test vector.
    let e = Endpoint::new(
        "http://127.0.0.1:1/hook",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        &[],
    )
    .unwrap();
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        e.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn endpoints_are_checked() {
    assert!(Endpoint::new("https://x/h", "0123456789abcdef", &[])
        .unwrap_err()
        .contains("https"));
    assert!(Endpoint::new("ftp://x/h", "0123456789abcdef", &[]).is_err());
    assert!(Endpoint::new("http://x/h", "short", &[])
        .unwrap_err()
        .contains("16 bytes"));
    assert!(Endpoint::new("http://x/h", "0123456789abcdef", &["stock.gone".into()]).is_err());
    let e = Endpoint::new("http://h:81/a/b", "0123456789abcdef", &["stock.out".into()]).unwrap();
    assert_eq!((e.authority.as_str(), e.path.as_str()), ("h:81", "/a/b"));
    assert!(e.kinds.has(Kind::StockOut) && !e.kinds.has(Kind::StockBack));
}

#[test]
fn records_round_trip() {
    for record in [
        OutboxRecord::Queued {
            id: 9 << 16,
            kind: Kind::HoldExpired,
            at_ms: 5,
            data: b"{}",
        },
        OutboxRecord::Done {
            id: 9 << 16,
            url: "http://x/h",
            gave_up: true,
        },
    ] {
        let mut bytes = Vec::new();
        record.encode(&mut bytes).unwrap();
        assert_eq!(OutboxRecord::decode(record.kind(), &bytes).unwrap(), record);
        for cut in 0..bytes.len() {
            assert!(OutboxRecord::decode(record.kind(), &bytes[..cut]).is_err());
        }
    }
}

#[test]
fn an_image_keeps_what_is_still_to_deliver_per_endpoint() {
    let clock = Arc::new(crate::clock::ManualClock::new(0));
    let endpoints = || {
        vec![
            Endpoint::new("http://a/h", "0123456789abcdef", &[]).unwrap(),
            Endpoint::new("http://b/h", "0123456789abcdef", &["stock.out".into()]).unwrap(),
        ]
    };
    let options = Options {
        retry_max_ms: 1000,
        retry_base_ms: 10,
        timeout_ms: 1000,
        outbox_max: 10,
        concurrency: 1,
    };
    let outbox = Outbox::new(options, endpoints(), clock.clone());
    outbox.queue(1, Kind::StockOut, 1, b"{\"a\":1}");
    outbox.queue(2, Kind::StockBack, 2, b"{}");
    // Endpoint a delivered 1; b has it still.
    outbox.endpoints[0].pending.lock().remove(&1);
    let ((), image) = outbox.with_locked(|| ());
    let again = Outbox::new(options, endpoints(), clock);
    let mut bytes = &image[..];
    while !bytes.is_empty() {
        let d = wal::record::decode(bytes).unwrap();
        again
            .replay(OutboxRecord::decode(d.kind, d.payload).unwrap())
            .unwrap();
        bytes = &bytes[d.len..];
    }
    let keys = |o: &Outbox, i: usize| {
        o.endpoints[i]
            .pending
            .lock()
            .keys()
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!((keys(&again, 0), keys(&again, 1)), (vec![2], vec![1]));
    // Bounded: the oldest goes, counted.
    for id in 10..25 {
        again.queue(id, Kind::StockOut, 3, b"{}");
    }
    assert_eq!(again.endpoints[1].pending.lock().len(), 10);
    assert_eq!(again.endpoints[1].counts.dropped.load(Relaxed), 6);
}
