//! The book's rules over a manual clock.

use super::*;
use crate::clock::ManualClock;

fn book(clock: &Arc<ManualClock>) -> DropBook {
    DropBook::new(Options::default(), clock.clone())
}

fn spec(opens: u64, closes: Option<u64>, rate: Option<u64>) -> Spec {
    Spec {
        skus: vec!["s".into()],
        prequeue_opens_at_ms: 0,
        opens_at_ms: opens,
        closes_at_ms: closes,
        admit_per_s: rate,
    }
}

fn position_and_eta(book: &DropBook, c: &str) -> (Option<u64>, Option<u64>) {
    let e = book.entry("d", c).unwrap().value;
    (e.position, e.estimated_admit_at_ms)
}

#[test]
fn late_arrivals_follow_the_pace_and_a_quiet_spell_banks_no_burst() {
    let clock = Arc::new(ManualClock::new(10));
    let book = book(&clock);
    book.put("d", spec(1000, None, Some(10))).unwrap();
    for c in ["a", "b", "c"] {
        book.join("d", c).unwrap();
    }
    clock.set(1050);
    let (new, e) = book.join("d", "late").unwrap().value;
    assert!(new);
    // 100 ms apart from the opening; the late one fourth.
    assert_eq!((e.position, e.estimated_admit_at_ms), (Some(4), Some(1300)));
    let mut etas: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|c| position_and_eta(&book, c).1.unwrap())
        .collect();
    etas.sort();
    assert_eq!(etas, [1000, 1100, 1200]);
    assert_eq!(book.view("d").unwrap().value.admitted, 1);
    // Long after the pace passed: admitted on joining, then paced again.
    clock.set(5000);
    assert_eq!(
        book.join("d", "p5").unwrap().value.1.admitted_at_ms,
        Some(5000)
    );
    clock.set(5010);
    assert_eq!(position_and_eta(&book, "p5"), (Some(5), Some(5000)));
    book.join("d", "p6").unwrap();
    assert_eq!(position_and_eta(&book, "p6"), (Some(6), Some(5100)));
    assert_eq!(book.view("d").unwrap().value.admitted, 5);
}

#[test]
fn admissions_are_recorded_as_the_schedule_makes_them_and_replay_checks_them() {
    let clock = Arc::new(ManualClock::new(10));
    let book = book(&clock);
    book.put("d", spec(1000, None, Some(10))).unwrap();
    for c in ["a", "b", "c"] {
        book.join("d", c).unwrap();
    }
    let logged = |book: &DropBook| book.line("d").unwrap().lock().logged_admissions();
    // Before the opening: come back at it.
    assert_eq!(book.open_due().unwrap(), Some(1000));
    clock.set(1000);
    // Opened; position 1 admitted at 1000: recorded, then come back
    // for position 2 (1100) no sooner than 200 ms after the record.
    assert_eq!(book.open_due().unwrap(), Some(1200));
    assert_eq!(logged(&book), (1, 1000));
    clock.set(1250);
    assert_eq!(book.open_due().unwrap(), None, "all three recorded");
    assert_eq!(logged(&book), (3, 1250));
    // The image carries the record; a log claiming more than the
    // schedule allows is refused.
    let ((), image) = book.with_locked(|| ());
    let again = DropBook::new(Options::default(), clock.clone());
    let mut bytes = &image[..];
    while !bytes.is_empty() {
        let d = wal::record::decode(bytes).unwrap();
        again
            .replay(DropRecord::decode(d.kind, d.payload).unwrap())
            .unwrap();
        bytes = &bytes[d.len..];
    }
    assert_eq!(logged(&again), (3, 1250));
    let mut bogus = Vec::new();
    wal::Entry::encode(
        &DropRecord::Admitted {
            drop: "d",
            through: 3,
            at_ms: 1150,
        },
        &mut bogus,
    )
    .unwrap();
    let err = again
        .replay(DropRecord::decode(record::ADMITTED_KIND, &bogus).unwrap())
        .unwrap_err();
    assert!(err.contains("the schedule 2"), "{err}");
}

#[test]
fn nobody_is_admitted_from_the_closing_on() {
    let clock = Arc::new(ManualClock::new(10));
    let book = book(&clock);
    book.put("d", spec(1000, Some(1250), Some(10))).unwrap();
    for c in ["a", "b", "c", "e"] {
        book.join("d", c).unwrap();
    }
    clock.set(2000);
    let view = book.view("d").unwrap().value;
    assert_eq!((view.state, view.admitted), ("closed", 3));
    let never: Vec<&str> = ["a", "b", "c", "e"]
        .into_iter()
        .filter(|c| position_and_eta(&book, c).1.is_none())
        .collect();
    assert_eq!(never.len(), 1, "position 4 falls after the closing");
    assert!(matches!(
        book.join("d", "z"),
        Err(Error::NotOpen {
            state: State::Closed,
            ..
        })
    ));
    assert!(matches!(
        book.gate("a", ["s"].into_iter()),
        Err(Error::NotAdmitted { .. })
    ));
}

#[test]
fn a_checkpoint_image_rebuilds_the_same_lines() {
    let clock = Arc::new(ManualClock::new(10));
    let live = book(&clock);
    live.put("d", spec(1000, None, Some(3))).unwrap();
    live.put(
        "e",
        Spec {
            skus: vec!["t".into()],
            ..spec(50_000, None, None)
        },
    )
    .unwrap();
    let customers: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    for c in &customers[..30] {
        live.join("d", c).unwrap();
        live.join("e", c).unwrap();
    }
    clock.set(2000);
    for c in &customers[30..] {
        live.join("d", c).unwrap();
    }
    let ((), image) = live.with_locked(|| ());
    let restored = book(&clock);
    let mut bytes = &image[..];
    while !bytes.is_empty() {
        let d = wal::record::decode(bytes).unwrap();
        restored
            .replay(DropRecord::decode(d.kind, d.payload).unwrap())
            .unwrap();
        bytes = &bytes[d.len..];
    }
    clock.set(4000);
    for name in ["d", "e"] {
        let (a, b) = (
            live.view(name).unwrap().value,
            restored.view(name).unwrap().value,
        );
        assert_eq!(
            (a.entrants, a.admitted, &a.seed, &a.seed_sha256, a.state),
            (b.entrants, b.admitted, &b.seed, &b.seed_sha256, b.state)
        );
        for c in &customers {
            let a = live.entry(name, c).ok().map(|e| e.value);
            let b = restored.entry(name, c).ok().map(|e| e.value);
            assert_eq!(a, b, "{name} {c}");
        }
    }
    assert!(restored.view("e").unwrap().value.seed.is_none());
}
