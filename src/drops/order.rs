//! The pre-queue's order at a drop's opening: entrants sorted by
//! `HMAC-SHA256(key = seed bytes, message = customer_id)`, ascending as a
//! byte string; position 1 is first. The seed (32 random bytes) is drawn
//! when the drop is created and only its SHA-256 is shown until the
//! opening, so nobody (the operator included) can place an entrant, and
//! anyone can check every position once the seed is revealed.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The seed's length in bytes.
pub const SEED_BYTES: usize = 32;

/// An entrant's sort key: `HMAC-SHA256(seed, customer_id)`.
pub fn rank(seed: &[u8; SEED_BYTES], customer_id: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("HMAC takes a key of any length");
    mac.update(customer_id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The commitment shown before the opening: SHA-256 of the seed bytes.
pub fn commitment(seed: &[u8; SEED_BYTES]) -> [u8; 32] {
    Sha256::digest(seed).into()
}

/// The pre-queue in position order (position = index + 1), each entrant
/// with its rank. Entrants are distinct (one entry per customer); the
/// order does not depend on the order they are given in.
pub fn order<'a>(seed: &[u8; SEED_BYTES], entrants: &[&'a str]) -> Vec<(&'a str, [u8; 32])> {
    let mut ranked: Vec<(&'a str, [u8; 32])> =
        entrants.iter().map(|&c| (c, rank(seed, c))).collect();
    // Two customers with one rank would need a SHA-256 collision; the name
    // breaks the tie anyway, so the order is total.
    ranked.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    ranked
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Bytes from hex text (either case); `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// A seed from its hex text (64 hex digits, either case).
pub fn parse_seed(text: &str) -> Result<[u8; SEED_BYTES], String> {
    let text = text.trim();
    if text.len() != 2 * SEED_BYTES {
        return Err(format!(
            "a seed is {} hex digits, got {}",
            2 * SEED_BYTES,
            text.len()
        ));
    }
    let bytes = unhex(text).ok_or_else(|| "not a hex digit in the seed".to_owned())?;
    let mut seed = [0u8; SEED_BYTES];
    seed.copy_from_slice(&bytes);
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hmac_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // And rank() is that construction with the seed as the key.
        let seed = [7u8; SEED_BYTES];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&seed).unwrap();
        mac.update(b"c-42");
        assert_eq!(
            rank(&seed, "c-42"),
            <[u8; 32]>::from(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn the_commitment_is_sha256_of_the_seed_bytes() {
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            hex(&commitment(&[0u8; SEED_BYTES])),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn seeds_parse_from_hex_and_bad_text_is_named() {
        let text = "00ff".repeat(16);
        let seed = parse_seed(&text).unwrap();
        assert_eq!((seed[0], seed[1]), (0x00, 0xff));
        assert_eq!(hex(&seed), text);
        assert!(parse_seed("abc").unwrap_err().contains("64 hex digits"));
        assert!(parse_seed(&"zz".repeat(32))
            .unwrap_err()
            .contains("not a hex digit"));
    }

    proptest! {
        #[test]
        fn the_order_is_a_permutation_sorted_by_rank_whatever_the_join_order(
            seed in proptest::array::uniform32(any::<u8>()),
            names in proptest::collection::hash_set("[a-z0-9]{1,12}", 0..200),
            rotate in 0usize..200,
        ) {
            let entrants: Vec<&str> = names.iter().map(String::as_str).collect();
            let ordered = order(&seed, &entrants);
            // A permutation of the entrants.
            let mut got: Vec<&str> = ordered.iter().map(|(c, _)| *c).collect();
            got.sort_unstable();
            let mut want = entrants.clone();
            want.sort_unstable();
            prop_assert_eq!(got, want);
            // Ascending by the HMAC of each name under the seed.
            for pair in ordered.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].1);
            }
            for (c, r) in &ordered {
                prop_assert_eq!(*r, rank(&seed, c));
            }
            // The same whatever order they joined in.
            let mut joined = entrants.clone();
            if !joined.is_empty() {
                let k = rotate % joined.len();
                joined.rotate_left(k);
                joined.reverse();
            }
            let again: Vec<&str> = order(&seed, &joined).iter().map(|(c, _)| *c).collect();
            let first: Vec<&str> = ordered.iter().map(|(c, _)| *c).collect();
            prop_assert_eq!(again, first);
        }
    }
}
