//! What settling a gateway event did (contract v1.2, "Payments", the
//! outcome table), as the webhook answers it and as both stores record it
//! to answer a repeat of the event with the first outcome.

/// One row of the outcome table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Succeeded on an active hold: confirmed.
    Confirmed,
    /// Succeeded on a confirmed hold: nothing changed.
    Duplicate,
    /// Succeeded on an ended hold whose units were all free: taken again
    /// and confirmed.
    ConfirmedLate,
    /// Succeeded on an ended hold whose units were not all free: nothing
    /// taken, `payment.orphaned` told (the storefront refunds).
    Orphaned,
    /// Failed: the hold stays as it is; `payment.failed` told.
    Noted,
    /// Canceled: released, stock back.
    Released,
    /// No hold found: `payment.unmatched` told.
    Unmatched,
    /// A type that says nothing of a payment's end.
    Ignored,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Confirmed,
        Outcome::Duplicate,
        Outcome::ConfirmedLate,
        Outcome::Orphaned,
        Outcome::Noted,
        Outcome::Released,
        Outcome::Unmatched,
        Outcome::Ignored,
    ];

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Duplicate => "duplicate",
            Outcome::ConfirmedLate => "confirmed_late",
            Outcome::Orphaned => "orphaned",
            Outcome::Noted => "noted",
            Outcome::Released => "released",
            Outcome::Unmatched => "unmatched",
            Outcome::Ignored => "ignored",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Its number in a log record or a checkpoint (its place in `ALL`).
    pub fn code(self) -> u8 {
        Outcome::ALL
            .iter()
            .position(|&o| o == self)
            .map_or(u8::MAX, |p| p as u8)
    }

    pub fn from_code(code: u8) -> Option<Outcome> {
        Outcome::ALL.get(usize::from(code)).copied()
    }

    /// Its position in `ALL` (a metric's series).
    pub fn index(self) -> usize {
        usize::from(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_round_trips_by_name_and_code() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(Outcome::from_code(o.code()), Some(o));
        }
        assert_eq!(Outcome::from_code(8), None);
        assert_eq!(Outcome::parse("settled"), None);
    }
}
