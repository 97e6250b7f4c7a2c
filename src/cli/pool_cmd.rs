//! `cryptvol pool ...`: the region's thin pool. `pool check` verifies the metadata's
//! invariants (maps, reference counts, free list, high-water marks, leases) and
//! `--repair` rewrites the bookkeeping from the maps (`volume::check`).

use std::time::{Duration, Instant};

use clap::Subcommand;

use super::Config;
use super::exit::CliError;
use crate::fuse::control::Client;
use crate::kms::region::RegionDir;
use crate::snapshot::SnapshotOwners;
use crate::volume::check::CheckReport;
use crate::volume::{Pool, VolumeError};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Check the pool metadata; exit 21 if it is damaged. Offline: detach volumes first
    Check {
        /// Also fix what can be fixed: counts and free list recomputed from the maps,
        /// maps of owners that do not exist and stale leases removed
        #[arg(long)]
        repair: bool,
    },
}

pub fn run(cfg: &Config, cmd: PoolCommand) -> Result<(), CliError> {
    let region = cfg.region_dir();
    region.config()?;
    let PoolCommand::Check { repair } = cmd;
    let pool = open_offline(&region)?;
    if repair {
        let report = pool.repair(&SnapshotOwners)?;
        cfg.print(&report, "Pool repair")?;
        verdict(&report.after, true)
    } else {
        let report = pool.check(&SnapshotOwners)?;
        cfg.print(&report, "Pool check")?;
        verdict(&report, false)
    }
}

/// The pool, opened by this process. The daemon owns it while volumes are attached
/// (checking through the daemon is not wired yet); one that is starting or stopping
/// holds it for a moment, so retry for a few seconds, as `PoolAccess::open` does.
fn open_offline(region: &RegionDir) -> Result<Pool, CliError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Client::connect(region).is_some() {
            return Err(CliError::Busy(
                "the region daemon owns the pool (volumes are attached): detach them first".into(),
            ));
        }
        match Pool::open(region) {
            Ok(p) => return Ok(p),
            Err(VolumeError::PoolBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Exit 0 when clean, else exit 21 with one line: how many problems, the first one, and
/// what to do.
fn verdict(r: &CheckReport, repaired: bool) -> Result<(), CliError> {
    let Some(first) = r.problems.first() else {
        return Ok(());
    };
    let n = r.problems.len();
    let fixable = r.repairable();
    let what = if n == 1 { "problem" } else { "problems" };
    let hint = if repaired {
        "repair leaves these as they are (see NotRepaired in the report)".to_string()
    } else if fixable == n {
        "`cryptvol pool check --repair` fixes them".to_string()
    } else {
        format!("`cryptvol pool check --repair` fixes {fixable} of them")
    };
    Err(CliError::PoolDamaged(format!(
        "the pool is {}damaged: {n} {what}, first {first}; {hint}",
        if repaired { "still " } else { "" }
    )))
}
