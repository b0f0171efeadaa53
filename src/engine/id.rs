//! Identifiers: hold ids and the contract's identifier syntax.
//!
//! A [`HoldId`] names the shard that stores the hold (its *home*), the slot
//! in that shard's hold table and the slot's generation, so a lookup goes
//! straight to one shard and one slot without a global index. The `epoch`
//! is a number the data directory hands out once per start, which makes ids
//! unique for the life of the data directory, restarts included: within one
//! epoch `(shard, slot, generation)` never repeats, because a slot's
//! generation goes up each time the slot is reused and a slot whose
//! generation would wrap is never reused.

use std::fmt;
use std::str::FromStr;

/// Longest identifier the contract allows (`sku`, `customer_id`, `order_ref`).
pub const IDENT_LEN_MAX: usize = 128;

/// Which bytes an identifier may hold: `[A-Za-z0-9._:-]`. A table, since
/// every reservation checks two identifiers byte by byte.
const IDENT_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    table
};

/// True if `s` is 1 to 128 bytes of `[A-Za-z0-9._:-]`.
pub fn is_valid_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= IDENT_LEN_MAX && s.bytes().all(|b| IDENT_BYTE[usize::from(b)])
}

/// The id of a reservation (a hold on one or more SKUs).
///
/// Printed as `r_` and 28 lowercase hex digits: epoch (8), shard (4),
/// slot (8), generation (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId {
    pub(crate) epoch: u32,
    pub(crate) shard: u16,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

const ID_PREFIX: &str = "r_";
const ID_LEN: usize = ID_PREFIX.len() + 28;

impl HoldId {
    /// An id made of its parts (a store other than the engine numbers its
    /// holds this way: the redis store's node start, then a counter).
    pub fn from_parts(epoch: u32, shard: u16, slot: u32, generation: u32) -> HoldId {
        HoldId {
            epoch,
            shard,
            slot,
            generation,
        }
    }

    /// The shard that stores this hold.
    pub fn shard(&self) -> usize {
        usize::from(self.shard)
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

impl HoldId {
    /// The id's text (`r_` and 28 lowercase hex digits), written without
    /// the formatting machinery: every answer carries one, and `write!`
    /// with four `{:08x}` showed in the batch path's profile.
    pub fn text(&self) -> HoldIdText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; ID_LEN];
        buf[..2].copy_from_slice(ID_PREFIX.as_bytes());
        let mut at = 2;
        let mut put = |value: u32, digits: usize| {
            for i in (0..digits).rev() {
                buf[at] = HEX[((value >> (4 * i)) & 0xf) as usize];
                at += 1;
            }
        };
        put(self.epoch, 8);
        put(u32::from(self.shard), 4);
        put(self.slot, 8);
        put(self.generation, 8);
        HoldIdText(buf)
    }
}

/// A hold id's text, on the stack.
#[derive(Clone, Copy)]
pub struct HoldIdText([u8; ID_LEN]);

impl HoldIdText {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII hex digits and a prefix")
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// The text was not a hold id this engine could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a reservation id (expected `r_` and 28 lowercase hex digits)")]
pub struct ParseHoldIdError;

impl FromStr for HoldId {
    type Err = ParseHoldIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(ID_PREFIX).ok_or(ParseHoldIdError)?;
        if s.len() != ID_LEN
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseHoldIdError);
        }
        // Every byte is an ASCII hex digit, so the slices are on char
        // boundaries and from_str_radix cannot fail.
        let field = |range: std::ops::Range<usize>| {
            u32::from_str_radix(&hex[range], 16).map_err(|_| ParseHoldIdError)
        };
        Ok(HoldId {
            epoch: field(0..8)?,
            shard: u16::from_str_radix(&hex[8..12], 16).map_err(|_| ParseHoldIdError)?,
            slot: field(12..20)?,
            generation: field(20..28)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written hex is what `{:08x}{:04x}{:08x}{:08x}` prints.
    #[test]
    fn id_text_is_the_formatted_hex() {
        for (epoch, shard, slot, generation) in [
            (0, 0, 0, 0),
            (7, 3, 0xdead_beef, 1),
            (u32::MAX, u16::MAX, u32::MAX, u32::MAX),
            (0x0123_4567, 0x89ab, 0xcdef_0123, 0x4567_89ab),
        ] {
            let id = HoldId {
                epoch,
                shard,
                slot,
                generation,
            };
            assert_eq!(
                id.text().as_str(),
                format!("r_{epoch:08x}{shard:04x}{slot:08x}{generation:08x}")
            );
        }
    }

    #[test]
    fn id_round_trips_through_text() {
        let id = HoldId {
            epoch: 7,
            shard: 4095,
            slot: 123_456,
            generation: u32::MAX,
        };
        let text = id.to_string();
        assert_eq!(text, "r_000000070fff0001e240ffffffff");
        assert!(text.len() <= 64);
        assert_eq!(text.parse::<HoldId>(), Ok(id));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "r_",
            "x_000000070fff0001e240ffffffff",
            "r_000000070FFF0001e240ffffffff",
            "r_000000070fff0001e240fffffff",
            "r_000000070fff0001e240fffffffff",
            "r_000000070fff0001e240fffffffg",
            "r_+00000070fff0001e240ffffffff",
        ] {
            assert_eq!(bad.parse::<HoldId>(), Err(ParseHoldIdError), "{bad:?}");
        }
    }

    #[test]
    fn identifier_syntax_follows_the_contract() {
        assert!(is_valid_ident("hot-1"));
        assert!(is_valid_ident("A.b_c:d-9"));
        assert!(is_valid_ident(&"x".repeat(128)));
        assert!(!is_valid_ident(""));
        assert!(!is_valid_ident(&"x".repeat(129)));
        assert!(!is_valid_ident("a b"));
        assert!(!is_valid_ident("a/b"));
        assert!(!is_valid_ident("é"));
    }
}
