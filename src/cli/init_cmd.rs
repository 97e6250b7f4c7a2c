//! `cryptvol init`: make the data dir and a region, or check an existing one.

use serde::Serialize;

use super::Config;
use super::args::passphrase_from_file;
use super::exit::CliError;
use crate::datadir::NewRoot;
use crate::snapshot::store::StoreConfig;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InitResult {
    region: String,
    account_id: String,
    data_dir: String,
    root_key: String,
    created: bool,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Archive the region's snapshots into this S3-compatible store: s3://BUCKET/PREFIX
    #[arg(long, value_name = "URL")]
    snapshot_store: Option<String>,
    /// The store's S3-compatible endpoint (http://HOST:PORT) [default: AWS S3]
    #[arg(long, value_name = "URL", requires = "snapshot_store")]
    s3_endpoint: Option<String>,
    /// The store's region, for signing [default: us-east-1]
    #[arg(long, value_name = "REGION", requires = "snapshot_store")]
    s3_region: Option<String>,
    /// Seal the root key with an AES key in a PKCS#11 token (made if missing):
    /// pkcs11:token=T;object=O?module-path=/path/lib.so&pin-source=file:/path/pin
    #[arg(long, value_name = "URI")]
    root_key: Option<String>,
}

pub fn run(cfg: &Config, args: InitArgs) -> Result<(), CliError> {
    // The store is checked before anything is made: a bad URL changes nothing.
    let store = args
        .snapshot_store
        .as_deref()
        .map(|u| StoreConfig::new(u, args.s3_endpoint.as_deref(), args.s3_region.as_deref()))
        .transpose()?;
    if let Some(store) = &store {
        super::archive_cmd::check_store(store, cfg.aws_profile.as_deref())?;
    }
    let passphrase = cfg
        .passphrase
        .file
        .as_deref()
        .map(passphrase_from_file)
        .transpose()?;
    let kind = match (args.root_key, passphrase) {
        (Some(_), Some(_)) => {
            return Err(CliError::bad(
                "--root-key",
                "give either --root-key or --passphrase-file, not both",
            ));
        }
        (Some(uri), None) => NewRoot::Pkcs11(uri),
        (None, Some(p)) => NewRoot::Passphrase(p),
        (None, None) => NewRoot::File,
    };
    let out = crate::kms::init::init_with(&cfg.data_dir, &cfg.region, kind, cfg.clock.now())?;
    if let Some(store) = &store {
        crate::snapshot::archive::save_config(&out.dir, store)?;
    }
    let root_key = out.config.root_key.describe(&out.dir);
    cfg.print(
        &InitResult {
            region: out.config.region.to_string(),
            account_id: out.config.account_id.to_string(),
            data_dir: cfg.data_dir.display().to_string(),
            root_key,
            created: out.created,
        },
        "Init",
    )
}
