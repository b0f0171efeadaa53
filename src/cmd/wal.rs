//! `stampede wal inspect` and `wal verify`: the audit trail, read-only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use stampede::inspect::Filter;
use stampede::store::embedded::WAL_DIR;
use stampede::wal::DiskStorage;

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Print every record, one a line: lsn, file@offset, what changed.
    /// Read-only; safe on a stopped server's data dir.
    Inspect {
        /// The data directory (or its wal/ directory).
        dir: PathBuf,
        /// Only records that name this SKU (its stock changes and the
        /// holds created on it).
        #[arg(long)]
        sku: Option<String>,
        /// Only records of this reservation id (r_...).
        #[arg(long)]
        hold: Option<String>,
    },
    /// Check every record's CRC and sequence, and every checkpoint's CRC;
    /// exits 1 naming the first bad file and offset, 0 if all is sound.
    /// Read-only.
    Verify {
        /// The data directory (or its wal/ directory).
        dir: PathBuf,
    },
}

/// The log directory named by `dir`: the data dir's `wal/`, or `dir` itself.
pub fn wal_dir(dir: &std::path::Path) -> anyhow::Result<DiskStorage> {
    let inner = dir.join(WAL_DIR);
    let path = if inner.is_dir() {
        inner
    } else {
        dir.to_owned()
    };
    anyhow::ensure!(path.is_dir(), "{} is not a directory", path.display());
    Ok(DiskStorage::new(path)?)
}

pub fn wal_command(command: WalCommand) -> anyhow::Result<ExitCode> {
    let (dir, filter, print) = match command {
        WalCommand::Inspect { dir, sku, hold } => {
            let hold = match hold {
                Some(h) => Some(
                    h.parse::<stampede::engine::HoldId>()
                        .with_context(|| format!("--hold {h}"))?,
                ),
                None => None,
            };
            (dir, Filter { sku, hold }, true)
        }
        WalCommand::Verify { dir } => (dir, Filter::default(), false),
    };
    let storage = wal_dir(&dir)?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let out: Option<&mut dyn std::io::Write> = if print { Some(&mut stdout) } else { None };
    let found = stampede::inspect::inspect(&storage, &filter, out)?;
    drop(stdout);
    for line in found.summary() {
        stampede::log_line!("{line}");
    }
    Ok(match found.is_sound() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
