//! Faults injected by tests, never reachable from input: built only with
//! the `fault-injection` feature (off in every shipped build), and then
//! armed only by the environment of the process under test.
//!
//! `STAMPEDE_FAULT_PANIC=NAME[,NAME...]` panics the background work named
//! the first time it runs: `sweeper`, `checkpointer`, `log-writer`,
//! `event-mover`, `webhook-sender`.
//!
//! `STAMPEDE_FAULT_DIE=NAME[,NAME...]` stops the process at once at the
//! step named, as a kill -9 there would: `after-reserve-script` (the
//! redis store on a cluster, between a reservation's script and the
//! lowering of its slot's due time to the hold's expiry).

/// Panics here if the environment arms `name` (`fault-injection` builds
/// only; elsewhere nothing).
#[inline]
pub fn inject(name: &str) {
    #[cfg(feature = "fault-injection")]
    {
        let armed = std::env::var("STAMPEDE_FAULT_PANIC").unwrap_or_default();
        if armed.split(',').any(|n| n.trim() == name) {
            panic!(
                "fault injected into the {} (STAMPEDE_FAULT_PANIC)",
                name.replace('-', " ")
            );
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// Stops the process at once here (no unwinding, no flush: as a kill -9
/// would) if the environment arms `name` (`fault-injection` builds only;
/// elsewhere nothing).
#[inline]
pub fn die(name: &str) {
    #[cfg(feature = "fault-injection")]
    {
        let armed = std::env::var("STAMPEDE_FAULT_DIE").unwrap_or_default();
        if armed.split(',').any(|n| n.trim() == name) {
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
