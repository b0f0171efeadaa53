//! The fuzz targets' smoke run (the real runs are `scripts/fuzz.sh`): seeds
//! made here from real logs, images and requests, and every file of the
//! committed corpora under `fuzz/corpus/`, through the same entry points
//! the fuzzers call. `cargo test --test fuzz_corpus -- --ignored` writes
//! the seeds into the corpora.

use std::path::PathBuf;
use std::sync::Arc;

use stampede::clock::ManualClock;
use stampede::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest};
use stampede::fuzzing;
use stampede::wal::{self, Durability, Journal, RecoveryMode, SimStorage, Wal};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("log_segment", fuzzing::log_segment),
    ("log_records", fuzzing::log_records),
    ("checkpoint_image", fuzzing::checkpoint_image),
    ("request", fuzzing::request),
];

/// A real log segment and a real checkpoint image of the same history.
fn real_log_and_image() -> (Vec<u8>, Vec<u8>) {
    let storage = SimStorage::new();
    let report = wal::recover(&storage, RecoveryMode::Strict, None, |_| Ok(())).unwrap();
    let log = Arc::new(
        Wal::open(
            Arc::new(storage.clone()),
            wal::Options {
                durability: Durability::Fsync,
                segment_bytes_max: 64 << 20,
            },
            &report,
        )
        .unwrap(),
    );
    let mut engine = Engine::new(
        Options {
            shards: 4,
            ..Options::default()
        },
        Arc::new(ManualClock::new(1_764_000_000_000)),
    );
    engine.attach_journal(log.clone());
    engine.set_stock("hot-1", 5, Some(2)).unwrap();
    engine.set_stock("cold-1", 100, None).unwrap();
    let items = [
        ItemRequest {
            sku: "hot-1",
            qty: 1,
        },
        ItemRequest {
            sku: "cold-1",
            qty: 3,
        },
    ];
    let req = |c| ReserveRequest {
        customer_id: c,
        items: &items,
        ttl_ms: Some(60_000),
        fill: Fill::All,
    };
    let a = engine.reserve(&req("c-1")).unwrap();
    let b = engine.reserve(&req("c-2")).unwrap();
    let c = engine.reserve(&req("c-3")).unwrap();
    engine.confirm(a.id, Some("order-1")).unwrap();
    engine.release(b.id).unwrap();
    engine.extend(c.id, 120_000).unwrap();
    engine.adjust_stock("cold-1", -10).unwrap();
    log.append(&stampede::idempotency::KeyRecord {
        key: "key-1",
        fingerprint: 7,
        status: 201,
        location: Some("/v1/reservations/r_x"),
        body: br#"{"id":"r_x"}"#,
        at_ms: 1_764_000_000_000,
    })
    .unwrap();
    log.close().unwrap();
    let (_, image) = engine.image(|| 0);
    (storage.bytes(&wal::segment_name(1)).unwrap(), image)
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (log, image) = real_log_and_image();
    let mut seeds = vec![
        ("log_segment", "real", log.clone()),
        ("log_segment", "torn", log[..log.len() - 7].to_vec()),
        ("checkpoint_image", "real", image),
        ("log_records", "real", unframed(&log)),
    ];
    let requests: [(&str, &str); 8] = [
        ("reserve", "/v1/reservations\n{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"a\",\"qty\":1}],\"ttl_ms\":1000,\"fill\":\"partial\",\"wait_ms\":5}"),
        ("batch", "/v1/batch\n{\"ops\":[{\"op\":\"reserve\",\"customer_id\":\"c\",\"items\":[{\"sku\":\"a\",\"qty\":2.0}]},{\"op\":\"confirm\",\"id\":\"r_0000000000020000000000000000\",\"order_ref\":\"o-1\",\"idempotency_key\":\"k\"},{\"op\":\"extend\",\"id\":\"r_1\",\"ttl_ms\":5}]}"),
        ("sku", "/v1/skus/hot%3A1\n{\"stock\":10,\"customer_limit\":2}"),
        ("adjust", "/v1/skus/a/adjust\n{\"delta\":-3}"),
        ("extend", "/v1/reservations/r_0000000000020000000000000000/extend\n{\"ttl_ms\":60000}"),
        ("confirm", "/v1/reservations/r_0000000000020000000000000000/confirm\n{\"order_ref\":\"o-9\"}"),
        ("release", "/v1/reservations/r_00000000000200000000000000%30/release\n"),
        ("percent", "/v1/skus/%E2%82%AC%zz%/adjust\n{}"),
    ];
    for (name, text) in requests {
        seeds.push(("request", name, text.as_bytes().to_vec()));
    }
    seeds
}

/// A segment's records as `log_records` takes them: length, type, payload
/// (records with payloads over 255 bytes are left out).
fn unframed(segment: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = wal::record::SEGMENT_HEADER_LEN;
    while let Ok(d) = wal::record::decode(&segment[at..]) {
        let payload = &segment[at + wal::record::RECORD_HEADER_LEN..at + d.len];
        if let Ok(len) = u8::try_from(payload.len()) {
            out.push(len);
            out.push(segment[at + 20]);
            out.extend_from_slice(payload);
        }
        at += d.len;
    }
    out
}

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_seed_and_corpus_file_goes_through_its_target() {
    let mut ran = 0;
    for (target, _, bytes) in seeds() {
        let run = TARGETS.iter().find(|t| t.0 == target).unwrap().1;
        run(&bytes);
        ran += 1;
    }
    for (target, run) in TARGETS {
        let dir = corpus(target);
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for file in files {
            let path = file.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            ran += 1;
        }
    }
    assert!(ran >= 11 + 3, "the committed corpora are missing");
}

/// A recovered real log round-trips and keeps its history.
#[test]
fn the_real_seed_log_recovers_whole() {
    let (log, _) = real_log_and_image();
    let mut records = 0;
    let storage = SimStorage::new();
    storage.set_bytes(&wal::segment_name(1), log);
    wal::read_log(&storage, None, |_, _, _| {
        records += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(records, 10);
}

#[test]
#[ignore = "writes the seeds into fuzz/corpus/"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
