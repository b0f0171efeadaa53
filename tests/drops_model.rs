//! Drops against their log, as a property: any sequence of creating a
//! drop, joins (new and repeated customers), clock jumps across the
//! opening and the pace, the opener's rounds, checkpoints and restarts
//! leaves a drop that a restart rebuilds exactly: the same entrants,
//! positions, admission times, admitted count and seed. On simulated
//! files (`SimStorage`), through the same start-up as the server.

use std::sync::Arc;

use proptest::prelude::*;
use stampede::clock::ManualClock;
use stampede::engine::{Engine, Options};
use stampede::store::embedded::{open_core, Core, Owners};
use stampede::wal::{self, Durability, RecoveryMode, SimStorage};

const T0: u64 = 1_764_000_000_000;

fn start(storage: &SimStorage, clock: &Arc<ManualClock>) -> Core {
    let engine = Engine::new(
        Options {
            shards: 2,
            ..Options::default()
        },
        clock.clone(),
    );
    open_core(
        Arc::new(storage.clone()),
        engine,
        Owners::new(
            stampede::idempotency::IdempotencyStore::new(86_400_000, 1_000, 1 << 20),
            clock.clone(),
        ),
        RecoveryMode::Strict,
        wal::Options {
            durability: Durability::Fsync,
            segment_bytes_max: 1 << 20,
        },
    )
    .expect("recovery")
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Advance(u16),
    OpenerRound,
    Checkpoint,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40).prop_map(Op::Join),
        3 => (1u16..400).prop_map(Op::Advance),
        2 => Just(Op::OpenerRound),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
    ]
}

/// One customer's entry: position, admitted, estimated admission.
type EntrySeen = Option<(Option<u64>, bool, Option<u64>)>;

/// State and seed, entrants, admitted, and every customer's entry.
type Seen = (String, usize, usize, Vec<EntrySeen>);

/// Everything a client can see of the drop, at the clock's time.
fn seen(core: &Core) -> Seen {
    let view = core.drops.view("d").expect("the drop").value;
    let entries = (0..40u8)
        .map(|c| {
            core.drops.entry("d", &format!("c-{c}")).ok().map(|e| {
                (
                    e.value.position,
                    e.value.admitted,
                    e.value.estimated_admit_at_ms,
                )
            })
        })
        .collect();
    (
        format!("{} {:?} {}", view.state, view.seed, view.seed_sha256),
        view.entrants,
        view.admitted,
        entries,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_restart_rebuilds_every_drop_exactly(
        rate in prop_oneof![Just(None), (1u64..50).prop_map(Some)],
        opens_after in 0u64..1500,
        closes in prop_oneof![Just(None), (1u64..3000).prop_map(Some)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let storage = SimStorage::new();
        let clock = Arc::new(ManualClock::new(T0));
        let mut core = start(&storage, &clock);
        let opens = T0 + opens_after;
        let spec = stampede::drops::Spec {
            skus: vec!["s".into()],
            prequeue_opens_at_ms: T0,
            opens_at_ms: opens,
            closes_at_ms: closes.map(|c| opens + c),
            admit_per_s: rate,
        };
        let put = core.drops.put("d", spec).unwrap();
        core.wal.wait_durable(put.lsn).unwrap();
        for op in ops {
            match op {
                Op::Join(c) => {
                    if let Ok(joined) = core.drops.join("d", &format!("c-{c}")) {
                        core.wal.wait_durable(joined.lsn).unwrap();
                    }
                }
                Op::Advance(ms) => clock.advance(u64::from(ms)),
                Op::OpenerRound => {
                    core.drops.open_due().unwrap();
                }
                Op::Checkpoint => {
                    core.checkpoint().unwrap();
                }
                Op::Restart => {
                    let before = seen(&core);
                    core.wal.sync().unwrap();
                    drop(core);
                    core = start(&storage, &clock);
                    prop_assert_eq!(seen(&core), before);
                }
            }
        }
        let before = seen(&core);
        core.wal.sync().unwrap();
        drop(core);
        let again = start(&storage, &clock);
        prop_assert_eq!(seen(&again), before);
    }
}
