//! `cryptvol volume ...`: create, list, describe, resize and delete encrypted volumes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use super::Config;
use super::args::read_file;
use super::exit::CliError;
use crate::crypto::SecretBytes;
use crate::daemon::catalog;
use crate::daemon::client::Client;
use crate::daemon::rpc::DaemonStatus;
use crate::kms::{KeyBackend, KeyRef, blob};
use crate::snapshot::{self, catalog::Catalog};
use crate::volume::error::ErrorKind;
use crate::volume::header::DEFAULT_CHUNK_SHIFT;
use crate::volume::ids::{format_size, parse_size};
use crate::volume::lifecycle::{self, DEFAULT_KMS_KEY, KeyChoice, NewVolume};
use crate::volume::{KeySource, VolumeError, VolumeHeader};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create an encrypted volume (thin: it takes pool space only as it is written)
    Create {
        /// Size, e.g. 10G, 512M, 1T [default with --from-snapshot: the snapshot's]
        #[arg(long, required_unless_present = "from_snapshot")]
        size: Option<String>,
        /// Restore: a new copy-on-write volume with the snapshot's data, instantly
        #[arg(long, value_name = "SNAP", conflicts_with = "chunk_size")]
        from_snapshot: Option<String>,
        /// A name to use instead of the vol- id
        #[arg(long)]
        name: Option<String>,
        /// KMS key for the data key [default: alias/aws/ebs, created on first use]
        #[arg(long, value_name = "KEY", conflicts_with = "customer_key_file")]
        kms_key: Option<String>,
        /// A 32- or 64-byte key of your own instead of the KMS; needed at every attach
        #[arg(long, value_name = "FILE")]
        customer_key_file: Option<PathBuf>,
        /// With --from-snapshot and --kms-key: copy at most this many bytes per second
        #[arg(long, value_name = "RATE", requires = "kms_key")]
        max_bandwidth: Option<String>,
        /// Allocation unit of the thin pool, a power of two from 64K to 64M [default: 1M]
        #[arg(long)]
        chunk_size: Option<String>,
        /// Authenticate every 4 KiB block: a changed, moved, replayed or zeroed block reads
        /// as an I/O error, and a pool rolled back is refused at attach (a restore keeps its
        /// snapshot's setting)
        #[arg(long, conflicts_with = "from_snapshot")]
        integrity: bool,
        /// With --from-snapshot: the store to restore from when the snapshot is not here
        #[command(flatten)]
        store: super::archive_cmd::StoreArgs,
    },
    /// List the region's volumes
    List,
    /// Size, allocation, key and state of a volume
    Describe { volume: String },
    /// Check every block of an authenticated volume (--integrity) and its root; exit 25 and
    /// one line per bad block if any fails
    Verify {
        volume: String,
        /// The volume's customer-provided key
        #[arg(long, value_name = "FILE")]
        customer_key_file: Option<PathBuf>,
    },
    /// Fetch every chunk of a lazily restored volume from the snapshot store now
    Hydrate { volume: String },
    /// Grow a volume
    Resize {
        volume: String,
        #[arg(long)]
        size: String,
    },
    /// Delete a volume and free the pool space only it used
    Delete {
        volume: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

/// "1 block fails its check", "3 blocks fail their check".
fn blocks_fail(n: usize) -> String {
    if n == 1 {
        "1 block fails its check".into()
    } else {
        format!("{n} blocks fail their check")
    }
}

/// What `volume verify` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyOutput {
    volume_id: String,
    blocks_checked: u64,
    bad_blocks: Vec<u64>,
    root_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_problem: Option<String>,
}

/// What `describe` and `list` show, in the EBS DescribeVolumes spirit.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInfo {
    pub volume_id: String,
    pub name: String,
    pub region: String,
    pub size_bytes: u64,
    pub size: String,
    pub allocated_bytes: u64,
    /// Bytes still in the snapshot store (a lazy restore not yet fully read).
    pub remote_bytes: u64,
    pub chunk_size: u64,
    pub encrypted: bool,
    pub key_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_version: Option<u32>,
    /// The data key is checked at every unwrap (a customer key, or a KMS key whose header
    /// has a key check); false for KMS volumes made before key checks.
    pub key_check: bool,
    /// Every block is authenticated (`--integrity`).
    pub integrity: bool,
    /// Blocks of an authenticated volume that failed their check when read.
    pub integrity_errors: u64,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_at: Option<String>,
    pub create_time: i64,
}

pub fn info(access: &dyn Catalog, h: &VolumeHeader) -> Result<VolumeInfo, CliError> {
    let at = access.attached_at(&h.id)?.map(|d| d.display().to_string());
    let (key_source, arn, version) = match &h.key {
        KeySource::Kms {
            key_arn, wrapped, ..
        } => (
            "kms",
            Some(key_arn.clone()),
            blob::parse(wrapped).ok().map(|p| p.header.key_version),
        ),
        KeySource::Customer { .. } => ("customer-provided", None, None),
    };
    Ok(VolumeInfo {
        volume_id: h.id.to_string(),
        name: h.name.clone(),
        region: h.region.to_string(),
        size_bytes: h.size,
        size: format_size(h.size),
        allocated_bytes: access.allocated_bytes(&h.id)?,
        remote_bytes: access.remote_bytes(&h.id)?,
        chunk_size: h.chunk_size(),
        encrypted: true,
        key_source,
        kms_key_id: arn,
        kms_key_version: version,
        key_check: crate::volume::key_check::has_check(h),
        integrity: h.integrity,
        integrity_errors: if h.integrity {
            access.integrity_errors(&h.id)?
        } else {
            0
        },
        state: if at.is_some() { "in-use" } else { "available" },
        attached_at: at,
        create_time: h.created,
    })
}

/// Reads a customer key file (32 or 64 raw bytes).
pub fn customer_key(path: &std::path::Path) -> Result<SecretBytes, CliError> {
    let k = SecretBytes::new(read_file(path)?);
    crate::volume::keys::check_customer_key(&k)?;
    Ok(k)
}

fn chunk_shift(s: &str) -> Result<u8, CliError> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() {
        return Err(
            VolumeError::invalid("chunk size", format!("{s} is not a power of two")).into(),
        );
    }
    Ok(n.trailing_zeros() as u8)
}

fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::bad(
            "--yes",
            "not on a terminal: pass --yes to confirm",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

pub fn run(cfg: &Config, cmd: VolumeCommand) -> Result<(), CliError> {
    let region = cfg.region_dir();
    region.config()?;
    match cmd {
        VolumeCommand::Create {
            from_snapshot: Some(snap),
            size,
            name,
            kms_key,
            customer_key_file,
            max_bandwidth,
            store,
            ..
        } => {
            let size = size.as_deref().map(parse_size).transpose()?;
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            // Opened once here and handed on to a lazy restore (each opening of the pool
            // costs syncs).
            let pool = if super::archive_cmd::has_pool(cfg) {
                Some(catalog::open(&region)?)
            } else {
                None
            };
            let here = match &pool {
                Some(p) => p.get_snapshot(&snap)?.is_some(),
                None => false,
            };
            if !here && kms_key.is_none() && store.resolve(cfg)?.is_some() {
                // Not in this pool: restored lazily from the snapshot store.
                let ck = customer_key_file.as_deref().map(customer_key).transpose()?;
                let name = name.as_deref().unwrap_or("");
                let (h, access) = super::archive_cmd::restore_from_store(
                    cfg,
                    &store,
                    &snap,
                    name,
                    size,
                    ck.as_ref(),
                    pool,
                )?;
                return cfg.print(&info(access.as_ref(), &h)?, "Volume");
            }
            drop(pool);
            let rec = catalog::open(&region)?.snapshot(&snap, cfg.region.as_str())?;
            let name = name.as_deref().unwrap_or("");
            let h = match kms_key {
                // Another key: a new data key and every chunk re-encrypted.
                Some(k) => {
                    let ck = customer_key_file.as_deref().map(customer_key).transpose()?;
                    snapshot::transfer::restore_rekeyed(
                        cfg,
                        &rec,
                        name,
                        size,
                        &k,
                        ck.as_ref(),
                        max_bandwidth,
                    )?
                }
                // Same key: share the snapshot's slots, instantly.
                None => {
                    let h = rec.restored_header(name, size, cfg.clock.now())?;
                    catalog::open(&region)?.refuse_taken_name(&h.name)?;
                    let kms = match h.key {
                        KeySource::Kms { .. } => Some(cfg.volume_kms_for(&h)?),
                        KeySource::Customer { .. } => None,
                    };
                    let kms = kms.as_ref().map(|k| k as &dyn KeyBackend);
                    lifecycle::with_volume_grant::<CliError, _>(&h, kms, || {
                        catalog::open(&region)?.restore_volume(rec.id.as_str(), &h)?;
                        Ok(())
                    })?;
                    h
                }
            };
            let access = catalog::open(&region)?;
            cfg.print(&info(access.as_ref(), &h)?, "Volume")
        }
        VolumeCommand::Create {
            size,
            name,
            kms_key,
            customer_key_file,
            chunk_size,
            integrity,
            ..
        } => {
            let size = size.expect("clap requires --size without --from-snapshot");
            let chunk_size = chunk_size.unwrap_or_else(|| "1M".into());
            if cfg.kms_endpoint.is_some() && kms_key.is_none() && customer_key_file.is_none() {
                // A remote alias/aws/ebs serves only that KMS's own volume service.
                return Err(CliError::bad(
                    "--kms-key",
                    "with --kms-endpoint, name the remote key the volume's data key is made under",
                ));
            }
            let key = match &customer_key_file {
                Some(f) => KeyChoice::Customer(customer_key(f)?),
                None => KeyChoice::Kms(KeyRef::parse(
                    kms_key.as_deref().unwrap_or(DEFAULT_KMS_KEY),
                )?),
            };
            let kms = match key {
                KeyChoice::Kms(_) => Some(cfg.volume_kms()?),
                KeyChoice::Customer(_) => None,
            };
            let spec = NewVolume {
                size: parse_size(&size)?,
                name: name.unwrap_or_default(),
                chunk_shift: if chunk_size == "1M" {
                    DEFAULT_CHUNK_SHIFT
                } else {
                    chunk_shift(&chunk_size)?
                },
                key,
                integrity,
            };
            let access = catalog::open(&region)?;
            access.refuse_taken_name(&spec.name)?;
            let h = lifecycle::new_header(
                &cfg.region,
                kms.as_ref().map(|k| k as &dyn KeyBackend),
                spec,
                cfg.clock.now(),
            )?;
            let kms = kms.as_ref().map(|k| k as &dyn KeyBackend);
            lifecycle::with_volume_grant(&h, kms, || access.create_volume(&h))?;
            cfg.print(&info(access.as_ref(), &h)?, "Volume")
        }
        VolumeCommand::List => {
            let access = catalog::open(&region)?;
            let mut hs = access.list_volumes()?;
            hs.sort_by_key(|h| h.created);
            // A volume deleted by another command after the listing is left out, not an
            // error of the whole list.
            let infos = hs
                .iter()
                .filter_map(|h| match info(access.as_ref(), h) {
                    Err(CliError::Volume(e)) if e.kind() == ErrorKind::NotFound => None,
                    other => Some(other),
                })
                .collect::<Result<Vec<_>, _>>()?;
            cfg.print(&serde_json::json!({ "Volumes": infos }), "Volumes")
        }
        VolumeCommand::Describe { volume } => {
            let access = catalog::open(&region)?;
            let h = access.find(&volume, cfg.region.as_str())?;
            cfg.print(&info(access.as_ref(), &h)?, "Volume")
        }
        VolumeCommand::Resize { volume, size } => {
            let access = catalog::open(&region)?;
            let h = access.find(&volume, cfg.region.as_str())?;
            let h = access.resize_volume(&h.id, parse_size(&size)?)?;
            cfg.print(&info(access.as_ref(), &h)?, "Volume")
        }
        VolumeCommand::Verify {
            volume,
            customer_key_file,
        } => {
            let (h, dk) =
                super::attach_cmd::unwrap_key(cfg, &volume, customer_key_file.as_deref())?;
            let access = catalog::open(&region)?;
            let r = access.verify_volume(&h.id, &dk)?;
            drop(dk);
            let out = VerifyOutput {
                volume_id: h.id.to_string(),
                blocks_checked: r.blocks_checked,
                bad_blocks: r.bad_blocks.clone(),
                root_ok: r.root_ok,
                root_problem: r.root_problem.clone(),
            };
            cfg.print(&out, "Verify")?;
            for b in &r.bad_blocks {
                eprintln!(
                    "cryptvol: volume {}: block {b} (bytes {}..{}) fails its integrity check",
                    h.id,
                    b * crate::volume::BLOCK_SIZE,
                    (b + 1) * crate::volume::BLOCK_SIZE
                );
            }
            if r.bad_blocks.is_empty() && r.root_ok {
                return Ok(());
            }
            Err(VolumeError::Tampered {
                volume: h.id.to_string(),
                detail: match (&r.root_problem, r.bad_blocks.len()) {
                    (Some(p), 0) => p.clone(),
                    (Some(p), n) => format!("{p}; and {}", blocks_fail(n)),
                    (None, n) => blocks_fail(n),
                },
            }
            .into())
        }
        VolumeCommand::Hydrate { volume } => {
            let access = catalog::open(&region)?;
            let h = access.find(&volume, cfg.region.as_str())?;
            let fetched = access.hydrate_volume(&h.id, &|_| true)?;
            // Everything is local now: the store's objects may go with their snapshots.
            if access.remote_bytes(&h.id)? == 0 {
                super::archive_cmd::release_hold(cfg, access.as_ref(), h.id.as_str())?;
            }
            let mut out =
                serde_json::to_value(info(access.as_ref(), &h)?).expect("info serializes");
            out["BytesFetched"] = fetched.into();
            cfg.print(&out, "Volume")
        }
        VolumeCommand::Delete { volume, yes } => {
            let access = catalog::open(&region)?;
            let h = access.find(&volume, cfg.region.as_str())?;
            if let Some(at) = access.attached_at(&h.id)? {
                return Err(VolumeError::Attached {
                    id: h.id.to_string(),
                    at: at.display().to_string(),
                    hint: "detach (or unmount) it before deleting".into(),
                }
                .into());
            }
            if !yes
                && !confirm(&format!(
                    "Delete volume {} ({}) and all its data?",
                    h.id,
                    format_size(h.size)
                ))?
            {
                return Err(CliError::bad(
                    "confirmation",
                    "not confirmed; nothing was deleted",
                ));
            }
            access.delete_volume(&h.id)?;
            retire_volume_grant(cfg, &h);
            super::archive_cmd::release_hold(cfg, access.as_ref(), h.id.as_str())?;
            cfg.print(
                &serde_json::json!({ "VolumeId": h.id.to_string(), "Deleted": true }),
                "Volume",
            )
        }
    }
}

/// After a delete: retires the volume service's grant. The volume is already gone, so a
/// failure is a warning that says how to retire the grant by hand.
fn retire_volume_grant(cfg: &Config, h: &VolumeHeader) {
    let KeySource::Kms { key_arn, .. } = &h.key else {
        return;
    };
    let out = cfg
        .volume_kms_for(h)
        .and_then(|kms| Ok(lifecycle::retire_volume_service_grant(h, Some(&kms))?));
    if let Err(e) = out {
        eprintln!(
            "cryptvol: warning: volume {} is deleted but its grant on {key_arn} was not retired ({e}): find it with `cryptvol kms list-grants --key-id {key_arn}` and run `cryptvol kms revoke-grant`",
            h.id
        );
    }
}

/// The running daemon's status, if any.
pub fn daemon_status(cfg: &Config) -> Option<DaemonStatus> {
    Client::connect(&cfg.region_dir())?.status().ok()
}
