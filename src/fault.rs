//! Faults injected by tests, never reachable from input: built only with
//! the `fault-injection` feature (off in every shipped build), and then
//! armed only by the environment of the process under test.
//!
//! `STAMPEDE_FAULT_PANIC=NAME[,NAME...]` panics the background work named
//! the first time it runs: `sweeper`, `checkpointer`, `log-writer`,
//! `event-mover`, `webhook-sender`.

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
