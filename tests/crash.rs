//! Real-process crash test: `stampede-crash-driver` (engine + log on a real
//! data dir, four threads, each change printed only once durable) is killed
//! with SIGKILL at random moments, again and again; after each kill the
//! data dir is recovered here and every acknowledged change must be there,
//! with no SKU oversold. 20 cycles by default, `CRASH_CYCLES` for more.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use stampede::clock::SystemClock;
use stampede::config::Config;
use stampede::datadir::DataDir;
use stampede::engine::{HoldId, Status};
use stampede::store::embedded::start_core;
use stampede::wal::RecoveryMode;

#[test]
fn acknowledged_changes_survive_sigkill() {
    let cycles: u64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("stampede-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Latest acknowledged fact per hold: 'R' held (or later changed by an
    // unacknowledged call), 'C' confirmed, 'X' released.
    let mut acked: HashMap<HoldId, char> = HashMap::new();
    let mut seed = 0x5eed_u64 ^ u64::from(std::process::id());
    for cycle in 0..cycles {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let lines_before_kill = 20 + (seed >> 33) % 400;
        let mut child = Command::new(env!("CARGO_BIN_EXE_stampede-crash-driver"))
            .args([dir.to_str().unwrap(), &seed.to_string()])
            // Held open: the driver exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the driver");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "cycle {cycle}: the driver did not start"
        );
        let mut seen = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("cycle {cycle}: the driver exited on its own");
            }
            // Only whole lines are acknowledgements.
            if let Some(text) = line.strip_suffix('\n') {
                let (kind, id) = text.split_once(' ').unwrap();
                acked.insert(id.parse().unwrap(), kind.chars().next().unwrap());
            }
            seen += 1;
            if seen == lines_before_kill {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let data_dir = DataDir::open(&dir).unwrap();
        let mut config = Config::default();
        config.engine.shards = 4;
        let core = start_core(
            &config,
            &data_dir,
            RecoveryMode::Strict,
            Arc::new(SystemClock),
        )
        .unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed: {e}"));
        core.engine.check_invariants();
        for (id, kind) in &acked {
            let r = core
                .engine
                .get(*id)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged hold {id} is gone: {e}"));
            let ok = match kind {
                'R' => matches!(
                    r.status,
                    Status::Held | Status::Confirmed | Status::Released
                ),
                'C' => r.status == Status::Confirmed,
                'X' => r.status == Status::Released,
                _ => unreachable!(),
            };
            assert!(
                ok,
                "cycle {cycle}: hold {id} acknowledged {kind} but recovered {:?}",
                r.status
            );
        }
        for sku in ["hot-1", "hot-2", "cold-1", "cold-2", "cold-3", "cold-4"] {
            if let Ok(v) = core.engine.sku(sku) {
                assert!(v.held + v.sold <= v.stock, "cycle {cycle}: oversold {v:?}");
            }
        }
        core.wal.close().unwrap();
    }
    assert!(
        acked.len() > 100,
        "the test must acknowledge real work ({} holds)",
        acked.len()
    );

    // The audit trail: `wal verify` passes, `wal inspect --hold` shows the
    // hold's life and nothing else.
    let stampede = env!("CARGO_BIN_EXE_stampede");
    let verify = Command::new(stampede)
        .args(["wal", "verify", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let (id, kind) = acked
        .iter()
        .find(|(_, k)| **k == 'C')
        .expect("some confirm was acknowledged");
    let inspect = Command::new(stampede)
        .args([
            "wal",
            "inspect",
            dir.to_str().unwrap(),
            "--hold",
            &id.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(*kind, 'C');
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("hold-created") && lines[1].contains("hold-confirmed"),
        "{text}"
    );
    assert!(lines.iter().all(|l| l.contains(&id.to_string())), "{text}");
    // A flipped bit mid-log: verify names the file and exits non-zero.
    let segment = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let verify = Command::new(stampede)
        .args(["wal", "verify", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!verify.status.success());
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(err.contains("damaged at offset"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
