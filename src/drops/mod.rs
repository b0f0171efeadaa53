//! Drops (contract, "Drops: a fair opening"). So far: the order of the
//! pre-queue, which anyone can recompute from the revealed seed and the
//! list of entrants (`order`), and `stampede drop verify` on top of it.
//! The drop routes, entries, admission pacing and their log records are
//! still to come (issue 16).

pub mod order;
