//! `cryptvol pool ...`: the region's thin pool. `pool check` verifies the metadata's
//! invariants (maps, reference counts, free list, high-water marks, leases) and
//! `--repair` rewrites the bookkeeping from the maps (`volume::check`).

use clap::Subcommand;

use super::Config;
use super::exit::CliError;
use crate::daemon::catalog;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::transfer;
use crate::volume::check::{CheckReport, Fix};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Check the pool metadata; exit 21 if it is damaged. Works while volumes are attached;
    /// --repair needs them detached
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
    // Offline, or through the region daemon when it owns the pool.
    let pool = catalog::open(&region)?;
    if repair {
        let mut report = pool.repair_pool()?;
        for (snap, holder) in stale_foreign_leases(cfg, pool.as_ref())? {
            pool.release_lease(&snap, &holder)?;
            report.fixes.push(Fix::removed_stale_lease(&snap, &holder));
        }
        cfg.print(&report, "Pool repair")?;
        verdict(&report.after, true)
    } else {
        // Leases of copies into other regions are not judged here: between a copy's
        // finish there and its release here the lease is legitimately there, and a stale
        // one harms no data (the next `snapshot delete` of its source, or --repair, drops
        // it).
        let report = pool.check_pool()?;
        cfg.print(&report, "Pool check")?;
        verdict(&report, false)
    }
}

/// Leases held by copies into other regions that are over there: the pool alone cannot
/// tell (`snapshot::transfer::stale_foreign_leases` asks the holder's region).
fn stale_foreign_leases(
    cfg: &Config,
    pool: &dyn Catalog,
) -> Result<Vec<(String, String)>, CliError> {
    let mut out = vec![];
    // Undecodable records are reported by the check itself.
    let Ok(snapshots) = pool.list_snapshots() else {
        return Ok(out);
    };
    for rec in snapshots {
        let id = rec.id.to_string();
        for holder in transfer::stale_foreign_leases(cfg, pool, &id)? {
            out.push((id.clone(), holder));
        }
    }
    Ok(out)
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
