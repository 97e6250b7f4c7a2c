//! `cryptvol inspect`: dump the readable structure of cryptvol files, never a secret.

use clap::Subcommand;
use serde::Serialize;

use super::Config;
use super::args::binary_value;
use super::exit::CliError;
use crate::kms::{KmsError, blob};

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Header of a KMS ciphertext blob (region, key, version), without decrypting it
    Blob {
        /// The blob: fileb://PATH or base64
        #[arg(long = "ciphertext-blob", value_name = "BLOB")]
        ciphertext_blob: String,
    },
    /// Keys, versions and aliases of the region's keystore, without key material
    Keystore,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BlobInfo {
    format_version: u8,
    region: String,
    key_id: String,
    key_version: u32,
    plaintext_length: usize,
    blob_length: usize,
}

pub fn run(cfg: &Config, cmd: InspectCommand) -> Result<(), CliError> {
    match cmd {
        InspectCommand::Blob { ciphertext_blob } => {
            let bytes = binary_value("--ciphertext-blob", &ciphertext_blob)?;
            let p = blob::parse(bytes.expose()).map_err(|e| KmsError::InvalidCiphertext {
                reason: e.to_string(),
            })?;
            cfg.print(
                &BlobInfo {
                    format_version: blob::FORMAT_V1,
                    region: p.header.region.to_string(),
                    key_id: p.header.key_id.to_string(),
                    key_version: p.header.key_version,
                    plaintext_length: p.plaintext_len(),
                    blob_length: bytes.len(),
                },
                "Blob",
            )
        }
        InspectCommand::Keystore => {
            let kms = cfg.kms()?;
            cfg.print(&kms.keystore_summary()?, "Keystore")
        }
    }
}
