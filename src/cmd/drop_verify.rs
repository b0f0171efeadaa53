//! `stampede drop verify`: every pre-queue position recomputed from a
//! drop's revealed seed and its entrants, as the server computes them.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DropCommand {
    /// Recompute every pre-queue position of a drop from its seed (shown
    /// from the opening on) and the list of entrants, as the server does:
    /// sorted by HMAC-SHA256(seed, customer_id). Prints `position
    /// customer_id` lines, 1 first; with --seed-sha256, first checks the
    /// seed against the commitment shown before the opening.
    Verify {
        /// The drop's `seed`: 64 hex digits.
        #[arg(long, value_name = "HEX")]
        seed: String,
        /// The entrants of the pre-queue, one customer_id a line (blank
        /// lines skipped; each customer once).
        #[arg(long, value_name = "FILE")]
        entrants: PathBuf,
        /// The drop's `seed_sha256` from before the opening, to check the
        /// seed against.
        #[arg(long, value_name = "HEX")]
        seed_sha256: Option<String>,
    },
}

/// Most entrants `drop verify` reads.
pub const DROP_ENTRANTS_MAX: usize = 50_000_000;

pub fn drop_verify(
    seed: &str,
    entrants: &std::path::Path,
    commitment: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use stampede::drops::order;
    let seed = order::parse_seed(seed).map_err(|e| anyhow::anyhow!("--seed: {e}"))?;
    if let Some(want) = commitment {
        let got = order::hex(&order::commitment(&seed));
        anyhow::ensure!(
            got.eq_ignore_ascii_case(want.trim()),
            "--seed-sha256: the seed's SHA-256 is {got}, not {}: this is not the seed that was committed to",
            want.trim()
        );
        stampede::log_line!("drop verify: the seed matches its commitment {got}");
    }
    let text = std::fs::read_to_string(entrants)
        .with_context(|| format!("--entrants {}", entrants.display()))?;
    let mut names: Vec<&str> = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        anyhow::ensure!(
            stampede::engine::is_valid_ident(name),
            "{} line {}: {name:?} is not a customer_id (1 to 128 bytes of [A-Za-z0-9._:-])",
            entrants.display(),
            n + 1
        );
        if let Some(first) = seen.insert(name, n + 1) {
            anyhow::bail!(
                "{} line {}: {name} is already on line {first}; a drop has one entry per customer",
                entrants.display(),
                n + 1
            );
        }
        anyhow::ensure!(
            names.len() < DROP_ENTRANTS_MAX,
            "{}: more than {DROP_ENTRANTS_MAX} entrants",
            entrants.display()
        );
        names.push(name);
    }
    let ordered = order::order(&seed, &names);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, (name, _)) in ordered.iter().enumerate() {
        writeln!(out, "{}\t{name}", i + 1)?;
    }
    out.flush()?;
    stampede::log_line!("drop verify: {} entrants in position order", ordered.len());
    Ok(ExitCode::SUCCESS)
}
