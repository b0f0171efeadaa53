//! The log on the real disk (the other log tests use the simulated file
//! layer): restart, a torn tail made by truncating the real file, and a
//! flipped bit that stops start-up naming the file and offset.

use std::sync::Arc;

use stampede::clock::ManualClock;
use stampede::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest};
use stampede::wal::{self, recover, DiskStorage, Durability, RecoveryMode, Wal};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("stampede-wal-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(
    path: &std::path::Path,
    epoch: u32,
) -> Result<(Engine, Arc<Wal>, wal::RecoveryReport), wal::Error> {
    let storage = Arc::new(DiskStorage::new(path).unwrap());
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let mut engine = Engine::new(
        Options {
            shards: 4,
            epoch,
            ..Options::default()
        },
        clock,
    );
    let report = recover(storage.as_ref(), RecoveryMode::Strict, None, |r| {
        engine.replay_frame(r)
    })?;
    engine.finish_replay();
    engine.check_invariants();
    let wal = Arc::new(Wal::open(
        storage,
        wal::Options {
            durability: Durability::Fsync,
            segment_bytes_max: 64 << 20,
        },
        &report,
    )?);
    engine.attach_journal(wal.clone());
    Ok((engine, wal, report))
}

fn reserve(engine: &Engine, customer: &str) {
    let items = [ItemRequest { sku: "a", qty: 1 }];
    engine
        .reserve(&ReserveRequest {
            customer_id: customer,
            items: &items,
            ttl_ms: None,
            fill: Fill::All,
        })
        .unwrap();
}

fn segment(path: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

#[test]
fn on_disk_the_log_survives_restarts_and_cuts_a_torn_tail() {
    let path = dir("torn");
    let (engine, wal, _) = open(&path, 0).unwrap();
    engine.set_stock("a", 100, None).unwrap();
    for i in 0..10 {
        reserve(&engine, &format!("c{i}"));
    }
    wal.sync().unwrap();
    drop((engine, wal));
    let (engine, _, report) = open(&path, 1).unwrap();
    assert_eq!((report.records, engine.sku("a").unwrap().held), (11, 10));
    drop(engine);
    // Cut the real file inside its last record, as a crash mid-write would.
    let file = segment(&path);
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let (engine, wal, report) = open(&path, 2).unwrap();
    assert_eq!(report.records, 10);
    assert!(report.torn_tail.is_some());
    assert_eq!(engine.sku("a").unwrap().held, 9);
    reserve(&engine, "after");
    wal.sync().unwrap();
    drop((engine, wal));
    let (engine, _, report) = open(&path, 3).unwrap();
    assert_eq!((report.records, engine.sku("a").unwrap().held), (11, 10));
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn on_disk_a_flipped_bit_mid_log_stops_start_up() {
    let path = dir("flip");
    let (engine, wal, _) = open(&path, 0).unwrap();
    engine.set_stock("a", 100, None).unwrap();
    for i in 0..10 {
        reserve(&engine, &format!("c{i}"));
    }
    wal.sync().unwrap();
    drop((engine, wal));
    let file = segment(&path);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    match open(&path, 1) {
        Err(wal::Error::Corrupt {
            file: name, offset, ..
        }) => {
            assert_eq!(name, file.file_name().unwrap().to_str().unwrap());
            assert!(
                offset as usize <= middle && middle - (offset as usize) < 100,
                "offset {offset}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a damaged log was accepted"),
    }
    std::fs::remove_dir_all(&path).unwrap();
}
