//! `cryptvol init`: make the data dir and a region, or check an existing one.

use serde::Serialize;

use super::Config;
use super::args::passphrase_from_file;
use super::exit::CliError;
use crate::datadir::RootKeySource;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InitResult {
    region: String,
    account_id: String,
    data_dir: String,
    root_key: String,
    created: bool,
}

pub fn run(cfg: &Config) -> Result<(), CliError> {
    let passphrase = cfg
        .passphrase
        .file
        .as_deref()
        .map(passphrase_from_file)
        .transpose()?;
    let out = crate::kms::init::init(&cfg.data_dir, &cfg.region, passphrase, cfg.clock.now())?;
    let root_key = match &out.config.root_key {
        RootKeySource::File => format!("key file {}", out.dir.root_key_path().display()),
        RootKeySource::Passphrase { .. } => "passphrase (Argon2id)".to_string(),
    };
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
