//! `cryptvol inspect`: dump the readable structure of cryptvol files, never a secret.

use clap::Subcommand;
use serde::Serialize;

use super::Config;
use super::args::binary_value;
use super::exit::CliError;
use crate::aws::AwsError;
use crate::aws::b64;
use crate::daemon::catalog;
use crate::kms::blob;
use crate::volume::{KeySource, VolumeHeader};

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
    /// A volume's header: ids, lineage, size, chunk size, key ARN and wrapped data key
    Volume { volume: String },
    /// A snapshot's record and the source volume header it keeps
    Snapshot { snapshot: String },
}

fn header_json(h: &VolumeHeader) -> serde_json::Value {
    let (kind, arn, wrapped, endpoint) = match &h.key {
        KeySource::Kms {
            key_arn,
            wrapped,
            endpoint,
            ..
        } => (
            "kms",
            Some(key_arn.clone()),
            Some(b64::encode(wrapped)),
            endpoint.clone(),
        ),
        KeySource::Customer { .. } => ("customer-provided", None, None, None),
    };
    serde_json::json!({
        "FormatVersion": crate::volume::header::FORMAT_V3,
        "VolumeId": h.id.to_string(),
        "Lineage": h.lineage,
        "Region": h.region.to_string(),
        "Name": h.name,
        "SizeBytes": h.size,
        "ChunkSize": h.chunk_size(),
        "CreateTime": h.created,
        "KeySource": kind,
        "KmsKeyId": arn,
        "KmsEndpoint": endpoint,
        "WrappedDataKey": wrapped,
        "KeyCheck": crate::volume::key_check::has_check(h),
        "HeaderBytes": h.encode().len(),
    })
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
            let p = blob::parse(bytes.expose()).map_err(|e| AwsError::InvalidCiphertext {
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
        InspectCommand::Volume { volume } => {
            let region = cfg.region_dir();
            region.config()?;
            let h = catalog::open(&region)?.find(&volume, cfg.region.as_str())?;
            cfg.print(&header_json(&h), "Volume header")
        }
        InspectCommand::Snapshot { snapshot } => {
            let region = cfg.region_dir();
            region.config()?;
            let r = catalog::open(&region)?.snapshot(&snapshot, cfg.region.as_str())?;
            cfg.print(
                &serde_json::json!({
                    "FormatVersion": crate::snapshot::FORMAT_V1,
                    "SnapshotId": r.id.to_string(),
                    "Description": r.description,
                    "StartTime": r.created(),
                    "Volume": header_json(&r.volume),
                }),
                "Snapshot record",
            )
        }
    }
}
