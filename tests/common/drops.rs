//! Drops: the contract's order recomputed here on its own, and the wall
//! clock a drop's schedule runs on.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits for the wall clock (the server's clock too) to pass `at_ms`: the
/// drop's schedule is in wall time, so this is the event awaited.
pub fn wait_until(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        std::thread::sleep(std::time::Duration::from_millis(at_ms - now));
    }
}

/// The contract's order, computed here: HMAC-SHA256(seed, customer_id)
/// ascending, position 1 first.
pub fn positions(seed: &[u8], entrants: &[String]) -> Vec<String> {
    let mut ranked: Vec<([u8; 32], String)> = entrants
        .iter()
        .map(|c| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).unwrap();
            mac.update(c.as_bytes());
            (mac.finalize().into_bytes().into(), c.clone())
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, c)| c).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
