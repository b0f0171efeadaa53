//! Time, injected.
//!
//! The engine never reads the system clock itself: it asks a [`Clock`]. The
//! server passes [`SystemClock`]; tests pass a [`ManualClock`] and jump it,
//! so expiry is tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The real clock: the system's wall clock (`CLOCK_REALTIME`).
///
/// Every reservation and every confirm reads it, so its cost shows in the
/// engine's throughput: through the vDSO a read costs about 40 ns on the
/// benchmark machines, a tenth of a reserve+confirm pair. Where the CPU's
/// time-stamp counter is invariant and the kernel itself keeps time with it
/// (clocksource `tsc`), a read is instead the counter (about 11 ns) scaled
/// from a per-thread anchor on the system clock, taken again every 50 ms;
/// see [`source`]. The two agree to within a few microseconds, so every
/// expiry decision stays exact to the millisecond, and a step of the system
/// clock (NTP) is followed within 50 ms. `STAMPEDE_CLOCK=system` in the
/// environment turns the counter off.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if let Some(ms) = tsc::now_ms() {
            return ms;
        }
        system_now_ms()
    }
}

/// A cheap timer for a request's latency: the time-stamp counter where
/// [`SystemClock`] trusts it (one instruction to read, where
/// `Instant::now` is a vDSO call), else `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Started);

#[derive(Debug, Clone, Copy)]
enum Started {
    #[cfg(target_arch = "x86_64")]
    Ticks(u64),
    At(std::time::Instant),
}

impl Stopwatch {
    #[inline]
    pub fn start() -> Stopwatch {
        #[cfg(target_arch = "x86_64")]
        if tsc::scale().is_some() {
            return Stopwatch(Started::Ticks(tsc::ticks()));
        }
        Stopwatch(Started::At(std::time::Instant::now()))
    }

    #[inline]
    pub fn elapsed(&self) -> std::time::Duration {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Started::Ticks(t) => tsc::since(t),
            Started::At(at) => at.elapsed(),
        }
    }
}

/// Which way [`SystemClock`] reads time on this machine: `"tsc"` or
/// `"system"`. Told at startup, so an operator knows.
pub fn source() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if tsc::scale().is_some() {
        return "tsc";
    }
    "system"
}

fn system_now_ms() -> u64 {
    system_now_ns() / 1_000_000
}

fn system_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // Not as_nanos(): its u128 shows in profiles. u64 nanoseconds
        // last until the year 2554.
        .map(|d| d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos()))
        // A clock before 1970 is a misconfigured machine; time 0 keeps
        // holds expiring (late) rather than panicking the server.
        .unwrap_or(0)
}

/// The time-stamp-counter read of [`SystemClock`].
#[cfg(target_arch = "x86_64")]
mod tsc {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// How long a thread's anchor is used before it is taken again.
    const ANCHOR_NS: u64 = 50_000_000;

    /// Nanoseconds a tick, as 32.32 fixed point, and the ticks an anchor
    /// lasts; `None` where the counter is not to be trusted.
    #[derive(Clone, Copy)]
    pub(super) struct Scale {
        ns_per_tick_q32: u64,
        anchor_ticks: u64,
    }

    pub(super) fn scale() -> Option<Scale> {
        static SCALE: OnceLock<Option<Scale>> = OnceLock::new();
        *SCALE.get_or_init(calibrate)
    }

    #[derive(Clone, Copy)]
    struct Anchor {
        tsc: u64,
        /// Wall-clock nanoseconds at `tsc`; 0 = no anchor yet.
        wall_ns: u64,
    }

    thread_local! {
        static ANCHOR: Cell<Anchor> = const { Cell::new(Anchor { tsc: 0, wall_ns: 0 }) };
    }

    #[inline]
    fn rdtsc() -> u64 {
        // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[inline]
    pub(super) fn now_ms() -> Option<u64> {
        let scale = scale()?;
        let now = rdtsc();
        let anchor = ANCHOR.with(Cell::get);
        // A counter behind the anchor wraps to a huge delta: re-anchor.
        let delta = now.wrapping_sub(anchor.tsc);
        if anchor.wall_ns == 0 || delta >= scale.anchor_ticks {
            return reanchor();
        }
        let ns = ((u128::from(delta) * u128::from(scale.ns_per_tick_q32)) >> 32) as u64;
        Some((anchor.wall_ns + ns) / 1_000_000)
    }

    /// The counter now (for [`super::Stopwatch`]).
    #[inline]
    pub(super) fn ticks() -> u64 {
        rdtsc()
    }

    /// Time since the counter read `start`; zero if the counter went
    /// back (another core's counter a little behind).
    #[inline]
    pub(super) fn since(start: u64) -> Duration {
        let Some(scale) = scale() else {
            return Duration::ZERO;
        };
        let delta = rdtsc().saturating_sub(start);
        Duration::from_nanos(((u128::from(delta) * u128::from(scale.ns_per_tick_q32)) >> 32) as u64)
    }

    #[cold]
    fn reanchor() -> Option<u64> {
        let (tsc, wall_ns) = pair(super::system_now_ns);
        if wall_ns == 0 {
            return None;
        }
        ANCHOR.with(|a| a.set(Anchor { tsc, wall_ns }));
        Some(wall_ns / 1_000_000)
    }

    /// A reading of `clock` and the counter at (about) the same instant:
    /// the counter's midpoint around the read. A thread preempted between
    /// the two counter reads would put the midpoint milliseconds off (seen
    /// on a loaded machine: a calibration 25% out), so the read is taken
    /// again, up to 16 times, and the tightest kept.
    fn pair(clock: impl Fn() -> u64) -> (u64, u64) {
        /// A window this small (well under a microsecond) is not improved on.
        const TIGHT_TICKS: u64 = 2_000;
        let mut best: Option<(u64, u64, u64)> = None;
        for _ in 0..16 {
            let before = rdtsc();
            let t = clock();
            let after = rdtsc();
            let window = after.wrapping_sub(before);
            if best.is_none_or(|(w, _, _)| window < w) {
                best = Some((window, before + window / 2, t));
            }
            if window < TIGHT_TICKS {
                break;
            }
        }
        let (_, tsc, t) = best.expect("at least one reading");
        (tsc, t)
    }

    /// The counter's rate against the monotonic clock over 4 ms, taken
    /// once. The counter is trusted only if the CPU says it is invariant
    /// (it ticks at one rate in every power state) and the kernel keeps
    /// time with it (so it is in step across cores), and the environment
    /// does not say `STAMPEDE_CLOCK=system`.
    fn calibrate() -> Option<Scale> {
        let forced_system = std::env::var_os("STAMPEDE_CLOCK").is_some_and(|v| v == "system");
        if forced_system || !invariant_tsc() || !kernel_uses_tsc() {
            return None;
        }
        let origin = Instant::now();
        let since = || origin.elapsed().as_nanos() as u64;
        let (c0, t0) = pair(since);
        let (c1, t1) = loop {
            std::hint::spin_loop();
            let (c, t) = pair(since);
            if t - t0 >= Duration::from_millis(4).as_nanos() as u64 {
                break (c, t);
            }
        };
        let ticks = c1.checked_sub(c0).filter(|&t| t > 0)?;
        let ns_per_tick_q32 =
            u64::try_from((u128::from(t1 - t0) << 32) / u128::from(ticks)).ok()?;
        if ns_per_tick_q32 == 0 {
            return None;
        }
        let anchor_ticks =
            u64::try_from((u128::from(ANCHOR_NS) << 32) / u128::from(ns_per_tick_q32)).ok()?;
        Some(Scale {
            ns_per_tick_q32,
            anchor_ticks,
        })
    }

    fn invariant_tsc() -> bool {
        use core::arch::x86_64::__cpuid;
        let max_ext = __cpuid(0x8000_0000).eax;
        // Leaf 0x8000_0007, EDX bit 8: the invariant TSC.
        max_ext >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }

    fn kernel_uses_tsc() -> bool {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim() == "tsc")
            .unwrap_or(false)
    }
}

/// A clock that moves only when told to. For tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves time forward by `delta_ms`.
    pub fn advance(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter-based read agrees with the system clock to the
    /// millisecond: read fresh (an anchor just taken), 30 ms later (time
    /// extrapolated from the counter: a rate off by even 5% would be 1.5
    /// ms out) and 70 ms later (a new anchor).
    #[test]
    fn a_stopwatch_measures_what_instant_measures() {
        let sw = Stopwatch::start();
        let at = std::time::Instant::now();
        // Until Instant says 20 ms (no sleep: the two reads stay adjacent).
        while at.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (a, b) = (at.elapsed(), sw.elapsed());
        let diff = a.abs_diff(b);
        assert!(b >= std::time::Duration::from_millis(19), "{b:?}");
        assert!(
            diff < std::time::Duration::from_millis(5),
            "{a:?} against {b:?}"
        );
    }

    #[test]
    fn system_clock_agrees_with_the_wall_clock() {
        let clock = SystemClock;
        for pause_ms in [0, 30, 70, 30, 0] {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            for _ in 0..1000 {
                let before = system_now_ns();
                let read = clock.now_ms();
                let after = system_now_ns();
                // A microsecond either side for the anchor's rounding.
                let low = (before.saturating_sub(5_000)) / 1_000_000;
                let high = (after + 5_000) / 1_000_000;
                assert!(
                    (low..=high).contains(&read),
                    "{read} outside {low}..={high} after {pause_ms} ms (source {})",
                    source()
                );
            }
        }
    }

    #[test]
    fn source_is_named() {
        assert!(["tsc", "system"].contains(&source()));
    }
}
