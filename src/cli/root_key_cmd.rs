//! `cryptvol region rotate-root-key`: a fresh root key for the region (kms::root_rotation).

use std::path::PathBuf;

use serde::Serialize;

use super::Config;
use super::args::passphrase_from_file;
use super::exit::CliError;
use crate::datadir::NewRoot;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The new root is sealed by this PKCS#11 token object (made if missing)
    #[arg(long, value_name = "URI", conflicts_with_all = ["new_passphrase_file", "key_file"])]
    root_key: Option<String>,
    /// The new root is derived from the passphrase in FILE
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    new_passphrase_file: Option<PathBuf>,
    /// The new root is a random key in root.key
    #[arg(long)]
    key_file: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RotateResult {
    region: String,
    old_root_key: String,
    new_root_key: String,
    old_root_material: String,
    keys_resealed: usize,
}

pub fn run(cfg: &Config, args: RotateArgs) -> Result<(), CliError> {
    // Read before anything changes: a missing file changes nothing.
    let kind = match (args.root_key, args.new_passphrase_file, args.key_file) {
        (Some(uri), _, _) => Some(NewRoot::Pkcs11(uri)),
        (None, Some(f), _) => Some(NewRoot::Passphrase(passphrase_from_file(&f)?)),
        (None, None, true) => Some(NewRoot::File),
        (None, None, false) => None,
    };
    let dir = cfg.region_dir();
    let mut ask = || cfg.passphrase.get();
    let out = crate::kms::root_rotation::rotate(&dir, &mut ask, kind, cfg.clock.now_nanos())?;
    cfg.print(
        &RotateResult {
            region: cfg.region.to_string(),
            old_root_key: out.old_source,
            new_root_key: out.new_source,
            old_root_material: out.old_root,
            keys_resealed: out.keys_resealed,
        },
        "RootKeyRotation",
    )
}
