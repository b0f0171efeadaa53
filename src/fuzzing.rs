//! Entry points for the coverage-guided fuzz targets (`fuzz/`) and their
//! corpus smoke test (`tests/fuzz_corpus.rs`): each takes arbitrary bytes
//! and must neither panic nor hang, whatever they are. Not an API.

use std::sync::Arc;

use crate::clock::ManualClock;
use crate::engine::{Engine, Options};
use crate::wal::{self, record, RecoveryMode, SimStorage};

fn engine() -> Engine {
    Engine::new(
        Options {
            shards: 4,
            retained_max: 1 << 16,
            skus_max: 1 << 16,
            ..Options::default()
        },
        Arc::new(ManualClock::new(1_764_000_000_000)),
    )
}

/// `bytes` as the one segment of a log, through recovery into an engine
/// and the key store, as start-up would. Every record that decodes
/// encodes back to the same bytes; a recovered engine keeps its invariants.
pub fn log_segment(bytes: &[u8]) {
    let mut at = record::SEGMENT_HEADER_LEN.min(bytes.len());
    while let Ok(d) = record::decode(&bytes[at..]) {
        // Whatever decodes as an engine change or a stored answer encodes
        // back to the same bytes.
        let mut again = Vec::new();
        if let Ok(r) = crate::records::Record::decode(d.kind, d.payload) {
            r.frame(d.lsn, &mut again)
                .expect("a record read back encodes again");
        } else {
            again.extend_from_slice(&bytes[at..at + d.len]);
        }
        assert_eq!(
            again,
            bytes[at..at + d.len],
            "decode then encode round-trips"
        );
        at += d.len;
    }
    let storage = SimStorage::new();
    storage.set_bytes(&wal::segment_name(1), bytes.to_vec());
    let engine = engine();
    let keys = crate::idempotency::IdempotencyStore::new(86_400_000, 1 << 16, 1 << 16);
    let drops = crate::drops::DropBook::new(
        crate::drops::Options::default(),
        std::sync::Arc::new(crate::clock::ManualClock::new(0)),
    );
    let outbox = crate::events::webhooks::Outbox::new(
        crate::config::Config::default().webhook_options(),
        Vec::new(),
        std::sync::Arc::new(crate::clock::ManualClock::new(0)),
    );
    let recovered = wal::recover(&storage, RecoveryMode::TruncateCorrupt, None, |frame| {
        crate::store::embedded::replay(&engine, &keys, &drops, &outbox, frame, 0).map(drop)
    });
    if recovered.is_ok() {
        engine.finish_replay();
        engine.check_invariants();
    }
}

/// `bytes` as records with sound framing, so that the fuzzer reaches
/// replay (a CRC is hard to guess): each is a length byte, a type byte and
/// that many payload bytes; they are framed with LSNs from 1 and valid
/// CRCs into one segment, then recovered as [`log_segment`] does.
pub fn log_records(mut bytes: &[u8]) {
    let mut segment = record::segment_header(1).to_vec();
    let mut lsn = 1;
    while let [len, kind, rest @ ..] = bytes {
        let len = usize::from(*len).min(rest.len());
        let start = segment.len();
        segment.extend_from_slice(&[0; 20]);
        segment.push(*kind);
        segment.extend_from_slice(&rest[..len]);
        record::seal(&mut segment[start..], lsn);
        lsn += 1;
        bytes = &rest[len..];
    }
    log_segment(&segment);
}

/// `bytes` as an engine checkpoint image, restored into an empty engine,
/// and as a key store image.
pub fn checkpoint_image(bytes: &[u8]) {
    let engine = engine();
    let _ = engine.restore(bytes);
    let keys = crate::idempotency::IdempotencyStore::new(86_400_000, 1 << 16, 1 << 16);
    let _ = keys.restore_image(bytes, 0);
}

/// A request: the first line is the path, the rest the body; routed
/// (percent-decoding included) and parsed as the server would.
pub fn request(bytes: &[u8]) {
    crate::api::fuzz_request(bytes);
}
